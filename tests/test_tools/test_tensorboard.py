"""TensorBoard through mmengine's vis backends: the config line, ``--cfg-options`` and bad names.

Each end-to-end test trains the tiny DiTASK Swin for one epoch (3 iterations,
a log line each) and reads the TensorBoard event file back.
"""
import importlib.util
import math
from pathlib import Path

import pytest
from mmengine.config import Config

from ditask_mm.datasets.synthetic import generate
from ditask_mm.engine.config_loading import load_run_config
from ditask_mm.engine.vis_backends import normalize_vis_backends

from .cli_utils import QUICK, REPO, scalars, tiny_config, train

event_accumulator = pytest.importorskip('tensorboard.backend.event_processing.event_accumulator')

LOCAL_AND_TENSORBOARD = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
ONE_EPOCH = ('--cfg-options', 'train_cfg.max_epochs=1')
#: 6 training images, batch size 2, a log line every iteration
LOGGED_ITERATIONS = 3


@pytest.fixture(scope='module')
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('tensorboard')
    data = root / 'PASCAL_MT'
    generate('pascal', str(data), num_train=6, num_val=5, size=(48, 64), seed=1)
    return root, data, tiny_config(root / 'tiny.py', data)


def read_loss_events(work_dir: Path):
    """The ``loss`` scalars of the single TensorBoard event file under ``work_dir/<timestamp>/vis_data``."""
    events = sorted(work_dir.glob('*/vis_data/events.out.tfevents.*'))
    assert len(events) == 1, f'expected one event file under {work_dir}/*/vis_data, found {events}'
    accumulator = event_accumulator.EventAccumulator(str(events[0]))
    accumulator.Reload()
    assert 'loss' in accumulator.Tags()['scalars'], accumulator.Tags()['scalars']
    return accumulator.Scalars('loss')


def assert_tensorboard_matches_the_log(work_dir: Path) -> None:
    loss = read_loss_events(work_dir)
    logged = [r for r in scalars(work_dir) if 'loss' in r]  # LocalVisBackend's record of the same run
    assert len(loss) == len(logged) == LOGGED_ITERATIONS
    assert [e.step for e in loss] == [r['step'] for r in logged]
    for event, record in zip(loss, logged):
        assert math.isfinite(event.value) and event.value == pytest.approx(record['loss'], rel=1e-4)


def test_config_line_turns_tensorboard_on(tiny_setup):
    root, data, _ = tiny_setup
    # the documented line of configs/_base_/default_runtime.py, in a child config: only the top-level name
    config = tiny_config(root / 'tiny_tb.py', data, extra=f'vis_backends = {LOCAL_AND_TENSORBOARD!r}\n')
    work = root / 'config_line'
    train(config, work, *ONE_EPOCH)
    assert_tensorboard_matches_the_log(work)


@pytest.mark.parametrize('option', [
    "visualizer.vis_backends=[dict(type='LocalVisBackend'),dict(type='TensorboardVisBackend')]",
    'vis_backends=local,tensorboard'])
def test_cfg_options_turn_tensorboard_on(tiny_setup, option):
    root, _, config = tiny_setup
    work = root / ('full' if option.startswith('visualizer') else 'short')
    train(config, work, *ONE_EPOCH, option)
    assert_tensorboard_matches_the_log(work)


def test_bad_backend_name_fails_before_training_with_the_names_that_work(tiny_setup):
    root, _, config = tiny_setup
    work = root / 'bad'
    proc = train(config, work, '--cfg-options', 'vis_backends=local,tensorbord', check=False)
    assert proc.returncode != 0
    assert "vis_backends: unknown visualization backend 'tensorbord'" in proc.stderr
    assert 'tensorboard' in proc.stderr.split('tensorbord', 1)[1]  # the names that work are listed
    assert not list(work.glob('*.pth'))


@pytest.mark.parametrize('value,expected', [
    ('tensorboard', [dict(type='TensorboardVisBackend')]),
    (['local', 'tensorboard'], LOCAL_AND_TENSORBOARD),
    (["dict(type='LocalVisBackend')", "dict(type='TensorboardVisBackend', save_dir=None)"],
     [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend', save_dir=None)]),
    (['{"type": "LocalVisBackend"}'], [dict(type='LocalVisBackend')]),
    (LOCAL_AND_TENSORBOARD, LOCAL_AND_TENSORBOARD),
    ([], [])])
def test_every_spelling_becomes_a_list_of_dicts(value, expected):
    assert normalize_vis_backends(value) == expected


@pytest.mark.parametrize('value,message', [
    ('TensorBoardBackend', "unknown visualization backend 'TensorBoardBackend'"),
    (["dict(type=TensorboardVisBackend)"], 'cannot read'),  # a name, not a string: not a literal
    ([3], 'is not a backend')])
def test_bad_backends_are_named(value, message):
    with pytest.raises(ValueError, match='vis_backends: ') as error:
        normalize_vis_backends(value)
    assert message in str(error.value)


def test_missing_tensorboard_package_says_how_to_install_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'tensorboard' else real(name, *a))
    with pytest.raises(ImportError, match='requirements/optional.txt'):
        normalize_vis_backends('tensorboard')


def test_top_level_name_and_visualizer_stay_in_step(tmp_path):
    base = Config.fromfile(str(QUICK))
    assert base.visualizer.vis_backends == [dict(type='LocalVisBackend')]
    for options in (['vis_backends=tensorboard'], ["visualizer.vis_backends=[dict(type='TensorboardVisBackend')]"]):
        cfg = load_run_config(str(QUICK), options)
        assert cfg.visualizer.vis_backends == cfg.vis_backends == [dict(type='TensorboardVisBackend')], options
    # a child config that sets the visualizer's own list keeps it (the top-level name still has the default)
    child = tmp_path / 'child.py'
    child.write_text(f"_base_ = ['{QUICK}']\nvisualizer = dict(vis_backends={LOCAL_AND_TENSORBOARD!r})\n")
    cfg = load_run_config(str(child))
    assert cfg.visualizer.vis_backends == cfg.vis_backends == LOCAL_AND_TENSORBOARD
    # no change anywhere: the default
    assert load_run_config(str(QUICK)).visualizer.vis_backends == [dict(type='LocalVisBackend')]


def test_the_documented_config_line_is_valid():
    lines = (REPO / 'configs/_base_/default_runtime.py').read_text().splitlines()
    documented = [line[2:] for line in lines if line.startswith('# vis_backends = ')]
    assert len(documented) == 1, 'default_runtime.py documents one vis_backends line'
    namespace = {}
    exec(documented[0], namespace)  # the line a user uncomments or copies into a config
    assert normalize_vis_backends(namespace['vis_backends']) == LOCAL_AND_TENSORBOARD
