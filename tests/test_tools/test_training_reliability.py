"""tools/train.py, test.py and dist_*.sh end to end: DDP on CPU, resume after SIGKILL, bad input, NaN.

Every test trains a tiny DiTASK Swin on a generated PASCAL_MT tree, through
the real command-line tools, in subprocesses.
"""
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch

from ditask_mm.datasets.synthetic import generate

from .cli_utils import REPO, dist_env, metrics, run, scalars, tiny_config, train, weights


@pytest.fixture(scope='module')
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('reliability')
    data = root / 'PASCAL_MT'
    generate('pascal', str(data), num_train=6, num_val=5, size=(48, 64), seed=1)
    return root, tiny_config(root / 'tiny.py', data)


def test_resume_after_sigkill_matches_an_uninterrupted_run(tiny_setup):
    root, config = tiny_setup
    train(config, root / 'full')
    killed = root / 'killed'
    proc = subprocess.Popen([sys.executable, 'tools/train.py', str(config), '--work-dir', str(killed)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    marker = killed / 'last_checkpoint'  # mmengine writes it once epoch_1.pth is complete
    while not (marker.exists() and marker.read_text().strip().endswith('epoch_1.pth')):
        assert proc.poll() is None and time.time() < deadline, 'training ended before the first checkpoint'
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # during epoch 2
    proc.wait()
    assert not (killed / 'epoch_3.pth').exists()
    train(config, killed, '--resume')
    full, resumed = weights(root / 'full/epoch_3.pth'), weights(killed / 'epoch_3.pth')
    assert full.keys() == resumed.keys()
    different = [k for k in full if not torch.equal(full[k], resumed[k])]
    assert not different, f'{len(different)} tensors differ, e.g. {different[:3]}'


def test_two_process_gloo_training_and_evaluation_match_single_process(tiny_setup):
    root, config = tiny_setup
    work = root / 'ddp'
    env = dist_env()
    run(['bash', 'tools/dist_train.sh', str(config), '2', '--work-dir', str(work),
         '--cfg-options', 'train_cfg.max_epochs=1'], env=env)
    ckpt = work / 'epoch_1.pth'
    assert ckpt.exists()
    run([sys.executable, 'tools/test.py', str(config), str(ckpt), '--work-dir', str(root / 'test1'),
         '--out', str(root / 'test1/predictions.pkl'), '--show-dir', str(root / 'test1/panels')])
    # the validation that ran inside the 2-process training scored the model it saved: every rank had rank 0's
    # BatchNorm statistics (BroadcastBuffersHook), not statistics of its own shard
    validated = [r for r in scalars(work) if 'delta_m' in r][-1]
    tested = metrics(root / 'test1')
    for key in tested:
        assert validated[key] == pytest.approx(tested[key], rel=1e-5, abs=1e-6), key
    dumped = pickle.loads((root / 'test1/predictions.pkl').read_bytes())
    assert len(dumped) == 5 and 'pred_normals' in dumped[0] and 'gt_sem_seg' in dumped[0]  # --out with our evaluator
    assert len(list((root / 'test1/panels').glob('*_panel.png'))) == 5
    run(['bash', 'tools/dist_test.sh', str(config), str(ckpt), '2', '--work-dir', str(root / 'test2')], env=env)
    single, double = tested, metrics(root / 'test2')
    assert single.keys() == double.keys() and 'delta_m' in single
    for key in single:  # 5 val images on 2 ranks: rank 1's padded duplicate must be dropped
        assert single[key] == pytest.approx(double[key], rel=1e-5, abs=1e-6), key


def test_bad_inputs_fail_fast_with_a_message(tiny_setup):
    root, config = tiny_setup
    proc = train(config, root / 'bad1', '--cfg-options', "model.tasks=['semseg','segmentation']", check=False)
    assert proc.returncode != 0 and "unknown task(s) ['segmentation']" in proc.stderr
    proc = train(config, root / 'bad2', '--cfg-options', 'train_dataloader.dataset.data_root=/nonexistent/PASCAL_MT',
                 check=False)
    assert proc.returncode != 0 and '/nonexistent/PASCAL_MT' in proc.stderr
    # a checkpoint of another architecture
    other = root / 'other.pth'
    torch.save({'state_dict': {'backbone.patch_embed.projection.weight': torch.zeros(8, 3, 4, 4)}}, other)
    proc = run([sys.executable, 'tools/test.py', str(config), str(other), '--work-dir', str(root / 'bad3')],
               check=False)
    assert proc.returncode != 0 and 'does not fit the model' in proc.stderr and 'other.pth' in proc.stderr


def test_nan_loss_stops_training_without_writing_a_checkpoint(tiny_setup):
    root, config = tiny_setup
    work = root / 'nan'
    proc = train(config, work, '--cfg-options', 'model.loss_decode.semseg.loss_weight=nan', check=False)
    assert proc.returncode != 0 and 'non-finite values at iteration 1' in proc.stderr
    assert not list(work.glob('*.pth'))
