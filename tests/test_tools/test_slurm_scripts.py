"""tools/slurm_train.sh and slurm_test.sh under a stand-in ``srun``, end to end on CPU.

The stand-in records its arguments and environment, then runs the wrapped
command as the one task of a one-node job would run: with the ``SLURM_*``
variables srun sets and no ``MASTER_ADDR``, so ``--launcher slurm`` finds
rank 0's host through ``scontrol show hostnames`` (a stand-in too) and trains
over gloo.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ditask_mm.datasets.synthetic import generate

from .cli_utils import REPO, dist_env, metrics, run, tiny_config, weights

FAKE_SRUN = '''#!{python}
"""Stand-in for srun: record argv and environment, then run the command as task 0 of 1."""
import json, os, sys

args = sys.argv[1:]
with open(os.environ['FAKE_SRUN_LOG'], 'a') as log:
    log.write(json.dumps(dict(argv=args, env=dict(os.environ))) + '\\n')
while args and args[0].startswith('-'):
    args = args[2:] if args[0] in ('-p', '-J', '-n', '-N', '-c') else args[1:]
if os.environ.get('FAKE_SRUN_DRY') == '1':
    sys.exit(0)
env = dict(os.environ, SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_LOCALID='0', SLURM_NODEID='0',
           SLURM_NNODES='1', SLURM_NODELIST='localhost', SLURM_JOB_NODELIST='localhost', SLURM_JOB_ID='1',
           SLURM_JOB_NAME=next((a.split('=', 1)[1] for a in sys.argv if a.startswith('--job-name=')), ''))
os.execvpe(args[0], args, env)
'''
FAKE_SCONTROL = '''#!/usr/bin/env bash
# stand-in for `scontrol show hostnames NODELIST`: one host per line
[[ "$1 $2" == "show hostnames" ]] || exit 1
echo "$3"
'''


@pytest.fixture(scope='module')
def slurm_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('slurm')
    data = root / 'PASCAL_MT'
    generate('pascal', str(data), num_train=6, num_val=5, size=(48, 64), seed=1)
    bin_dir = root / 'bin'
    bin_dir.mkdir()
    for name, text in (('srun', FAKE_SRUN.format(python=sys.executable)), ('scontrol', FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return root, bin_dir, tiny_config(root / 'tiny.py', data)


def slurm_env(bin_dir: Path, log: Path, **extra) -> dict:
    """The test's environment with the stand-ins first on PATH and no MASTER_ADDR (srun sets none)."""
    env = {k: v for k, v in os.environ.items() if k not in ('MASTER_ADDR', 'RANK', 'WORLD_SIZE', 'LOCAL_RANK')
           and not k.startswith('SLURM_')}
    port = str(int(dist_env()['PORT']) + 7)
    env.update(PATH=f'{bin_dir}{os.pathsep}{env.get("PATH", "")}', FAKE_SRUN_LOG=str(log), PYTHON=sys.executable,
               MASTER_PORT=port, **extra)
    return env


def srun_calls(log: Path) -> list:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def run_clean(args, env) -> subprocess.CompletedProcess:
    """Run with exactly ``env`` (cli_utils.run adds the caller's environment back)."""
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, cwd=REPO, env=env)


def test_srun_arguments_follow_mmseg_and_pass_srun_args_through(slurm_setup):
    root, bin_dir, config = slurm_setup
    log = root / 'dry.jsonl'
    env = slurm_env(bin_dir, log, FAKE_SRUN_DRY='1', GPUS='8', GPUS_PER_NODE='4', CPUS_PER_TASK='3',
                    SRUN_ARGS='--quotatype=auto --time=1:00:00')
    proc = run_clean(['bash', 'tools/slurm_train.sh', 'gpu_part', 'ditask_job', config, str(root / 'wd'),
                      '--cfg-options', 'train_cfg.max_epochs=1'], env)
    assert proc.returncode == 0, proc.stderr
    proc = run_clean(['bash', 'tools/slurm_test.sh', 'gpu_part', 'eval_job', config, str(root / 'c.pth'),
                      '--work-dir', str(root / 'ev')], env)
    assert proc.returncode == 0, proc.stderr
    train_call, test_call = srun_calls(log)
    for call, job in ((train_call, 'ditask_job'), (test_call, 'eval_job')):
        argv = call['argv']
        assert argv[:2] == ['-p', 'gpu_part']
        for option in (f'--job-name={job}', '--gres=gpu:4', '--ntasks=8', '--ntasks-per-node=4',
                       '--cpus-per-task=3', '--kill-on-bad-exit=1', '--quotatype=auto', '--time=1:00:00'):
            assert option in argv, (option, argv)
        command = argv[argv.index(sys.executable):]  # SRUN_ARGS come before the command, as srun options
        assert argv.index('--time=1:00:00') < argv.index(sys.executable)
        assert command[1] == '-u' and '--launcher' in command and command[command.index('--launcher') + 1] == 'slurm'
        assert str(REPO) in call['env']['PYTHONPATH'].split(os.pathsep)
    train_cmd = train_call['argv'][train_call['argv'].index(sys.executable):]
    assert train_cmd[2].endswith('tools/train.py') and train_cmd[3] == str(config)
    assert train_cmd[train_cmd.index('--work-dir') + 1] == str(root / 'wd')
    assert train_cmd[-2:] == ['--cfg-options', 'train_cfg.max_epochs=1']
    test_cmd = test_call['argv'][test_call['argv'].index(sys.executable):]
    assert test_cmd[2].endswith('tools/test.py') and test_cmd[3:5] == [str(config), str(root / 'c.pth')]
    assert test_cmd[-2:] == ['--work-dir', str(root / 'ev')]


