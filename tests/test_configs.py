"""Every config parses, inherits its bases, and builds its model (no weights are downloaded).

The effective model of each config (per task: head channels, loss, loss
weight, Δm baseline) is checked against the explicit table below: the table
is the spec, written out here rather than derived from the configs.
"""
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

import ditask_mm.models  # noqa: F401
from ditask_mm.engine.task_config import resolve_tasks
from ditask_mm.models.segmentors import TASK_LOSSES
from ditask_mm.registry import METRICS, MODELS

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for folder in ('ditask', 'baselines') for p in (REPO / 'configs' / folder).rglob('*.py'))


def load_count_params():
    from ditask_mm.analysis import count_parameters
    return count_parameters


CE, BCE, NORMALS, DEPTH = 'MTLCrossEntropyLoss', 'BalancedBCELoss', 'NormalsL1Loss', 'DepthL1Loss'
#: task -> (out_channels, loss type, loss_weight, Δm baseline)
PASCAL = dict(semseg=(21, CE, 1.0, 67.21), human_parts=(7, CE, 2.0, 61.93), sal=(1, BCE, 5.0, 62.35),
              normals=(3, NORMALS, 10.0, 17.97))
NYUD = dict(semseg=(40, CE, 1.0, 33.18), depth=(1, DEPTH, 1.0, 0.667))
#: the 5-task PASCAL: edge weight 50 (public code), odsF baseline 72.7 (ASTMT single task, pascal_mtl.py)
PASCAL_5TASK = dict(PASCAL, edge=(1, BCE, 50.0, 72.7))
#: the 4-task NYUD: normals weight 10 and edge weight 50 (public code); no citable baseline for either (None)
NYUD_4TASK = dict(NYUD, normals=(3, NORMALS, 10.0, None), edge=(1, BCE, 50.0, None))
SINGLE = dict(semseg=(21, CE, 1.0, 67.21), human_parts=(7, CE, 1.0, 61.93), sal=(1, BCE, 1.0, 62.35),
              normals=(3, NORMALS, 1.0, 17.97))
EXPECTED_MODEL = {
    **{f'ditask/swin-{arch}_pascal-mtl.py': PASCAL for arch in 'tsbl'},
    **{f'ditask/swin-{arch}_nyud-mtl.py': NYUD for arch in 'tsbl'},
    'ditask/swin-t_pascal-mtl_clean.py': PASCAL,
    'ditask/swin-t_pascal-mtl_progressive.py': PASCAL,
    'ditask/swin-t_pascal-mtl_uncertainty.py': PASCAL,
    'ditask/swin-t_pascal-mtl_dwa.py': PASCAL,
    'ditask/swin-t_pascal-mtl_pcgrad.py': PASCAL,
    'ditask/swin-t_pascal-mtl_progressive-tree.py': PASCAL,
    'ditask/swin-t_nyud-mtl_progressive.py': NYUD,
    'ditask/swin-t_nyud-mtl_progressive-tree.py': NYUD,
    'ditask/swin-t_pascal-mtl_5task.py': PASCAL_5TASK,
    'ditask/swin-t_nyud-mtl_edge.py': NYUD_4TASK,
    'baselines/progressive-lora_swin-t_pascal-mtl.py': PASCAL,
    'baselines/progressive-lora_swin-t_nyud-mtl.py': NYUD,
    'ditask/swin-t_synthetic-mtl_quick.py': PASCAL,
    'ditask/dinov2-s_pascal-mtl.py': PASCAL,
    'ditask/vit-b_pascal-mtl.py': PASCAL,
    **{f'baselines/{name}_swin-t_pascal-mtl.py': PASCAL
       for name in ('decoder-only', 'full-ft', 'lora-r4', 'mtlora-r16', 'mtlora-r32', 'mtlora-r64')},
    **{f'ditask/single-task/swin-t_pascal-{name}.py': {task: SINGLE[task]}
       for name, task in (('semseg', 'semseg'), ('human-parts', 'human_parts'), ('sal', 'sal'),
                          ('normals', 'normals'))},
    **{f'baselines/single-task-full-ft_swin-t_pascal-{name}.py': {task: SINGLE[task]}
       for name, task in (('semseg', 'semseg'), ('human-parts', 'human_parts'), ('sal', 'sal'),
                          ('normals', 'normals'))},
}


def config_id(path):
    return str(path.relative_to(REPO / 'configs'))


def test_every_config_has_an_expected_model():
    assert sorted(map(config_id, CONFIGS)) == sorted(EXPECTED_MODEL)


@pytest.mark.parametrize('path', CONFIGS, ids=config_id)
def test_config_builds_a_consistent_model(path):
    cfg = Config.fromfile(str(path))
    # the task list is declared once, at the top level: no part of the file names it again
    assert cfg.get('tasks'), 'configs declare their tasks once, as the top-level tasks=[...]'
    named = [key for key, node in (('model', cfg.model), ('train_dataloader.dataset', cfg.train_dataloader.dataset),
                                   ('val_dataloader.dataset', cfg.val_dataloader.dataset),
                                   ('test_dataloader.dataset', cfg.test_dataloader.dataset),
                                   ('val_evaluator', cfg.val_evaluator), ('test_evaluator', cfg.test_evaluator))
             if 'tasks' in node]
    assert not named, f'{named} name tasks again; only the top-level tasks=[...] may'
    resolve_tasks(cfg)
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    tasks = list(model.tasks)
    assert tasks == list(cfg.tasks)
    # the resolver gave every part the same list
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert list(cfg[loader].dataset.tasks) == tasks
    assert list(cfg.val_evaluator.tasks) == tasks and list(cfg.test_evaluator.tasks) == tasks
    assert list(model.decode_heads) == tasks
    metric = METRICS.build(cfg.val_evaluator)
    assert list(metric.tasks) == tasks
    # Δm (the best-checkpoint key) needs a baseline per task, except where the table says none can be cited
    expected_baselines = {t for t, spec in EXPECTED_MODEL[config_id(path)].items() if spec[3] is not None}
    assert set(metric.baselines) == expected_baselines
    effective = {t: (head.out_channels, type(head.loss_decode).__name__, head.loss_decode.loss_weight,
                     metric.baselines[t]['value'] if t in metric.baselines else None)
                 for t, head in model.decode_heads.items()}
    assert effective == EXPECTED_MODEL[config_id(path)]
    if 'sal' in tasks:
        assert model.decode_heads['sal'].loss_decode.pos_weight is None  # the batch-balanced weight
    if cfg.model.backbone.get('init_cfg'):
        assert cfg.model.backbone.init_cfg.checkpoint.startswith('https://github.com/SwinTransformer/storage/')


