"""Schedules stretched to a --cfg-options run length, and fractional epoch bounds rounded to iterations."""
import pytest
from mmengine.config import Config

from ditask_mm.engine.config_loading import load_run_config
from ditask_mm.engine.schedule import stretch_schedulers, whole_iteration_schedule

from .cli_utils import QUICK as QUICK_CONFIG

WARMUP_COSINE = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=20, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min_ratio=1e-2, by_epoch=True, begin=20, end=300, T_max=280,
         convert_to_iter_based=True)]


def test_stretching_keeps_the_shape_and_ends_at_the_new_length():
    warmup, cosine = stretch_schedulers(WARMUP_COSINE, 100 / 300, by_epoch=True)
    assert (warmup['begin'], warmup['end']) == (0, pytest.approx(20 / 3))
    assert (cosine['begin'], cosine['end']) == (pytest.approx(20 / 3), 100)
    assert 'T_max' not in cosine  # it was end - begin: mmengine derives it from the whole-iteration bounds
    assert WARMUP_COSINE[1]['T_max'] == 280  # the config's list is not changed
    iteration_based = [dict(type='PolyLR', by_epoch=False, begin=0, end=1000)]
    assert stretch_schedulers(iteration_based, 0.5, by_epoch=True) == iteration_based  # other unit: untouched
    with pytest.raises(ValueError, match='leaves it empty'):  # whole epochs only, and [0.2, 0.3) rounds to [0, 0)
        stretch_schedulers([dict(type='StepLR', by_epoch=True, begin=2, end=3)], 0.1, by_epoch=True)


def test_fractional_bounds_become_whole_iterations_and_a_too_short_warmup_is_dropped():
    warmup, cosine = stretch_schedulers(WARMUP_COSINE, 1 / 300, by_epoch=True)
    assert whole_iteration_schedule([warmup, cosine], 1000) == [
        dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=67),
        dict(type='CosineAnnealingLR', eta_min_ratio=1e-2, by_epoch=False, begin=67, end=1000)]
    kept = whole_iteration_schedule([warmup, cosine], 12)  # a warm-up of one iteration never raises the LR
    assert [s['type'] for s in kept] == ['CosineAnnealingLR'] and kept[0]['begin'] == 1
    assert whole_iteration_schedule(WARMUP_COSINE, 12) == WARMUP_COSINE  # whole epochs: mmengine converts them


def test_load_run_config_stretches_only_when_the_run_length_changes():
    paper = 'configs/ditask/swin-t_pascal-mtl.py'
    assert load_run_config(paper).param_scheduler == Config.fromfile(paper).param_scheduler
    assert load_run_config(paper, ['train_cfg.max_epochs=300']).param_scheduler[1]['end'] == 300
    short = load_run_config(paper, ['train_cfg.max_epochs=30'])
    assert [s['end'] for s in short.param_scheduler] == [2, 30]
    assert load_run_config(paper, ['max_epochs=30']).train_cfg.max_epochs == 30
    own = load_run_config(paper, ['train_cfg.max_epochs=30', 'param_scheduler.0.end=5'])
    assert own.param_scheduler[1]['end'] == 300  # the user set the schedule: left alone


def test_cfg_options_data_root_reaches_every_dataloader(tmp_path):
    """``--cfg-options data_root=DIR`` moves every dataset that read the file's data_root, not only the name."""
    cfg = load_run_config(str(QUICK_CONFIG), ['data_root=/datasets/PASCAL_MT'], work_dir=str(tmp_path))
    roots = {name: cfg[name].dataset.data_root for name in ('train_dataloader', 'val_dataloader', 'test_dataloader')}
    assert roots == dict.fromkeys(roots, '/datasets/PASCAL_MT')
    # a dataloader's own data_root wins over the top-level one
    cfg = load_run_config(str(QUICK_CONFIG), ['data_root=/datasets/PASCAL_MT',
                                              'val_dataloader.dataset.data_root=/elsewhere'], work_dir=str(tmp_path))
    assert cfg.train_dataloader.dataset.data_root == '/datasets/PASCAL_MT'
    assert cfg.val_dataloader.dataset.data_root == '/elsewhere'
    assert cfg.test_dataloader.dataset.data_root == '/datasets/PASCAL_MT'
