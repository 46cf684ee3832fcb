"""Every config parses, inherits its bases, and builds its model (no weights are downloaded)."""
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

import ditask_mm.models  # noqa: F401
from ditask_mm.registry import MODELS

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for folder in ('ditask', 'baselines') for p in (REPO / 'configs' / folder).rglob('*.py'))


def load_count_params():
    import importlib.util
    spec = importlib.util.spec_from_file_location('count_params', REPO / 'tools/analysis_tools/count_params.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.count_parameters


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: str(p.relative_to(REPO / 'configs')))
def test_config_builds_a_consistent_model(path):
    cfg = Config.fromfile(str(path))
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    tasks = list(model.tasks)
    assert list(cfg.train_dataloader.dataset.tasks) == tasks
    assert list(cfg.val_evaluator.tasks) == tasks
    assert set(model.decode_heads) == set(tasks)
    baselines = cfg.val_evaluator.get('baselines') or {}
    assert set(baselines) == set(tasks), 'Δm (the best-checkpoint key) needs a baseline per task'
    if cfg.model.backbone.get('init_cfg'):
        assert cfg.model.backbone.init_cfg.checkpoint.startswith('https://github.com/SwinTransformer/storage/')


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
    cfg = Config.fromfile(str(REPO / 'configs' / name))
    init_default_scope(cfg.default_scope)
    counts = load_count_params()(MODELS.build(cfg.model))
    assert counts['backbone_trainable'] == EXPECTED_BACKBONE_TRAINABLE[name]
    assert counts['decode_heads'] == 1_946_624
