"""What a user sees through tools/train.py: AMP without CUDA, the NaN guard, a corrupt image, --launcher slurm.

The training tests run ``tools/train.py`` in subprocesses on a tiny DiTASK
Swin (``cli_utils.TINY``) and a generated
PASCAL_MT tree of 2 training images: one iteration per epoch, one epoch.
"""
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import types

import pytest
import torch
from mmengine.config import Config

import ditask_mm.engine.amp as amp
from ditask_mm.datasets.synthetic import generate
from ditask_mm.engine import NaNLossGuardHook, NonFiniteLossError, launcher_env, resolve_amp

from .cli_utils import REPO, tiny_config

# one iteration per epoch, one epoch, a constant LR, no validation
SHORT = """
max_epochs = 1
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=True, begin=0, end=max_epochs)]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=10)
default_hooks = dict(checkpoint=dict(max_keep_ckpts=1))
"""
# what the paper configs set (configs/_base_/schedules/schedule_300e.py)
TINY_AMP = """
_base_ = ['./tiny.py']
optim_wrapper = dict(_delete_=True, type='AmpOptimWrapper', loss_scale='dynamic',
                     optimizer=dict(type='AdamW', lr=1e-3), clip_grad=dict(max_norm=5.0))
"""
AMP_WARNING = 'AMP (mixed precision) needs CUDA and no CUDA device is available'
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason='the fp32 fallback is for machines without CUDA')


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('user_errors')
    tree = generate('pascal', str(root / 'PASCAL_MT'), num_train=2, num_val=2, size=(48, 64), seed=1)
    tiny_config(root / 'tiny.py', tree.root, extra=SHORT)
    (root / 'tiny_amp.py').write_text(TINY_AMP)
    return root, tree


def run(args, env=None, timeout=300):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(('SLURM_', 'OMPI_', 'MASTER_'))}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**environ, **(env or {})})


def train(config, work_dir, *extra):
    return run([sys.executable, 'tools/train.py', str(config), '--work-dir', str(work_dir), *extra])


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


# ---------------------------------------------------------------- 6a: AMP
@no_cuda
@pytest.mark.parametrize('flag', [[], ['--amp']], ids=['config-amp', 'config-amp+flag'])
def test_amp_config_trains_in_fp32_without_cuda_with_one_warning(setup, flag):
    root, _ = setup
    work = root / ('amp' + '-flag' * bool(flag))
    output = ok(train(root / 'tiny_amp.py', work, *flag))
    lines = [line for line in output.splitlines() if AMP_WARNING in line]
    assert len(lines) == 1 and 'WARNING' in lines[0], lines
    assert 'training runs in fp32 with OptimWrapper' in lines[0]
    source = "--amp and by the config (optim_wrapper.type='AmpOptimWrapper')" if flag else \
        "requested by the config (optim_wrapper.type='AmpOptimWrapper')"
    assert f"{source}; dropped the AMP-only setting(s) ['loss_scale']." in lines[0]
    assert 'drop --amp' not in output
    assert (work / 'epoch_1.pth').is_file()


def test_optim_wrapper_override_drops_amp_only_keys(setup):
    root, _ = setup
    work = root / 'override'
    output = ok(train(root / 'tiny_amp.py', work, '--cfg-options', 'optim_wrapper.type=OptimWrapper'))
    assert "optim_wrapper.type is 'OptimWrapper', not AmpOptimWrapper: dropped the AMP-only setting(s) " \
           "['loss_scale']" in output
    assert AMP_WARNING not in output and (work / 'epoch_1.pth').is_file()


