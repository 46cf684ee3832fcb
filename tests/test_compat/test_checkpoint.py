"""Loading mmengine-written checkpoints under torch >= 2.6."""
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import checkpoint as mmengine_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader

import ditask_mm  # noqa: F401
from ditask_mm.compat import checkpoint as ckpt_patch


def write_mmengine_style_checkpoint(path):
    """The globals CheckpointHook pickles: HistoryBuffer and numpy arrays."""
    buf = HistoryBuffer()
    buf.update(0.5)
    torch.save({'meta': {'iter': 3, 'seed': np.int64(0)},
                'state_dict': {'w': torch.ones(2)},
                'message_hub': {'log_scalars': {'loss': buf}, 'arr': np.arange(3.)}}, path)


@pytest.mark.skipif(not ckpt_patch._needs_patch(), reason='torch < 2.6 loads these files already')
def test_unpatched_mmengine_loader_fails_and_patched_one_loads(tmp_path):
    path = str(tmp_path / 'iter_3.pth')
    write_mmengine_style_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
        mmengine_checkpoint.load_from_local(path, map_location='cpu')
    ckpt = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    assert ckpt['meta']['iter'] == 3
    assert torch.equal(ckpt['state_dict']['w'], torch.ones(2))
    assert ckpt['message_hub']['log_scalars']['loss'].current() == 0.5
    # the public helper used by resume and tools/test.py goes through it too
    assert mmengine_checkpoint._load_checkpoint(path, map_location='cpu')['meta']['iter'] == 3


def test_patch_is_local_only_and_idempotent():
    assert ckpt_patch.is_active()
    assert ckpt_patch.apply() == 'active'
    assert CheckpointLoader._get_checkpoint_loader('/some/local.pth') is ckpt_patch.load_local_checkpoint
    assert CheckpointLoader._get_checkpoint_loader('https://x/y.pth') is mmengine_checkpoint.load_from_http


def test_missing_file_names_the_file(tmp_path):
    missing = str(tmp_path / 'nope.pth')
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        CheckpointLoader.load_checkpoint(missing)
