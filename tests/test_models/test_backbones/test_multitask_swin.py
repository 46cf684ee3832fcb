"""The multi-task Swin backbone: task streams, outputs, no dead work, policies."""
import copy
import os

import pytest
import torch
from mmseg.models.backbones import SwinTransformer

import ditask_mm.models  # noqa: F401
from ditask_mm.adapters import DiTASKLinear, MTLoRALinear, adapter_layers
from ditask_mm.models.backbones import DiTASKSwinTransformer, MTLoRASwinTransformer, MultiTaskSwinTransformer
from ditask_mm.models.backbones.task_branch import branched_block_forward
from ditask_mm.models.backbones.window_rule import apply_official_window_rule

from ...dist_utils import ddp_steps_without_unused_parameters

TASKS = ('semseg', 'human_parts', 'sal', 'normals')
TINY = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))


def tiny_backbone(cls=DiTASKSwinTransformer, **kwargs):
    torch.manual_seed(0)
    kwargs.setdefault('adapter', dict(tessellation_size=8, task_tessellation_size=4))
    model = cls(TASKS, arch=TINY, window_size=4, pretrain_img_size=64, drop_path_rate=0.0, **kwargs)
    model.init_weights()
    return model


def plain_swin(backbone, out_indices=(0, 1, 2, 3)):
    """An mmseg SwinTransformer holding the backbone's (frozen) weights."""
    plain = SwinTransformer(pretrain_img_size=64, window_size=4, drop_path_rate=0.0, out_indices=out_indices,
                            **TINY)
    result = plain.load_state_dict(backbone.state_dict(), strict=False)
    assert not [k for k in result.missing_keys if not k.startswith('norm')]
    apply_official_window_rule(plain)  # our backbone follows it; at 64-128 px the last stages fit in a window
    plain.eval()
    return plain


def test_pre_merge_outputs_equal_plain_mmseg_swin_at_zero_theta():
    model = tiny_backbone(out_type='pre_merge')
    model.eval()
    plain = plain_swin(model)
    x = torch.randn(2, 3, 128, 96)
    ref = plain(x)
    outs = model(x)
    assert list(outs) == list(TASKS)
    for task in TASKS:
        for out, expected in zip(outs[task], ref):
            assert out.shape == expected.shape
            torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_post_merge_outputs_are_the_public_layout_and_equal_mmseg_at_zero_theta():
    model = tiny_backbone()
    model.eval()
    plain = plain_swin(model, out_indices=())
    x = torch.randn(1, 3, 128, 128)
    # reference: mmseg's own stages, PatchMerging outputs and the last stage output
    tokens, hw = plain.patch_embed(x)
    expected = []
    for stage in plain.stages:
        tokens, hw, out, out_hw = stage(tokens, hw)
        expected.append(tokens.view(1, *hw, -1).permute(0, 3, 1, 2))
    outs = model(x)
    shapes = [tuple(o.shape) for o in outs['sal']]
    assert shapes == [(1, 32, 16, 16), (1, 64, 8, 8), (1, 128, 4, 4), (1, 128, 4, 4)]  # 2C,4C,8C,8C at 1/8..1/32
    for task in TASKS:
        for out, ref in zip(outs[task], expected):
            torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_branched_block_matches_mmseg_block_with_shift_and_padding():
    model = tiny_backbone()
    block = model.stages[0].blocks[-1]  # shifted (odd) block
    assert block.attn.shift_size > 0
    for hw in [(8, 8), (6, 10)]:  # 6 and 10 are not multiples of the window: padding
        x = torch.randn(2, hw[0] * hw[1], 16)
        reference = copy.deepcopy(block)
        for _, layer in adapter_layers(reference):
            layer.tasks = ()  # plain shared path
        shared, streams = branched_block_forward(block, x, hw, TASKS, need_shared=True)
        expected = reference(x, hw)
        torch.testing.assert_close(shared, expected, atol=1e-5, rtol=1e-5)
        for task in TASKS:
            torch.testing.assert_close(streams[task], expected, atol=1e-5, rtol=1e-5)