def test_resolve_amp_keeps_the_optimizer_settings(monkeypatch):
    messages = []
    monkeypatch.setattr(amp, 'print_log', lambda msg, **kw: messages.append((msg, kw.get('level'))))
    paper = dict(type='AmpOptimWrapper', loss_scale='dynamic', dtype='float16', use_fsdp=False,
                 optimizer=dict(type='AdamW', lr=5e-4), paramwise_cfg=dict(norm_decay_mult=0.0),
                 clip_grad=dict(max_norm=5.0), accumulative_counts=2)
    cfg = resolve_amp(Config(dict(optim_wrapper=dict(paper))), amp_requested=False, cuda_available=False)
    assert cfg.optim_wrapper.to_dict() == dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=5e-4),
                                               paramwise_cfg=dict(norm_decay_mult=0.0),
                                               clip_grad=dict(max_norm=5.0), accumulative_counts=2)
    assert len(messages) == 1 and messages[0][1] == 30  # logging.WARNING
    assert "dropped the AMP-only setting(s) ['loss_scale', 'dtype', 'use_fsdp']." in messages[0][0]
    messages.clear()
    plain = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1))
    cfg = resolve_amp(Config(dict(optim_wrapper=dict(plain))), amp_requested=True, cuda_available=False)
    assert cfg.optim_wrapper.to_dict() == plain and len(messages) == 1
    assert messages[0][0].endswith('instead. AMP was requested by --amp.')
    messages.clear()
    cfg = resolve_amp(Config(dict(optim_wrapper=dict(plain))), amp_requested=True, cuda_available=True)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.loss_scale == 'dynamic'
    cfg = resolve_amp(Config(dict(optim_wrapper=dict(paper))), amp_requested=False, cuda_available=True)
    assert cfg.optim_wrapper.to_dict() == paper and not messages  # CUDA: the paper config is left alone


# ---------------------------------------------------------------- 6b: NaN guard
def test_nan_guard_says_when_no_checkpoint_exists(setup):
    root, _ = setup
    work = root / 'nan'
    proc = train(root / 'tiny.py', work, '--cfg-options', 'model.loss_decode.semseg.loss_weight=nan')
    assert proc.returncode != 0 and 'non-finite values at iteration 1' in proc.stderr
    assert f'no checkpoint has been written yet in {work}' in proc.stderr
    assert 'last good' not in proc.stderr and not list(work.glob('*.pth'))


def nan_error(work_dir):
    runner = types.SimpleNamespace(work_dir=str(work_dir), iter=7, epoch=2, model=torch.nn.Linear(1, 1))
    with pytest.raises(NonFiniteLossError) as info:
        NaNLossGuardHook().after_train_iter(runner, 7, outputs={'loss': torch.tensor(float('nan'))})
    return str(info.value)


def test_nan_guard_names_the_last_good_checkpoint(tmp_path):
    older, newer = tmp_path / 'epoch_2.pth', tmp_path / 'epoch_3.pth'
    older.write_bytes(b'x')
    newer.write_bytes(b'x')
    os.utime(older, (1_000_000, 1_000_000))
    (tmp_path / 'last_checkpoint').write_text(str(older))  # mmengine's record wins over mtimes
    message = nan_error(tmp_path)
    assert 'non-finite values at iteration 8 (epoch 3)' in message
    assert f'the last good checkpoint is {older} (named by {tmp_path / "last_checkpoint"})' in message
    assert f'--resume {older}' in message
    older.unlink()  # a stale record: fall back to the newest .pth, and say so
    message = nan_error(tmp_path)
    assert f'the last good checkpoint is {newer}' in message and 'which does not exist' in message
    newer.unlink()
    (tmp_path / 'last_checkpoint').unlink()
    assert f'no checkpoint has been written yet in {tmp_path}' in nan_error(tmp_path)


# ---------------------------------------------------------------- 7b: a corrupt image
def test_corrupt_image_stops_training_naming_file_and_index(setup, tmp_path):
    root, tree = setup
    data = tmp_path / 'PASCAL_MT'
    shutil.copytree(tree.root, data)
    img_id = tree.splits['train'][1]
    image = data / 'JPEGImages' / f'{img_id}.jpg'
    image.write_bytes(b'\xff\xd8 garbage, not a JPEG' * 8)
    proc = train(root / 'tiny.py', tmp_path / 'work', '--cfg-options', f'train_dataloader.dataset.data_root={data}')
    assert proc.returncode != 0
    assert 'CorruptImageError' in proc.stderr and f'{image}: image at index 1' in proc.stderr
    assert "of split 'train'" in proc.stderr and 're-extract it from the dataset archive' in proc.stderr


