"""resolve_tasks: one task list for the model, the datasets and the evaluators, or a clear error."""
import copy
from pathlib import Path

import pytest
from mmengine.config import Config

from ditask_mm.engine import resolve_tasks
from ditask_mm.engine.config_loading import load_run_config

REPO = Path(__file__).resolve().parents[1]
PAPER = str(REPO / 'configs/ditask/swin-t_pascal-mtl.py')
NYUD = str(REPO / 'configs/ditask/swin-t_nyud-mtl.py')
PASCAL_TASKS = ['semseg', 'human_parts', 'sal', 'normals']


def minimal(**top):
    """A config with every kind of site: the model, plain and wrapped datasets, a dict and a list of metrics."""
    dataset = dict(type='PascalContextMTLDataset', data_root='data/PASCAL_MT')
    return Config(dict(
        model=dict(type='MultiTaskSegmentor'),
        train_dataloader=dict(dataset=dict(type='RepeatDataset', times=2, dataset=copy.deepcopy(dataset))),
        val_dataloader=dict(dataset=dict(type='ConcatDataset', datasets=[copy.deepcopy(dataset),
                                                                         copy.deepcopy(dataset)])),
        test_dataloader=dict(dataset=copy.deepcopy(dataset)),
        val_evaluator=dict(type='MultiTaskMetric'),
        test_evaluator=[dict(type='MultiTaskMetric'), dict(type='mmseg.IoUMetric')],
        **top))


def test_top_level_tasks_fill_every_site_that_takes_them_and_nothing_else():
    cfg = resolve_tasks(minimal(tasks=['semseg', 'sal']))
    expected = ['semseg', 'sal']
    assert cfg.model.tasks == expected
    assert cfg.train_dataloader.dataset.dataset.tasks == expected  # inside the wrapper
    assert 'tasks' not in cfg.train_dataloader.dataset  # RepeatDataset takes none
    assert [d.tasks for d in cfg.val_dataloader.dataset.datasets] == [expected, expected]
    assert 'tasks' not in cfg.val_dataloader.dataset
    assert cfg.test_dataloader.dataset.tasks == expected
    assert cfg.val_evaluator.tasks == expected
    assert cfg.test_evaluator[0].tasks == expected and 'tasks' not in cfg.test_evaluator[1]  # IoUMetric: none
    # a copy each: changing one list later does not change the others
    cfg.model.tasks.append('normals')
    assert cfg.val_evaluator.tasks == expected


def test_resolving_twice_changes_nothing():
    once = resolve_tasks(minimal(tasks=['semseg', 'sal']))
    snapshot = copy.deepcopy(once.to_dict())
    assert resolve_tasks(once).to_dict() == snapshot


@pytest.mark.parametrize('site,key', [
    (lambda c: c.model, 'model.tasks'),
    (lambda c: c.train_dataloader.dataset.dataset, 'train_dataloader.dataset.dataset.tasks'),
    (lambda c: c.val_dataloader.dataset.datasets[1], 'val_dataloader.dataset.datasets[1].tasks'),
    (lambda c: c.val_evaluator, 'val_evaluator.tasks'),
    (lambda c: c.test_evaluator[0], 'test_evaluator[0].tasks'),
])
def test_an_explicit_differing_list_names_both_lists_and_keys(site, key):
    cfg = minimal(tasks=PASCAL_TASKS)
    site(cfg)['tasks'] = ['semseg', 'sal']
    with pytest.raises(ValueError) as err:
        resolve_tasks(cfg)
    message = str(err.value)
    assert f"{key} ['semseg', 'sal'] differs from tasks {PASCAL_TASKS} (config top level)" in message
    assert 'tasks=[...]' in message


def test_an_explicit_equal_list_is_accepted_but_another_order_is_not():
    cfg = minimal(tasks=['semseg', 'sal'])
    cfg.model.tasks = ['semseg', 'sal']
    assert resolve_tasks(cfg).val_evaluator.tasks == ['semseg', 'sal']
    cfg = minimal(tasks=['semseg', 'sal'])
    cfg.val_evaluator.tasks = ['sal', 'semseg']
    with pytest.raises(ValueError, match=r"val_evaluator.tasks \['sal', 'semseg'\] differs"):
        resolve_tasks(cfg)


def test_without_top_level_tasks_the_model_decides_and_lists_must_agree():
    cfg = minimal()
    cfg.model.tasks = ['semseg', 'depth']
    resolve_tasks(cfg)
    assert cfg.test_dataloader.dataset.tasks == ['semseg', 'depth'] and cfg.val_evaluator.tasks == ['semseg', 'depth']
    cfg = minimal()
    cfg.model.tasks = ['semseg', 'depth']
    cfg.val_evaluator.tasks = ['semseg']
    with pytest.raises(ValueError, match=r"val_evaluator.tasks \['semseg'\] differs from model.tasks "
                                         r"\['semseg', 'depth'\]"):
        resolve_tasks(cfg)
    # no model list: the explicit ones must still agree
    cfg = minimal()
    cfg.test_dataloader.dataset.tasks = ['semseg', 'sal']
    cfg.val_evaluator.tasks = ['semseg']
    with pytest.raises(ValueError, match=r"\['semseg'\] differs from test_dataloader.dataset.tasks"):
        resolve_tasks(cfg)
    cfg = minimal()  # nothing named anywhere: left as it is
    assert resolve_tasks(cfg).to_dict() == minimal().to_dict()


def test_unknown_top_level_task_is_refused():
    with pytest.raises(KeyError, match=r"unknown task\(s\) \['segmentation'\].*top-level tasks"):
        resolve_tasks(minimal(tasks=['segmentation']))


def test_paper_configs_resolve_to_their_dataset_tasks():
    cfg = load_run_config(PAPER)
    assert cfg.model.tasks == PASCAL_TASKS == cfg.train_dataloader.dataset.tasks == cfg.test_evaluator.tasks
    cfg = load_run_config(NYUD)
    assert cfg.model.tasks == ['semseg', 'depth'] == cfg.val_dataloader.dataset.tasks == cfg.val_evaluator.tasks


def test_cfg_options_tasks_change_the_whole_run():
    cfg = load_run_config(PAPER, ["tasks=['semseg','sal']"])
    for tasks in (cfg.model.tasks, cfg.train_dataloader.dataset.tasks, cfg.val_dataloader.dataset.tasks,
                  cfg.test_dataloader.dataset.tasks, cfg.val_evaluator.tasks, cfg.test_evaluator.tasks):
        assert list(tasks) == ['semseg', 'sal']
    from ditask_mm.registry import METRICS
    metric = METRICS.build(cfg.val_evaluator)
    assert metric.baselines == dict(semseg=dict(value=67.21), sal=dict(value=62.35))  # the other two: ignored


@pytest.mark.parametrize('option,key', [
    ("model.tasks=['semseg','sal']", 'model.tasks'),
    ("train_dataloader.dataset.tasks=['semseg','sal']", 'train_dataloader.dataset.tasks'),
    ("val_evaluator.tasks=['semseg','sal']", 'val_evaluator.tasks'),
])
def test_cfg_options_that_name_other_tasks_fail_at_load(option, key):
    with pytest.raises(ValueError) as err:
        load_run_config(PAPER, [option])
    assert f"{key} ['semseg', 'sal'] differs from tasks {PASCAL_TASKS} (config top level)" in str(err.value)