def test_task_streams_differ_and_each_task_theta_moves_only_its_outputs():
    model = tiny_backbone(adapter=dict(tessellation_size=8, task_tessellation_size=4, theta_init='kaiming'))
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    outs_a = model(x)
    assert (outs_a['semseg'][0] - outs_a['normals'][0]).abs().max() > 1e-4
    with torch.no_grad():
        for _, layer in adapter_layers(model):
            if 'semseg' in layer.tasks:
                layer.theta_tasks['semseg'].add_(0.5)
    outs_b = model(x)
    for i in range(4):
        assert (outs_a['semseg'][i] - outs_b['semseg'][i]).abs().max() > 1e-5
        for task in ('human_parts', 'sal', 'normals'):  # later stages read the shared stream only
            torch.testing.assert_close(outs_a[task][i], outs_b[task][i])


def test_no_dead_thetas_and_every_trainable_parameter_gets_a_gradient():
    model = tiny_backbone(adapter=dict(tessellation_size=8, task_tessellation_size=4, theta_init='kaiming'))
    model.train()
    layers = dict(adapter_layers(model))
    assert all(not layers[n].tasks for n in layers if n.endswith('qkv'))  # no qkv task θ
    last = layers['stages.3.blocks.1.ffn.layers.0.0']
    assert last.theta_shared is None and last.tasks == TASKS  # no unused shared path
    assert layers['stages.3.blocks.1.attn.w_msa.qkv'].theta_shared is not None  # attention stays shared
    outs = model(torch.randn(2, 3, 64, 64))
    sum(o.square().mean() for maps in outs.values() for o in maps).backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, f'{name} got no gradient'
        else:
            assert param.grad is None, name


def test_ddp_runs_without_find_unused_parameters():
    model = tiny_backbone(adapter=dict(tessellation_size=8, task_tessellation_size=4, theta_init='kaiming'))
    ddp_steps_without_unused_parameters(model, lambda: torch.randn(1, 3, 64, 64))


def test_swin_t_parameter_accounting_matches_the_public_code():
    tasks = ('semseg', 'human_parts', 'sal', 'normals')
    ditask = DiTASKSwinTransformer(tasks)
    trainable = sum(p.numel() for p in ditask.parameters() if p.requires_grad)
    thetas = sum(p.numel() for n, p in ditask.named_parameters() if 'theta_' in n)
    assert thetas == 48 * 63 - 3 * 63 + 4 * 3 * 4 * 3  # 2,979: public 3,312 minus 333 dead θ
    assert trainable == 1_602_525
    mtlora = MTLoRASwinTransformer(tasks)
    assert sum(p.numel() for p in mtlora.parameters() if p.requires_grad) == 5_808_186
    assert all(isinstance(m, MTLoRALinear) for _, m in adapter_layers(mtlora))
    # full fine-tuning: Swin-T's 28,288,354 minus the 1000-class head and the final norm
    full = MultiTaskSwinTransformer(tasks, trainable='all')
    assert sum(p.numel() for p in full.parameters() if p.requires_grad) == 27_517_818
    assert full.task_stages == () and not list(adapter_layers(full))


def test_trainable_policies_survive_train_and_eval():
    model = tiny_backbone()
    thetas = sum(p.numel() for n, p in model.named_parameters() if 'theta_' in n)
    for policy, check in [('theta', lambda n: 'theta_' in n),
                          ('adapters_norms', lambda n: 'theta_' in n or 'norm' in n),
                          ('frozen', lambda n: False)]:
        model.apply_trainable_policy(policy)
        model.train()
        model.eval()
        for name, param in model.named_parameters():
            assert param.requires_grad == check(name), (policy, name)
    assert thetas > 0
    with pytest.raises(KeyError, match="unknown trainable policy 'thetas'"):
        model.apply_trainable_policy('thetas')


