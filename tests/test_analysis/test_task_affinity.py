"""Gradient affinity between tasks (ditask_mm.analysis.task_affinity) on problems whose answer is known.

The constructed problems have shared parameters and task losses chosen so
that the cosines are exactly 1, −1, 0 or 1/√2; the 2-process gloo test checks
that the gradients (not the cosines) are averaged over the ranks.
"""
import math
import os

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config

from ditask_mm.adapters import LoRALinear
from ditask_mm.analysis import (gradient_affinity, measure_task_affinity, propose_groups, stage_shared_parameters,
                                write_group_config)
from ditask_mm.analysis.task_affinity import check_task_groups, task_loss_sums

from ..dist_utils import spawn_two_gloo_ranks

TASKS = ['a', 'b', 'c']


def constructed_losses():
    """Stage 0 (``w``): a and b identical, c opposite. Stage 1 (``v``): a and c identical, b opposite."""
    torch.manual_seed(0)
    w, v = nn.Parameter(torch.randn(5)), nn.Parameter(torch.randn(3, 2))
    x, y = torch.randn(5), torch.randn(3, 2)
    f, g = (w * x).sum() ** 2, torch.sin(v * y).sum()
    return dict(a=f + g, b=f - g, c=-f + g), {0: [w], 1: [v]}


def test_identical_and_opposite_losses_give_cosines_one_and_minus_one_per_stage():
    losses, params = constructed_losses()
    matrices = gradient_affinity(losses, params)
    assert sorted(matrices) == [0, 1]
    expected = {0: [[1, 1, -1], [1, 1, -1], [-1, -1, 1]], 1: [[1, -1, 1], [-1, 1, -1], [1, -1, 1]]}
    for stage, matrix in matrices.items():
        assert matrix.shape == (3, 3) and matrix.dtype == torch.float64
        torch.testing.assert_close(matrix, torch.tensor(expected[stage], dtype=torch.float64), atol=1e-6, rtol=0)
    assert all(p.grad is None for ps in params.values() for p in ps)  # autograd.grad, nothing accumulated
    assert propose_groups(matrices[0], TASKS, num_groups=2) == [['a', 'b'], ['c']]
    assert propose_groups(matrices[1], TASKS, num_groups=2) == [['a', 'c'], ['b']]


def test_unused_parameter_and_constant_loss_give_cosine_zero_not_nan():
    w, v = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    losses = dict(a=(w * torch.tensor([1., 2.])).sum(), b=(v * 3).sum(), c=torch.tensor(2.0))
    matrices = gradient_affinity(losses, {0: [w], 1: [v]})
    torch.testing.assert_close(matrices[0], torch.tensor([[1., 0, 0], [0, 0, 0], [0, 0, 0]], dtype=torch.float64))
    torch.testing.assert_close(matrices[1], torch.tensor([[0., 0, 0], [0, 1, 0], [0, 0, 0]], dtype=torch.float64))


def test_reduce_averages_gradients_before_the_cosine():
    # this rank: g_a = g_b = (1, 0); the other rank's (0, 1) and (1, 0) are averaged in by ``reduce``
    w = nn.Parameter(torch.zeros(2))
    losses = dict(a=w[0] * 1.0, b=w[0] * 1.0)
    other = torch.tensor([[0., 1.], [1., 0.]])
    matrix = gradient_affinity(losses, {0: [w]}, reduce=lambda g: (g + other) / 2)[0]
    assert matrix[0, 1].item() == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    assert gradient_affinity(losses, {0: [w]})[0][0, 1].item() == pytest.approx(1.0)


def test_non_finite_gradient_is_an_error_naming_the_task():
    w = nn.Parameter(torch.ones(2))
    losses = dict(a=w.sum(), b=(w * float('nan')).sum())
    with pytest.raises(FloatingPointError, match=r"stage 0: the gradient of task\(s\) \['b'\]"):
        gradient_affinity(losses, {0: [w]})


