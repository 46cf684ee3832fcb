"""Task groups per stage: the stream plan, the exact equivalences, and a reference forward built from mmseg blocks."""
import contextlib

import pytest
import torch

import ditask_mm.models  # noqa: F401
from ditask_mm.adapters import adapter_layers, batched_spectra
from ditask_mm.models.backbones import MultiTaskSwinTransformer
from ditask_mm.models.backbones.task_groups import plan_streams

from ...dist_utils import ddp_steps_without_unused_parameters
from .test_multitask_swin import TASKS, TINY

SEMSEG_PARTS = ['semseg', 'human_parts']
SAL_NORMALS = ['sal', 'normals']
ALL = [list(TASKS)]
SINGLE = [[t] for t in TASKS]
#: stages 1-2 shared, stage 3 in two groups, stage 4 one task per group (the progressive config's layout)
PROGRESSIVE = [ALL, ALL, [SEMSEG_PARTS, SAL_NORMALS], SINGLE]
ADAPTERS = {
    'ditask': dict(type='DiTASKLinear', tessellation_size=8, task_tessellation_size=4, theta_init='kaiming'),
    'mtlora': dict(type='MTLoRALinear', rank=4, task_rank=2),
    'lora': dict(type='LoRALinear', rank=4, scale=2.0),
}


def grouped_backbone(adapter='ditask', **kwargs):
    torch.manual_seed(0)
    model = MultiTaskSwinTransformer(TASKS, arch=TINY, window_size=4, pretrain_img_size=64, drop_path_rate=0.0,
                                     adapter=dict(ADAPTERS[adapter]), **kwargs)
    model.init_weights()
    if adapter != 'ditask':  # LoRA's B starts at zero: move every parameter so that each path differs
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if 'lora' in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return model


# ---------------------------------------------------------------------------------------------------- the plan
def test_side_plan_routes_each_group_from_the_shared_stream_and_builds_no_dead_trunk():
    plans = plan_streams(TASKS, (2, 2, 6, 2), PROGRESSIVE, branch_depth=2, branch_mode='side')
    assert [p.branches for p in plans] == [False, False, True, True]
    stage3 = plans[2]
    assert stage3.keys == ('semseg+human_parts', 'sal+normals')
    assert stage3.routes[:4] == ((((None, None),),) * 4)
    assert stage3.routes[4] == ((None, None), ('semseg+human_parts', None), ('sal+normals', None))
    assert stage3.routes[5] == ((None, None), ('semseg+human_parts', 'semseg+human_parts'),
                                ('sal+normals', 'sal+normals'))
    assert stage3.carry == (None,) and stage3.task_keys['normals'] == 'sal+normals'
    assert plans[3].routes[0] == tuple((t, None) for t in TASKS)  # last stage: no shared trunk in the branch
    assert plans[3].carry == ()


def test_tree_plan_continues_group_streams_and_rejects_a_partition_that_merges_them():
    groups = [ALL, [SEMSEG_PARTS, SAL_NORMALS], [SEMSEG_PARTS, SAL_NORMALS], SINGLE]
    plans = plan_streams(TASKS, (2, 2, 2, 2), groups, branch_mode='tree')
    assert plans[1].routes[1] == (('semseg+human_parts', None), ('sal+normals', None))  # no trunk after the split
    assert plans[2].routes == ((('semseg+human_parts', 'semseg+human_parts'), ('sal+normals', 'sal+normals')),) * 2
    assert plans[3].routes[1] == (('semseg', 'semseg+human_parts'), ('human_parts', 'semseg+human_parts'),
                                  ('sal', 'sal+normals'), ('normals', 'sal+normals'))
    with pytest.raises(ValueError, match=r"branch_mode='tree': task_groups\[3\] puts \['human_parts', 'sal'\]"):
        plan_streams(TASKS, (2, 2, 2, 2), [ALL, ALL, [SEMSEG_PARTS, SAL_NORMALS],
                                           [['semseg'], ['human_parts', 'sal'], ['normals']]], branch_mode='tree')
    # the same groups are fine beside a shared trunk
    plan_streams(TASKS, (2, 2, 2, 2), [ALL, ALL, [SEMSEG_PARTS, SAL_NORMALS],
                                       [['semseg'], ['human_parts', 'sal'], ['normals']]], branch_mode='side')


