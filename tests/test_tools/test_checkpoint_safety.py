"""Checkpoints survive failed writes; truncated files are named; --resume finds the last good one.

The failed write is simulated in the training process itself: a wrapper
around ``builtins.open`` lets the write of ``epoch_2.pth`` (under any name:
the final one, or a temporary one next to it) stop half-way with ``ENOSPC``,
as a full disk does. mmengine's own hook would by then have deleted
``epoch_1.pth`` (``max_keep_ckpts=1``) and left a truncated ``epoch_2.pth``.
"""
import errno
import sys

import pytest

from ditask_mm.datasets.synthetic import generate
from ditask_mm.engine import AtomicLocalBackend, atomic_write_bytes

from .cli_utils import QUICK, evaluate, run, scalars, tiny_config, train, weights

FULL_DISK_AT_EPOCH_2 = """
import builtins, errno, os, runpy, sys
real_open = builtins.open

class HalfWriter:
    def __init__(self, f):
        self.f = f
    def write(self, data):
        self.f.write(data[:len(data) // 2])
        self.f.flush()
        raise OSError(errno.ENOSPC, 'No space left on device')
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.f.close()
    def __getattr__(self, name):
        return getattr(self.f, name)

def failing_open(file, mode='r', *args, **kwargs):
    handle = real_open(file, mode, *args, **kwargs)
    if 'epoch_2.pth' in os.fspath(file) and ('w' in mode or 'x' in mode):
        return HalfWriter(handle)
    return handle

builtins.open = failing_open
sys.argv = ['tools/train.py', *sys.argv[1:]]
runpy.run_path('tools/train.py', run_name='__main__')
"""


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('ckpt_safety')
    data = root / 'PASCAL_MT'
    generate('pascal', str(data), num_train=6, num_val=3, size=(48, 64), seed=2)
    config = tiny_config(root / 'tiny.py', data,
                         extra='default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=1, save_best=None))\n')
    return root, config


def test_atomic_write_leaves_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    target = tmp_path / 'epoch_1.pth'
    target.write_bytes(b'good checkpoint')
    import builtins
    real_open = builtins.open

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[:3])
            raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(builtins, 'open', lambda f, mode='r', *a, **k: Full(real_open(f, mode, *a, **k))
                        if 'w' in mode or 'x' in mode else real_open(f, mode, *a, **k))
    with pytest.raises(OSError, match=r'could not write .*epoch_1\.pth \(11 bytes\): No space left') as err:
        AtomicLocalBackend().put(b'new content', target)
    assert err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert target.read_bytes() == b'good checkpoint'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['epoch_1.pth']  # no temporary file left behind
    atomic_write_bytes(b'new content', target)
    assert target.read_bytes() == b'new content'


def test_a_full_disk_during_a_save_keeps_the_last_checkpoint_and_resume_continues(setup):
    root, config = setup
    work = root / 'full_disk'
    proc = run([sys.executable, '-c', FULL_DISK_AT_EPOCH_2, config, '--work-dir', work], check=False)
    assert proc.returncode != 0 and 'No space left on device' in proc.stderr
    assert 'could not write' in proc.stderr and 'epoch_2.pth' in proc.stderr
    assert sorted(p.name for p in work.glob('*.pth')) == ['epoch_1.pth']  # not deleted, nothing half-written
    assert not [p for p in work.iterdir() if p.name.endswith('.tmp')]
    assert (work / 'last_checkpoint').read_text().strip().endswith('epoch_1.pth')
    assert weights(work / 'epoch_1.pth')  # complete and readable
    resumed = train(config, work, '--resume')
    assert 'resumed epoch: 1' in resumed.stdout + resumed.stderr
    assert (work / 'epoch_3.pth').exists() and not (work / 'epoch_1.pth').exists()  # max_keep_ckpts=1, after


def test_truncated_checkpoints_are_named_on_every_path_and_resume_falls_back(setup):
    root, config = setup
    work = root / 'truncated'
    train(config, work, '--cfg-options', 'train_cfg.max_epochs=2', 'default_hooks.checkpoint.max_keep_ckpts=2')
    good, newest = work / 'epoch_1.pth', work / 'epoch_2.pth'
    data = newest.read_bytes()
    newest.write_bytes(data[:len(data) // 3])  # cut off, as by a crash that bypassed the atomic write
    expected = f'checkpoint {newest} cannot be read: it is truncated'
    proc = evaluate(config, newest, root / 'test_truncated', check=False)
    assert proc.returncode != 0 and expected in proc.stderr
    proc = train(config, root / 'explicit', '--resume', newest, check=False)
    assert proc.returncode != 0 and expected in proc.stderr
    proc = train(config, root / 'load_from', '--cfg-options', f'load_from={newest}', check=False)
    assert proc.returncode != 0 and expected in proc.stderr and 'epoch_1.pth' in proc.stderr  # names the others
    # auto-resume: last_checkpoint names the truncated file; the previous good one is taken, with a warning
    assert (work / 'last_checkpoint').read_text().strip().endswith('epoch_2.pth')
    proc = train(config, work, '--resume', '--cfg-options', 'train_cfg.max_epochs=2')
    log = proc.stdout + proc.stderr
    assert f'resuming from the previous good one, {good}' in log and 'resumed epoch: 1' in log
    assert weights(newest)  # epoch 2 written again, complete


def test_resume_without_a_checkpoint_warns_and_a_shorter_run_keeps_its_whole_schedule(tmp_path):
    data = tmp_path / 'PASCAL_MT'
    generate('pascal', str(data), num_train=16, num_val=2, size=(48, 64), seed=3)
    # the quick config's schedule: 1 warm-up epoch from 1e-2 x LR, cosine to 1e-2 x LR at epoch 8
    config = tiny_config(tmp_path / 'tiny.py', data, extra="""
max_epochs = 8
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min_ratio=1e-2, by_epoch=True, begin=1, end=max_epochs,
         T_max=max_epochs - 1, convert_to_iter_based=True)]
train_cfg = dict(max_epochs=max_epochs, val_interval=100)
""")
    work = tmp_path / 'work'
    proc = train(config, work, '--resume', '--cfg-options', 'train_cfg.max_epochs=2')
    log = proc.stdout + proc.stderr
    assert f'--resume: no checkpoint to resume from in {work}' in log and 'WARNING' in log
    assert 'Auto resumed from the latest checkpoint None' not in log
    lrs = [r['lr'] for r in scalars(work) if 'lr' in r]
    base = 1e-3  # the quick config's AdamW LR
    assert len(lrs) == 16  # 16 images, batch 2, two epochs
    assert lrs[0] < 0.1 * base  # the run still warms up ...
    assert max(lrs) == pytest.approx(base, rel=0.05)  # ... to the full LR ...
    assert lrs[-1] < 0.2 * base  # ... and ends decayed, not inside the warm-up


def test_the_quick_config_saves_every_epoch():
    from mmengine.config import Config
    hook = Config.fromfile(str(QUICK)).default_hooks.checkpoint
    assert hook.type == 'AtomicCheckpointHook' and hook.interval == 1 and hook.max_keep_ckpts >= 2