def test_propose_groups_threshold_stops_merging_below_it():
    losses, params = constructed_losses()
    matrix = gradient_affinity(losses, params)[0]
    assert propose_groups(matrix, TASKS) == [['a', 'b'], ['c']]  # default threshold 0
    assert propose_groups(matrix, TASKS, threshold=0.5) == [['a', 'b'], ['c']]
    assert propose_groups(matrix, TASKS, threshold=1.5) == [['a'], ['b'], ['c']]
    assert propose_groups(matrix, TASKS, threshold=-1.0) == [['a', 'b', 'c']]
    assert propose_groups(matrix, TASKS, num_groups=1) == [['a', 'b', 'c']]
    assert propose_groups(matrix, TASKS, num_groups=1, threshold=0.0) == [['a', 'b'], ['c']]  # whichever stops first


def test_propose_groups_in_tree_mode_refines_the_parent_groups():
    losses, params = constructed_losses()
    matrix = gradient_affinity(losses, params)[0]  # a and b would merge first
    parent = [['a', 'c'], ['b']]
    assert propose_groups(matrix, TASKS, num_groups=2, parent_groups=parent) == [['a', 'c'], ['b']]
    assert propose_groups(matrix, TASKS, num_groups=1, parent_groups=parent) == [['a', 'c'], ['b']]
    assert propose_groups(matrix, TASKS, threshold=0.0, parent_groups=parent) == [['a'], ['b'], ['c']]
    with pytest.raises(ValueError, match='not a partition'):
        propose_groups(matrix, TASKS, num_groups=2, parent_groups=[['a'], ['b']])


def test_propose_groups_uses_average_linkage_and_tasks_order():
    # p, q merge first; then {p, q}–r averages 0.4 < r–s 0.5 (single linkage would take p–r's 0.8)
    tasks = ['p', 'q', 'r', 's']
    affinity = [[1, .9, .8, 0], [.9, 1, 0, 0], [.8, 0, 1, .5], [0, 0, .5, 1]]
    assert propose_groups(affinity, tasks, num_groups=2) == [['p', 'q'], ['r', 's']]
    # the same affinities with the tasks listed in another order: groups and members follow that order
    order = [3, 1, 2, 0]
    permuted = [[affinity[i][j] for j in order] for i in order]
    assert propose_groups(permuted, [tasks[i] for i in order], num_groups=2) == [['s', 'r'], ['q', 'p']]
    # w–z merge first, then x joins them: the group lists its tasks in tasks order, not in merge order
    affinity = [[1, .8, 0, .9], [.8, 1, 0, .6], [0, 0, 1, 0], [.9, .6, 0, 1]]
    assert propose_groups(affinity, ['w', 'x', 'y', 'z'], num_groups=2) == [['w', 'x', 'z'], ['y']]
    with pytest.raises(ValueError, match='num_groups=0'):
        propose_groups(affinity, tasks, num_groups=0)
    with pytest.raises(ValueError, match=r'shape \(4, 4\), expected \(3, 3\)'):
        propose_groups(affinity, tasks[:3], num_groups=1)


class TinyBackbone(nn.Module):
    """Stage 0 with a LoRA adapter (shared pair and per-task pairs), stage 1 without adapters."""

    def __init__(self):
        super().__init__()
        self.patch_embed = nn.Linear(2, 4)
        self.stages = nn.ModuleList([nn.Sequential(LoRALinear(nn.Linear(4, 4), rank=2, tasks=['a', 'b'])),
                                     nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))])
        self.stages[1][2].bias.requires_grad_(False)

    def forward(self, x):
        return self.stages[1](self.stages[0](self.patch_embed(x)))


