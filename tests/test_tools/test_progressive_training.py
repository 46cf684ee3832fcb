"""The progressive configs' task groups on the user's path: 2-process gloo training, testing, merging, the API.

The tiny Swin of ``cli_utils.TINY`` takes the task-group settings
(``task_groups``, ``branch_depth``, ``branch_mode``) of the shipped progressive
configs, read from those files, so that a config whose groups could not train
under DDP fails here.
"""
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config

from ditask_mm.datasets.synthetic import generate

from .cli_utils import REPO, dist_env, metrics, run, tiny_config, train, weights

SIDE = 'configs/ditask/swin-t_pascal-mtl_progressive.py'
TREE_LORA = 'configs/baselines/progressive-lora_swin-t_pascal-mtl.py'
GROUP_KEYS = ('task_groups', 'branch_depth', 'branch_mode')


def group_settings(config: str) -> dict:
    backbone = Config.fromfile(str(REPO / config)).model.backbone
    return {key: backbone[key] for key in GROUP_KEYS}


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('progressive')
    generate('pascal', str(root / 'PASCAL_MT'), num_train=6, num_val=4, size=(48, 64), seed=2)
    return root


def test_progressive_side_config_trains_under_two_process_gloo_ddp_and_tests(data):
    settings = group_settings(SIDE)
    assert settings['branch_mode'] == 'side'
    config = tiny_config(data / 'side.py', data / 'PASCAL_MT', extra=f"model['backbone'].update({settings!r})\n")
    work = data / 'side_ddp'
    # DDP runs with find_unused_parameters=False: a group parameter without a gradient fails the 2nd iteration
    run(['bash', 'tools/dist_train.sh', str(config), '2', '--work-dir', str(work),
         '--cfg-options', 'train_cfg.max_epochs=2'], env=dist_env())
    state = weights(work / 'epoch_2.pth')
    for key in ['+'.join(g) for g in settings['task_groups'][2]]:  # one θ per stage-3 group, trained off the identity
        theta = state[f'backbone.stages.2.blocks.1.ffn.layers.0.0.theta_tasks.{key}']
        assert theta.abs().sum() > 0, key
    assert not any('theta_tasks.semseg.' in k or k.endswith('theta_tasks.semseg') for k in state
                   if '.stages.2.' in k)  # no per-task θ in stage 3: the groups share theirs
    assert 'backbone.stages.1.blocks.1.ffn.layers.0.0.theta_shared' in state
    assert not any('theta_tasks' in k for k in state if '.stages.0.' in k or '.stages.1.' in k)
    run([sys.executable, 'tools/test.py', str(config), str(work / 'epoch_2.pth'),
         '--work-dir', str(data / 'side_test')])
    scores = metrics(data / 'side_test')
    assert {'semseg.mIoU', 'human_parts.mIoU', 'sal.maxF', 'normals.mean', 'delta_m'} <= set(scores)


def test_progressive_lora_tree_config_trains_and_its_merged_checkpoint_predicts_the_same(data):
    settings = group_settings(TREE_LORA)
    adapter = dict(Config.fromfile(str(REPO / TREE_LORA)).model.backbone.adapter, rank=2)
    assert settings['branch_mode'] == 'tree' and adapter['type'] == 'LoRALinear'
    extra = (f"model['backbone'].update(type='MultiTaskSwinTransformer', "
             f"adapter=dict(_delete_=True, **{adapter!r}), **{settings!r})\n")
    config = tiny_config(data / 'tree.py', data / 'PASCAL_MT', extra=extra)
    work = data / 'tree'
    train(config, work, '--cfg-options', 'train_cfg.max_epochs=1')
    checkpoint = work / 'epoch_1.pth'
    state = weights(checkpoint)
    # stage 4's first block runs on the two stage-3 group streams, its last block on one stream per task
    first_group = '+'.join(settings['task_groups'][2][0])  # semseg+human_parts+sal
    assert any(k.endswith(f'stages.3.blocks.0.ffn.layers.1.lora_tasks_A.{first_group}') for k in state)
    assert any(k.endswith('stages.3.blocks.1.ffn.layers.1.lora_tasks_A.normals') for k in state)
    assert not any(k.endswith('stages.3.blocks.0.ffn.layers.1.lora_A') for k in state)  # no trunk after a split
    run([sys.executable, 'tools/model_converters/merge_adapters.py', str(config), str(checkpoint),
         '--out-dir', str(data / 'merged')])
    from ditask_mm.apis import inference_model, init_model
    image = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    adapted = inference_model(init_model(str(config), str(checkpoint)), image)
    merged = inference_model(init_model(str(config), str(data / 'merged/merged.pth')), image)
    for key in ('pred_sem_seg', 'pred_human_parts', 'pred_saliency', 'pred_normals'):
        torch.testing.assert_close(getattr(merged, key).data.float(), getattr(adapted, key).data.float(),
                                   rtol=1e-4, atol=1e-4, msg=key)