def test_configurable_layers_blocks_and_per_stage_tessellation():
    model = tiny_backbone(adapter=dict(tessellation_size=[4, 8, 16, 32], task_tessellation_size=[2, 3, 4, 5]),
                          adapted_layers=('qkv', 'fc2'), task_layers=('fc2', ), adapted_blocks=[[-1]] * 4)
    layers = dict(adapter_layers(model))
    assert sorted(layers) == sorted(f'stages.{i}.blocks.1.{p}' for i in range(4)
                                    for p in ('attn.w_msa.qkv', 'ffn.layers.1'))
    assert layers['stages.2.blocks.1.attn.w_msa.qkv'].shared_transform.tessellation_size == 16
    assert layers['stages.1.blocks.1.ffn.layers.1'].task_transforms['sal'].tessellation_size == 3
    assert isinstance(layers['stages.0.blocks.1.ffn.layers.1'], DiTASKLinear)
    outs = model(torch.randn(1, 3, 64, 64))
    assert len(outs['normals']) == 4
    with pytest.raises(ValueError, match='qkv cannot be task-specific'):
        tiny_backbone(task_layers=('qkv', ))
    with pytest.raises(ValueError, match="unknown layers \\['fc3'\\]"):
        tiny_backbone(adapted_layers=('fc3', ))
    with pytest.raises(ValueError, match='distinct task names'):
        DiTASKSwinTransformer(['a', 'a'], arch=TINY)


def test_ditask_default_adapter_is_the_base_configs_and_fills_partial_configs():
    from mmengine.config import Config

    import inspect

    from ditask_mm.adapters import DiTASKLinear
    from ditask_mm.models.backbones.multitask_swin import DITASK_DEFAULT_ADAPTER
    defaults = {k: p.default for k, p in inspect.signature(DiTASKLinear).parameters.items()}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    base = Config.fromfile(os.path.join(root, 'configs', '_base_', 'models', 'ditask_swin-t.py')).model.backbone
    assert base.type == 'DiTASKSwinTransformer'
    assert dict(DITASK_DEFAULT_ADAPTER) == dict(type='DiTASKLinear')  # no second copy of the numbers
    assert (defaults['tessellation_size'], defaults['task_tessellation_size']) == (64, 4)  # the paper's
    assert (base.adapter.tessellation_size, base.adapter.task_tessellation_size) == (64, 4)
    with pytest.raises(TypeError):
        DITASK_DEFAULT_ADAPTER['tessellation_size'] = 8  # read-only: no caller can change the default
    partial = DiTASKSwinTransformer(TASKS, arch=TINY, window_size=4, pretrain_img_size=64,
                                    adapter=dict(task_tessellation_size=2))
    layers = dict(adapter_layers(partial))
    branched = layers['stages.0.blocks.1.ffn.layers.1']
    assert branched.shared_transform.tessellation_size == defaults['tessellation_size']
    assert branched.task_transforms['sal'].tessellation_size == 2
    default = DiTASKSwinTransformer(TASKS, arch=TINY, window_size=4, pretrain_img_size=64)
    default_branched = dict(adapter_layers(default))['stages.0.blocks.1.ffn.layers.1']
    assert default_branched.shared_transform.tessellation_size == defaults['tessellation_size']
    task_size = defaults['task_tessellation_size']
    assert default_branched.task_transforms['sal'].tessellation_size == task_size
    plain = MultiTaskSwinTransformer(TASKS, arch=TINY, window_size=4, pretrain_img_size=64)
    assert not list(adapter_layers(plain)) and plain.task_stages == ()  # adapter=None: plain linears