def test_task_weights_are_written_once_in_the_base_config():
    """The paper's task weights live in the base config only; the code holds each task's loss, without a weight."""
    base = Config.fromfile(str(REPO / 'configs/_base_/models/ditask_swin-t.py'))
    assert base.model.loss_decode.to_dict() == {t: dict(loss_weight=w) for t, w in dict(
        semseg=1.0, human_parts=2.0, sal=5.0, normals=10.0, depth=1.0, edge=50.0).items()}
    assert base.model.num_classes.to_dict() == dict(semseg=21, human_parts=7)
    assert set(TASK_LOSSES) == set(base.model.loss_decode) and not any('loss_weight' in v for v in TASK_LOSSES.values())
    # the only other configs writing a weight are the single-task ones (weight 1 for their one task)
    writers = sorted(p.relative_to(REPO).as_posix() for p in (REPO / 'configs').rglob('*.py')
                     if 'loss_weight' in p.read_text() and p.name != 'mtl_segmentor.py')
    assert writers == sorted(f'configs/ditask/single-task/swin-t_pascal-{t}.py'
                             for t in ('human-parts', 'normals', 'sal', 'semseg'))


EXPECTED_BACKBONE_TRAINABLE = {
    'ditask/swin-t_pascal-mtl.py': 1_602_525,  # public 1,602,858 minus 333 dead θ
    'baselines/full-ft_swin-t_pascal-mtl.py': 27_517_818,  # public full fine-tuning
    'baselines/decoder-only_swin-t_pascal-mtl.py': 0,
    'baselines/mtlora-r64_swin-t_pascal-mtl.py': 6_398_010 - 589_824,  # public minus the unused shared path
    'baselines/mtlora-r32_swin-t_pascal-mtl.py': 4_137_018 - 294_912,
    'baselines/mtlora-r16_swin-t_pascal-mtl.py': 3_006_522 - 147_456,
    'baselines/lora-r4_swin-t_pascal-mtl.py': 1_882_170,  # public "lora_only" r=4 approximation
}


@pytest.mark.parametrize('name', sorted(EXPECTED_BACKBONE_TRAINABLE))
def test_trainable_parameters_match_the_public_figures(name):
    cfg = resolve_tasks(Config.fromfile(str(REPO / 'configs' / name)))
    init_default_scope(cfg.default_scope)
    counts = load_count_params()(MODELS.build(cfg.model))
    assert counts['backbone_trainable'] == EXPECTED_BACKBONE_TRAINABLE[name]
    assert counts['decode_heads'] == 1_946_624


#: config -> (branch_mode, groups per stage, adapter layer type, total trainable parameters stated in its comment)
PROGRESSIVE = {
    'ditask/swin-t_pascal-mtl_progressive.py': ('side', 'DiTASKLinear', None),
    'ditask/swin-t_pascal-mtl_progressive-tree.py': ('tree', 'DiTASKLinear', None),
    'baselines/progressive-lora_swin-t_pascal-mtl.py': ('tree', 'LoRALinear', 5_340_218),
    'ditask/swin-t_nyud-mtl_progressive.py': ('side', 'DiTASKLinear', None),
    'ditask/swin-t_nyud-mtl_progressive-tree.py': ('tree', 'DiTASKLinear', None),
    'baselines/progressive-lora_swin-t_nyud-mtl.py': ('tree', 'LoRALinear', None),
}


@pytest.mark.parametrize('name', sorted(PROGRESSIVE))
def test_progressive_configs_share_the_first_stages_and_split_toward_the_heads(name):
    from ditask_mm.adapters import adapter_layers
    mode, layer_type, trainable = PROGRESSIVE[name]
    cfg = resolve_tasks(Config.fromfile(str(REPO / 'configs' / name)))
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    backbone, tasks = model.backbone, tuple(cfg.tasks)
    groups = [plan.groups for plan in backbone.plan]
    assert backbone.branch_mode == mode and backbone.task_stages == (2, 3)
    assert groups[0] == groups[1] == (tasks,)  # stages 1-2 shared
    assert len(groups[2]) == 2 and groups[3] == tuple((t,) for t in tasks)  # two groups, then one task per group
    assert {type(layer).__name__ for _, layer in adapter_layers(backbone)} == {layer_type}
    keys = {key for _, layer in adapter_layers(backbone) for key in layer.tasks}
    assert keys == {'+'.join(g) if len(g) > 1 else g[0] for g in groups[2] + groups[3]}
    if trainable is not None:
        assert load_count_params()(model)['total_trainable'] == trainable