def test_stage_shared_parameters_takes_shared_adapters_else_all_trainable():
    stages = stage_shared_parameters(TinyBackbone())
    assert sorted(stages) == [0, 1]
    assert stages[0].source == 'adapters'
    assert [n for n, _ in stages[0]] == ['stages.0.0.lora_A', 'stages.0.0.lora_B']  # no lora_tasks_*, no base weight
    assert stages[1].source == 'all_trainable'
    assert [n for n, _ in stages[1]] == ['stages.1.0.weight', 'stages.1.0.bias', 'stages.1.1.weight',
                                         'stages.1.1.bias', 'stages.1.2.weight']  # the frozen bias left out
    assert sum(p.numel() for _, p in stages[0]) == 2 * 4 + 4 * 2  # A (2×4) and B (4×2)
    with pytest.raises(ValueError, match='no parameter named stages.<i>'):
        stage_shared_parameters(nn.Sequential(nn.Linear(2, 2)))


class TinySegmentor(nn.Module):
    """``data_preprocessor`` / ``loss`` as a segmentor's; task c's loss is minus task a's."""
    tasks = ('a', 'b', 'c')

    def __init__(self):
        super().__init__()
        self.backbone = TinyBackbone()
        self.data_preprocessor = lambda batch, training: dict(inputs=batch * (2.0 if training else 0.0))
        self.modes = []

    def loss(self, inputs):
        self.modes.append(self.training)
        out = self.backbone(inputs)
        return {'a.loss_main': out[:, 0].square().mean(), 'a.loss_aux': out[:, 2].mean(),
                'b.loss_main': out[:, 1].square().mean(), 'b.acc': out.sum() * 100,
                'c.loss_main': -out[:, 0].square().mean() - out[:, 2].mean()}


def test_task_loss_sums_adds_each_tasks_loss_entries_only():
    losses = {'a.loss_x': torch.tensor(1.), 'a.acc': torch.tensor(5.), 'ab.loss_x': torch.tensor(7.),
              'ab.loss_y': torch.tensor(2.)}
    sums = task_loss_sums(losses, ['a', 'ab'])
    assert sums['a'].item() == 1.0 and sums['ab'].item() == 9.0
    with pytest.raises(KeyError, match="no loss for task 'b'"):
        task_loss_sums(losses, ['b'])


def test_measure_averages_batches_in_train_mode_and_changes_nothing():
    torch.manual_seed(0)
    model = TinySegmentor()
    with torch.no_grad():  # a non-zero B so that the shared LoRA pair has gradients in both factors
        model.backbone.stages[0][0].lora_B.normal_()
    model.eval()
    batches = [torch.randn(4, 2), torch.randn(4, 2)]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    result = measure_task_affinity(model, batches, iters=3, log_interval=1)  # cycles: batch 0, 1, 0
    assert model.modes == [True] * 3 and not model.training  # train mode while measuring, then as before
    for key, value in model.state_dict().items():  # parameters and BN statistics as they were
        assert torch.equal(value, state[key]), key
    assert all(p.grad is None for p in model.parameters())
    assert result.tasks == ['a', 'b', 'c'] and result.iterations == 3 and result.world_size == 1
    assert result.parameters[0]['parameters'] == 'adapters' and result.parameters[1]['parameters'] == 'all_trainable'
    params = {s: [p for _, p in named] for s, named in stage_shared_parameters(model.backbone).items()}
    model.train()
    per_batch = [gradient_affinity(task_loss_sums(model.loss(batch * 2.0), model.tasks), params)
                 for batch in (batches[0], batches[1], batches[0])]
    for stage in (0, 1):
        torch.testing.assert_close(result.matrices[stage], sum(m[stage] for m in per_batch) / 3)
        assert result.matrices[stage][0, 2].item() == pytest.approx(-1.0, abs=1e-6)  # c = −a in every batch
        assert abs(result.matrices[stage][0, 1].item()) < 1 - 1e-3  # a and b differ
    assert result.zero_gradient_batches[0] == dict(a=0, b=0, c=0)


class SometimesUnlabelled(TinySegmentor):
    """As :class:`TinySegmentor`, but task c has no labels (a constant loss) in batches whose first input is < 0."""

    def loss(self, inputs):
        losses = super().loss(inputs)
        if inputs[0, 0] < 0:
            losses['c.loss_main'] = inputs.new_zeros(())
        return losses