def test_defaults_one_gpu_and_no_work_dir(slurm_setup):
    root, bin_dir, config = slurm_setup
    log = root / 'defaults.jsonl'
    env = slurm_env(bin_dir, log, FAKE_SRUN_DRY='1')
    assert run_clean(['bash', 'tools/slurm_train.sh', 'p', 'j', config], env).returncode == 0
    env['GPUS'] = '1'
    assert run_clean(['bash', 'tools/slurm_train.sh', 'p', 'j', config, '--amp'], env).returncode == 0
    four, one = srun_calls(log)
    assert {'--gres=gpu:4', '--ntasks=4', '--ntasks-per-node=4', '--cpus-per-task=5'} <= set(four['argv'])
    assert '--work-dir' not in four['argv']
    assert {'--gres=gpu:1', '--ntasks=1', '--ntasks-per-node=1'} <= set(one['argv'])
    assert one['argv'][-1] == '--amp' and '--work-dir' not in one['argv']  # an option is not a work dir


def test_slurm_scripts_train_and_evaluate_through_the_slurm_launcher(slurm_setup):
    root, bin_dir, config = slurm_setup
    log = root / 'real.jsonl'
    env = slurm_env(bin_dir, log, GPUS='1')
    work = root / 'train'
    proc = run_clean(['bash', 'tools/slurm_train.sh', 'cpu', 'tiny', config, str(work),
                      '--cfg-options', 'train_cfg.max_epochs=1'], env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'CPU distributed run: gloo, rank 0/1' in proc.stdout + proc.stderr  # the slurm launcher path, not 'none'
    ckpt = work / 'epoch_1.pth'
    assert ckpt.exists() and not (work / 'epoch_2.pth').exists()
    assert weights(ckpt)  # a complete checkpoint with a state dict
    proc = run_clean(['bash', 'tools/slurm_test.sh', 'cpu', 'tiny_eval', config, str(ckpt),
                      '--work-dir', str(root / 'eval')], env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'CPU distributed run: gloo, rank 0/1' in proc.stdout + proc.stderr
    slurm_metrics = metrics(root / 'eval')
    assert 'delta_m' in slurm_metrics and all(math.isfinite(v) for v in slurm_metrics.values())
    # the same checkpoint evaluated without any launcher scores the same
    run([sys.executable, 'tools/test.py', str(config), str(ckpt), '--work-dir', str(root / 'eval_plain')])
    plain = metrics(root / 'eval_plain')
    assert plain.keys() == slurm_metrics.keys()
    for key in plain:
        assert slurm_metrics[key] == pytest.approx(plain[key], rel=1e-5, abs=1e-6), key
    assert ['--job-name=tiny' in c['argv'] for c in srun_calls(log)] == [True, False]


@pytest.mark.parametrize('script,args', [('slurm_train.sh', ['p', 'j']), ('slurm_test.sh', ['p', 'j', 'cfg.py'])])
def test_missing_argument_prints_usage_and_fails(slurm_setup, script, args):
    root, bin_dir, _ = slurm_setup
    log = root / f'usage_{script}.jsonl'
    proc = run_clean(['bash', f'tools/{script}', *args], slurm_env(bin_dir, log, FAKE_SRUN_DRY='1'))
    assert proc.returncode != 0
    assert f'usage: tools/{script} PARTITION JOB_NAME CONFIG' in proc.stderr
    assert not srun_calls(log)  # srun never started