@pytest.mark.parametrize('groups, message', [
    ([ALL] * 3, r'one partition of the tasks per stage \(4 stages\)'),
    ([ALL, ALL, ALL, [SEMSEG_PARTS, ['sal']]], r"in no group \['normals'\]"),
    ([ALL, ALL, ALL, [SEMSEG_PARTS, ['sal', 'semseg', 'normals']]], r"in two groups \['semseg'\]"),
    ([ALL, ALL, ALL, [SEMSEG_PARTS, ['sal', 'depth', 'normals']]], r"unknown \['depth'\]"),
    ([ALL, ALL, ALL, ['semseg', 'human_parts', 'sal', 'normals']], r'must be a list of groups'),
])
def test_bad_task_groups_fail_at_build_time_with_the_stage_and_the_problem(groups, message):
    with pytest.raises(ValueError, match=message):
        grouped_backbone(task_groups=groups)


def test_conflicting_or_impossible_branching_options_fail_clearly():
    with pytest.raises(ValueError, match='task_groups or task_stages, not both'):
        grouped_backbone(task_groups=PROGRESSIVE, task_stages=(3,))
    with pytest.raises(ValueError, match='branch_depth of stage 0 must be an int between 1 and the stage depth 2'):
        grouped_backbone(task_groups=PROGRESSIVE, branch_depth=3)
    with pytest.raises(ValueError, match="branch_mode must be one of \\('side', 'tree'\\)"):
        grouped_backbone(task_groups=PROGRESSIVE, branch_mode='fork')
    with pytest.raises(ValueError, match='no task-specific layers to branch with'):
        grouped_backbone(task_groups=PROGRESSIVE, task_layers=())


# ------------------------------------------------------------------------------------------ exact equivalences
@pytest.mark.parametrize('adapter', ['ditask', 'mtlora'])
def test_one_task_per_group_depth_one_side_is_todays_model(adapter):
    reference = grouped_backbone(adapter)  # task_stages: every stage, one branch per task
    grouped = grouped_backbone(adapter, task_groups=[SINGLE[::-1]] * 4, branch_depth=1, branch_mode='side')
    names = [n for n, _ in reference.named_parameters()]
    assert [n for n, _ in grouped.named_parameters()] == names
    assert 'stages.0.blocks.1.ffn.layers.0.0.' + ('theta_tasks.sal' if adapter == 'ditask' else 'lora_tasks_A.sal') \
        in names
    grouped.load_state_dict(reference.state_dict())
    reference.eval()
    grouped.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, outs = reference(x), grouped(x)
    for task in TASKS:
        for a, b in zip(outs[task], expected[task]):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_one_group_everywhere_is_the_shared_only_model():
    shared_only = grouped_backbone(task_stages=())
    grouped = grouped_backbone(task_groups=[ALL] * 4)
    assert [n for n, _ in grouped.named_parameters()] == [n for n, _ in shared_only.named_parameters()]
    assert not any('tasks' in n for n, _ in grouped.named_parameters()) and grouped.task_stages == ()
    grouped.load_state_dict(shared_only.state_dict())
    grouped.eval()
    shared_only.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected, outs = shared_only(x), grouped(x)
    for task in TASKS:
        for a, b, c in zip(outs[task], expected[task], outs['semseg']):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
            assert torch.equal(a, c)  # every task reads the one shared stream


# ------------------------------------------------------------------- reference forward from plain mmseg blocks
@contextlib.contextmanager
def active_paths(block, key):
    """Every adapter layer of ``block`` on the path ``key`` (layers without it use their shared path)."""
    layers = [layer for _, layer in adapter_layers(block)]
    for layer in layers:
        layer.active_task = key
    try:
        yield
    finally:
        for layer in layers:
            layer.active_task = None


def stream_of(task, plan, j):
    """The stream key task ``task`` runs in block ``j`` of a stage."""
    return [out for out, _ in plan.routes[j] if out is None or task in out.split('+')][-1]


def reference_maps(model, x):
    """Every task's four post-merge maps, computed task by task with mmseg's SwinBlock forward."""
    tokens, hw0 = model.patch_embed(x)
    maps = {}
    for task in TASKS:
        trunk, hw, maps[task] = tokens, hw0, []
        stream = tokens
        for stage, plan in zip(model.stages, model.plan):
            for j, block in enumerate(stage.blocks):
                key = stream_of(task, plan, j)
                if model.branch_mode == 'side':
                    if key is None:  # still on the shared trunk: the task's stream is the trunk
                        stream = trunk
                    with active_paths(block, key):
                        stream = block(stream, hw)
                    with active_paths(block, None):
                        trunk = block(trunk, hw)
                else:
                    with active_paths(block, key):
                        stream = block(stream, hw)
            if stage.downsample is None:
                maps[task].append(model._to_map(stream, hw))
                continue
            merged, next_hw = stage.downsample(stream, hw)
            maps[task].append(model._to_map(merged, next_hw))
            if model.branch_mode == 'side':
                trunk, _ = stage.downsample(trunk, hw)
                stream = trunk
            else:
                stream = merged
            hw = next_hw
    return maps