def test_a_batch_without_a_tasks_gradient_is_left_out_of_that_tasks_averages():
    torch.manual_seed(0)
    model = SometimesUnlabelled()
    with torch.no_grad():
        model.backbone.stages[0][0].lora_B.normal_()
    labelled, unlabelled = torch.randn(4, 2).abs(), -torch.randn(4, 2).abs()
    result = measure_task_affinity(model, [labelled, unlabelled, unlabelled], iters=3)
    assert result.zero_gradient_batches[0] == dict(a=0, b=0, c=2)
    for stage in (0, 1):
        matrix = result.matrices[stage]
        torch.testing.assert_close(matrix.diagonal(), torch.ones(3, dtype=matrix.dtype))  # not 1/3 for c
        assert matrix[0, 2].item() == pytest.approx(-1.0, abs=1e-6)  # c = −a in its one labelled batch


def test_written_group_config_inherits_the_base_and_parses(tmp_path):
    base = tmp_path / 'configs' / 'base.py'
    base.parent.mkdir()
    base.write_text("model = dict(type='M', backbone=dict(type='B', depth=2))\nfoo = 1\n")
    groups = [[['a', 'b', 'c']], [['a', 'b'], ['c']], [['a'], ['b'], ['c']]]
    path = write_group_config(str(tmp_path / 'out' / 'groups.py'), str(base), groups, 'tree',
                              provenance='measured by a test\n5 batches')
    text = (tmp_path / 'out' / 'groups.py').read_text()
    assert text.startswith('# measured by a test\n# 5 batches\n') and "_base_ = ['../configs/base.py']" in text
    cfg = Config.fromfile(path)
    assert cfg.foo == 1 and cfg.model.type == 'M' and cfg.model.backbone.depth == 2
    assert cfg.model.backbone.task_groups == groups and cfg.model.backbone.branch_mode == 'tree'
    assert not list((tmp_path / 'out').glob('*.tmp'))


def test_task_groups_check_refuses_non_partitions_and_non_refinements():
    check_task_groups([[['a', 'b']], [['b'], ['a']]], 'tree')
    with pytest.raises(ValueError, match=r"branch_mode='tree': task_groups\[2\] puts \['a', 'c'\] in one group"):
        check_task_groups([[['a', 'b', 'c']], [['a', 'b'], ['c']], [['a', 'c'], ['b']]], 'tree')
    check_task_groups([[['a', 'b', 'c']], [['a', 'b'], ['c']], [['a', 'c'], ['b']]], 'side')
    with pytest.raises(ValueError, match=r"task_groups\[1\] \[\['a'\]\] is not a partition .* in no group \['b'\]"):
        check_task_groups([[['a', 'b']], [['a']]], 'side')
    with pytest.raises(ValueError, match="branch_mode must be one of .* got 'sideways'"):
        check_task_groups([[['a']]], 'sideways')


def _two_rank_affinity(rank: int, out_dir: str) -> None:
    """Rank 0: g_a = (1, 0), g_b = (1, 0). Rank 1: g_a = (0, 1), g_b = (1, 0)."""
    w = nn.Parameter(torch.zeros(2))
    losses = dict(a=w[0] if rank == 0 else w[1], b=w[0] * 1.0)
    matrix = gradient_affinity(losses, {0: [w]})[0]  # no reduce given: the process group's mean
    torch.save(matrix, os.path.join(out_dir, f'rank{rank}.pt'))


def test_two_process_gloo_averages_gradients_not_cosines(tmp_path):
    spawn_two_gloo_ranks(_two_rank_affinity, tmp_path)
    for rank in (0, 1):
        matrix = torch.load(tmp_path / f'rank{rank}.pt')
        # cos((.5, .5), (1, 0)) = 0.7071; the mean of the per-rank cosines would be (1 + 0) / 2 = 0.5
        assert matrix[0, 1].item() == pytest.approx(1 / math.sqrt(2), abs=1e-6), rank
        assert matrix[0, 0].item() == pytest.approx(1.0)