# ---------------------------------------------------------------- 7c: --launcher slurm / mpi
@pytest.mark.skipif(torch.cuda.is_available(), reason='with CUDA, mmengine sets up the slurm group itself')
def test_slurm_launcher_outside_srun_talks_about_slurm(setup):
    root, _ = setup
    proc = train(root / 'tiny.py', root / 'slurm', '--launcher', 'slurm')
    assert proc.returncode != 0
    assert '--launcher slurm must run under srun' in proc.stderr and 'SLURM_PROCID' in proc.stderr
    assert '--launcher pytorch' not in proc.stderr


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason='setup_cpu_distributed does nothing with CUDA')
def test_fake_slurm_environment_initialises_a_gloo_group():
    script = textwrap.dedent("""
        import os
        import torch.distributed as dist
        from mmengine.config import Config
        from ditask_mm.engine import setup_cpu_distributed, shutdown_distributed
        cfg = Config(dict(launcher='slurm', model=dict(backbone=dict(norm_cfg=dict(type='SyncBN')))))
        assert setup_cpu_distributed(cfg)
        assert (dist.get_backend(), dist.get_rank(), dist.get_world_size()) == ('gloo', 0, 1)
        assert (os.environ['RANK'], os.environ['WORLD_SIZE'], os.environ['LOCAL_RANK']) == ('0', '1', '0')
        assert cfg.model.backbone.norm_cfg.type == 'BN' and cfg.model_wrapper_cfg.device_ids is None
        shutdown_distributed()
        assert not dist.is_initialized()
        print('gloo ok')
    """)
    env = dict(SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_LOCALID='0', MASTER_ADDR='127.0.0.1',
               MASTER_PORT=str(free_port()))
    proc = run([sys.executable, '-c', script], env=env)
    assert proc.returncode == 0 and 'gloo ok' in proc.stdout, proc.stderr[-3000:]


def test_launcher_env_of_slurm_and_mpi(tmp_path, monkeypatch):
    scontrol = tmp_path / 'scontrol'
    scontrol.write_text('#!/bin/sh\n[ "$3" = "node[07-08]" ] && printf "node07\\nnode08\\n"\n')
    scontrol.chmod(0o755)
    slurm = dict(SLURM_PROCID='3', SLURM_NTASKS='4', SLURM_LOCALID='1', SLURM_NODELIST='node[07-08]')
    monkeypatch.setenv('PATH', f'{tmp_path}{os.pathsep}{os.environ["PATH"]}')
    assert launcher_env('slurm', slurm) == dict(RANK='3', WORLD_SIZE='4', LOCAL_RANK='1', MASTER_ADDR='node07',
                                                MASTER_PORT='29500')
    monkeypatch.setenv('PATH', str(tmp_path / 'empty'))  # no scontrol: say to set MASTER_ADDR
    with pytest.raises(RuntimeError, match='set MASTER_ADDR'):
        launcher_env('slurm', slurm)
    with pytest.raises(RuntimeError, match='--launcher mpi must run under') as info:
        launcher_env('mpi', dict(OMPI_COMM_WORLD_RANK='0'))
    assert 'OMPI_COMM_WORLD_SIZE' in str(info.value) and 'MASTER_ADDR' in str(info.value)
    mpi = dict(OMPI_COMM_WORLD_RANK='1', OMPI_COMM_WORLD_SIZE='2', OMPI_COMM_WORLD_LOCAL_RANK='1',
               MASTER_ADDR='10.0.0.1', MASTER_PORT='1234')
    assert launcher_env('mpi', mpi) == dict(RANK='1', WORLD_SIZE='2', LOCAL_RANK='1', MASTER_ADDR='10.0.0.1',
                                            MASTER_PORT='1234')