def test_training_forward_warps_all_spectra_in_one_cpab_call_per_group(monkeypatch):
    """Batched spectra change nothing but the number of CPAB calls (8 groups: 4 widths × 2 tessellations).

    The backbone alone warps every spectrum itself; batching is the caller's
    ``batched_spectra`` (the segmentor's ``extract_feat`` enters it).
    """
    import contextlib

    from ditask_mm.adapters import batched_spectra
    from ditask_mm.cpab import CPAB1D

    model = tiny_backbone(adapter=dict(tessellation_size=8, task_tessellation_size=4, theta_init='kaiming'))
    model.train()
    images = torch.randn(2, 3, 64, 64)
    calls = []
    original = CPAB1D.transform_sequence

    def counted(self, *args, **kwargs):
        calls.append(self.tessellation_size)
        return original(self, *args, **kwargs)
    monkeypatch.setattr(CPAB1D, 'transform_sequence', counted)

    def outputs_and_grads(spectra_context):
        model.zero_grad()
        with spectra_context(model):
            outs = model(images)
        sum((f * (i + 1)).mean() for t in TASKS for i, f in enumerate(outs[t])).backward()
        return outs, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    batched, batched_grads = outputs_and_grads(batched_spectra)
    assert sorted(calls) == [4] * 4 + [8] * 4
    paths = sum(len(layer.transform_paths()) for _, layer in adapter_layers(model))
    calls.clear()
    single, single_grads = outputs_and_grads(lambda module: contextlib.nullcontext(0))
    assert len(calls) == paths > 8
    for task in TASKS:
        for a, b in zip(batched[task], single[task]):
            # same math; MKL's GEMMs may round differently with other buffer alignments
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert batched_grads.keys() == single_grads.keys() and any('theta_tasks' in n for n in batched_grads)
    for name, grad in batched_grads.items():
        torch.testing.assert_close(grad, single_grads[name], rtol=1e-5, atol=1e-5 * grad.abs().max().item(),
                                   msg=name)


@pytest.mark.filterwarnings('ignore:torch.utils.checkpoint. the use_reentrant:UserWarning')  # mmseg's with_cp call
def test_checkpointed_branches_give_the_same_gradients_and_save_less():
    """with_cp_branches recomputes the branched blocks (same dropout masks and spectra), freeing their activations."""
    adapter = dict(tessellation_size=8, task_tessellation_size=4, theta_init='kaiming', main_path_dropout=0.3)
    images = torch.randn(2, 3, 64, 64)

    def run(**kwargs):
        model = tiny_backbone(adapter=adapter, **kwargs)
        model.train()
        saved_bytes = []

        def pack(t):
            saved_bytes.append(t.numel() * t.element_size())
            return t
        torch.manual_seed(5)  # the dropout masks
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            outs = model(images)
        sum((f * (i + 1)).mean() for t in TASKS for i, f in enumerate(outs[t])).backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        return outs, grads, sum(saved_bytes)

    plain_outs, plain_grads, plain_bytes = run()
    cp_outs, cp_grads, cp_bytes = run(with_cp_branches=True)
    for task in TASKS:
        for a, b in zip(plain_outs[task], cp_outs[task]):
            # same math; MKL's GEMMs may round differently with other buffer alignments
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert plain_grads.keys() == cp_grads.keys() and any('theta_tasks' in n for n in cp_grads)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(cp_grads[name], grad, rtol=1e-5, atol=1e-6 * grad.abs().max().item(), msg=name)
    assert cp_bytes < 0.8 * plain_bytes  # the four branched blocks hold most of the activations here
    # mmseg's with_cp (every block) reaches the branched blocks too: it saves less than checkpointing them alone
    all_outs, all_grads, all_bytes = run(with_cp=True)
    assert all_bytes < 0.8 * cp_bytes
    for name, grad in plain_grads.items():  # its recomputation warps spectra per layer: summation order differs
        torch.testing.assert_close(all_grads[name], grad, rtol=1e-5, atol=1e-5 * grad.abs().max().item(), msg=name)