@pytest.mark.parametrize('adapter', ['ditask', 'mtlora', 'lora'])
@pytest.mark.parametrize('mode, groups, depth', [
    ('side', PROGRESSIVE, 2),
    ('side', [ALL, [SEMSEG_PARTS, SAL_NORMALS], [['semseg'], ['human_parts', 'sal'], ['normals']], SINGLE], 1),
    ('tree', [ALL, [SEMSEG_PARTS, SAL_NORMALS], [SEMSEG_PARTS, SAL_NORMALS], SINGLE], 1),
    ('tree', PROGRESSIVE, [1, 1, 2, 2]),
])
def test_grouped_forward_equals_each_task_run_alone_through_mmseg_blocks(adapter, mode, groups, depth):
    model = grouped_backbone(adapter, task_groups=groups, branch_mode=mode, branch_depth=depth)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        outs, expected = model(x), reference_maps(model, x)
    for task in TASKS:
        for i, (a, b) in enumerate(zip(outs[task], expected[task])):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f'{task} map {i}')
    # the groups really differ: semseg and human_parts share their stage-3 stream, sal does not
    assert torch.equal(outs['semseg'][2], outs['human_parts'][2]) == (groups[2][0] == SEMSEG_PARTS)
    assert not torch.allclose(outs['semseg'][2], outs['sal'][2])


# --------------------------------------------------------------------------------------------- no dead work
@pytest.mark.parametrize('adapter', ['ditask', 'mtlora', 'lora'])
@pytest.mark.parametrize('mode', ['side', 'tree'])
def test_every_group_parameter_gets_a_gradient_and_only_needed_paths_exist(adapter, mode):
    model = grouped_backbone(adapter, task_groups=PROGRESSIVE, branch_mode=mode, branch_depth=[1, 1, 2, 1])
    model.train()
    layers = dict(adapter_layers(model))
    pairs = ('semseg+human_parts', 'sal+normals')
    assert layers['stages.2.blocks.0.ffn.layers.0.0'].tasks == pairs
    assert layers['stages.2.blocks.0.attn.w_msa.qkv'].tasks == ()  # attention keeps its shared adaptation
    assert layers['stages.1.blocks.1.ffn.layers.1'].tasks == ()  # shared stage
    shared_theta = 'theta_shared' if adapter == 'ditask' else ('lora_shared_A' if adapter == 'mtlora' else 'lora_A')

    def has_shared(name):
        return getattr(layers[name], shared_theta) is not None
    # the last stage's branch never runs the shared trunk; in tree mode nothing after stage 3's split does
    assert not has_shared('stages.3.blocks.1.ffn.layers.1') and layers['stages.3.blocks.1.ffn.layers.1'].tasks == TASKS
    assert has_shared('stages.2.blocks.0.ffn.layers.1') == (mode == 'side')
    # stage 4's first block: the trunk beside the branches, or the stage-3 group streams in a tree
    assert has_shared('stages.3.blocks.0.ffn.layers.1') == (mode == 'side')
    assert layers['stages.3.blocks.0.ffn.layers.1'].tasks == (pairs if mode == 'tree' else ())
    outs = model(torch.randn(2, 3, 64, 64))
    sum((f * (i + 1)).square().mean() for maps in outs.values() for i, f in enumerate(maps)).backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, f'{name} got no gradient'


def test_grouped_ddp_runs_without_find_unused_parameters():
    model = grouped_backbone(task_groups=PROGRESSIVE, branch_mode='tree', branch_depth=2)
    ddp_steps_without_unused_parameters(model, lambda: torch.randn(1, 3, 64, 64))


@pytest.mark.filterwarnings('ignore:torch.utils.checkpoint. the use_reentrant:UserWarning')
def test_checkpointed_and_batched_spectra_give_the_same_gradients_with_groups():
    images = torch.randn(2, 3, 64, 64)

    def run(spectra=contextlib.nullcontext, **kwargs):
        model = grouped_backbone(task_groups=PROGRESSIVE, branch_mode='tree', branch_depth=2, **kwargs)
        model.train()
        with spectra(model) if spectra is batched_spectra else spectra():
            outs = model(images)
        sum((f * (i + 1)).mean() for t in TASKS for i, f in enumerate(outs[t])).backward()
        return outs, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    plain_outs, plain_grads = run()
    assert any('theta_tasks.semseg+human_parts' in n for n in plain_grads)
    for outs, grads in (run(with_cp_branches=True), run(spectra=batched_spectra)):
        for task in TASKS:
            for a, b in zip(plain_outs[task], outs[task]):
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
        assert grads.keys() == plain_grads.keys()
        for name, grad in plain_grads.items():
            torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-5 * grad.abs().max().item(), msg=name)
