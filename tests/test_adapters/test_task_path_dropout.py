"""task_paths_share_dropout: the public layer's task proj reads the shared path's dropped input, same mask."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config

from ditask_mm.adapters import DiTASKLinear, adapter_layers
from ditask_mm.models.backbones import DiTASKSwinTransformer

TASKS = ('semseg', 'human_parts', 'sal', 'normals')
PATHS = (None, 'a', 'b')


def layer(share: bool, p: float = 0.3) -> DiTASKLinear:
    torch.manual_seed(0)
    ditask = DiTASKLinear(torch.nn.Linear(12, 10), tessellation_size=4, tasks=('a', 'b'), task_tessellation_size=4,
                          theta_init='kaiming', main_path_dropout=p, task_paths_share_dropout=share)
    return ditask.train()


def test_every_path_reads_one_dropped_input_as_the_public_layer_does():
    ditask, x = layer(share=True), torch.randn(5, 12)
    torch.manual_seed(7)
    outputs = ditask.forward_paths(x, PATHS)
    torch.manual_seed(7)
    dropped = ditask.dropout(x)  # the one mask the public layer draws for its shared path
    assert (dropped == 0).any() and not torch.equal(dropped, x)
    with torch.no_grad():
        for path, out in zip(PATHS, outputs):  # public: y_t = F.linear(dropout(x), W_θt, b), the same dropout(x)
            expected = F.linear(dropped, ditask.adapted_weight(path), ditask.bias)
            torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6, msg=str(path))


def test_without_the_option_task_paths_read_the_clean_input():
    ditask, x = layer(share=False), torch.randn(5, 12)
    torch.manual_seed(7)
    outputs = ditask.forward_paths(x, PATHS)
    with torch.no_grad():
        for path, out in zip(PATHS[1:], outputs[1:]):
            torch.testing.assert_close(out, F.linear(x, ditask.adapted_weight(path), ditask.bias), rtol=1e-5,
                                       atol=1e-6)
        assert not torch.allclose(outputs[0], F.linear(x, ditask.adapted_weight(None), ditask.bias))  # dropped


@pytest.mark.parametrize('share', [True, False])
def test_eval_and_zero_dropout_are_unchanged_by_the_option(share):
    x = torch.randn(5, 12)
    reference = layer(share=False).eval()
    ditask = layer(share=share).eval()
    for got, want in zip(ditask.forward_paths(x, PATHS), [reference(x, task=p) for p in PATHS]):
        assert torch.equal(got, want)
    no_dropout = layer(share=True, p=0.0)
    torch.manual_seed(1)
    for got, want in zip(no_dropout.forward_paths(x, PATHS), [no_dropout(x, task=p) for p in PATHS]):
        assert torch.equal(got, want)


def _record_proj_inputs(model, monkeypatch):
    """Record, per branched ``proj``, the input each path got and every output of its main-path dropout."""
    seen = {}
    for name, module in adapter_layers(model):
        if name.endswith('w_msa.proj') and module.tasks:
            record = seen.setdefault(name, dict(inputs=[], dropped=[]))

            def apply_path(x, task, _orig=module._apply_path, _record=record):
                _record['inputs'].append(x)
                return _orig(x, task)

            def count(mod, args, out, _record=record):
                _record['dropped'].append(out)
            monkeypatch.setattr(module, '_apply_path', apply_path)
            module.dropout.register_forward_hook(count)
    return seen


@pytest.mark.parametrize('share', [True, False])
def test_in_the_swin_every_task_proj_gets_the_shared_projs_dropped_input(share, monkeypatch):
    torch.manual_seed(0)
    adapter = dict(tessellation_size=8, task_tessellation_size=4, theta_init='kaiming', main_path_dropout=0.3,
                   task_paths_share_dropout=share)
    model = DiTASKSwinTransformer(TASKS, arch=dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8)),
                                  window_size=4, pretrain_img_size=64, drop_path_rate=0.0, adapter=adapter)
    model.init_weights()
    model.train()
    seen = _record_proj_inputs(model, monkeypatch)
    model(torch.randn(2, 3, 64, 64))
    assert len(seen) == 4  # the last block of every stage
    for name, record in seen.items():
        last_stage = name.startswith('stages.3.')  # no shared path there: tasks only, yet dropped as in public code
        paths = len(TASKS) + (0 if last_stage else 1)
        assert len(record['inputs']) == paths, name
        if share:  # one mask, and every path (shared and task) reads its output
            assert len(record['dropped']) == 1, name
            assert all(x is record['dropped'][0] for x in record['inputs']), name
        else:  # the shared path alone is dropped; task paths read the clean input
            assert len(record['dropped']) == (0 if last_stage else 1), name
            assert not any(x is d for x in record['inputs'][-len(TASKS):] for d in record['dropped']), name


def test_the_paper_configs_turn_it_on_and_the_clean_one_has_no_main_path_dropout():
    for path in ('configs/ditask/swin-t_pascal-mtl.py', 'configs/ditask/swin-t_nyud-mtl.py'):
        adapter = Config.fromfile(path).model.backbone.adapter
        assert adapter.main_path_dropout == 0.05 and adapter.task_paths_share_dropout is True, path
    clean = Config.fromfile('configs/ditask/swin-t_pascal-mtl_clean.py').model.backbone.adapter
    assert clean.main_path_dropout == 0.0 and not clean.task_paths_share_dropout
