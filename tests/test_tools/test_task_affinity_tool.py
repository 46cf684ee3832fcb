"""``tools/analysis_tools/task_affinity.py`` end to end on the tiny DiTASK Swin and the generated PASCAL_MT tree.

One run through the command line from the config's initial weights (seed 0),
one in this process from a checkpoint of those same weights: the matrices
must agree (the tool changes nothing and is deterministic given the seed).
"""
import importlib.util
import json
import os
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import set_random_seed

from ditask_mm.apis import init_model
from ditask_mm.datasets.synthetic import generate
from ditask_mm.engine.config_loading import load_run_config

from .cli_utils import REPO, run, tiny_config

TOOL = REPO / 'tools/analysis_tools/task_affinity.py'
TASKS = ['semseg', 'human_parts', 'sal', 'normals']
GROUP_COUNTS = [1, 1, 2, 4]


def load_tool():
    spec = importlib.util.spec_from_file_location('task_affinity_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def affinity_run(tmp_path_factory):
    """The tiny config, a checkpoint of its seed-0 initial weights, and one command-line run without it."""
    root = tmp_path_factory.mktemp('task_affinity')
    data = root / 'PASCAL_MT'
    generate('pascal', str(data), num_train=6, num_val=2, size=(48, 64), seed=1)
    config = tiny_config(root / 'tiny.py', data)
    set_random_seed(0)  # what the tool does before building the model
    model = init_model(load_run_config(str(config)))
    checkpoint = root / 'init.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), checkpoint)
    out, written = root / 'from_init', root / 'groups' / 'tiny_groups.py'
    run([sys.executable, TOOL, config, '--iters', '2', '--out', out, '--num-groups', *GROUP_COUNTS,
         '--write-config', written])
    return root, config, checkpoint, out, written


def test_writes_matrices_figure_and_a_config_with_the_proposed_groups(affinity_run):
    root, config, _, out, written = affinity_run
    report = json.loads((out / 'affinity.json').read_text())
    assert report['tasks'] == TASKS and report['iterations'] == 2 and report['world_size'] == 1
    assert [s['stage'] for s in report['stages']] == [0, 1, 2, 3]
    for stage, count in zip(report['stages'], GROUP_COUNTS):
        matrix = torch.tensor(stage['matrix'])
        assert matrix.shape == (4, 4)
        torch.testing.assert_close(matrix.diagonal(), torch.ones(4))
        torch.testing.assert_close(matrix, matrix.T)
        assert matrix.min() >= -1 and matrix.max() <= 1
        assert stage['parameters'] == 'adapters' and stage['num_parameters'] > 0
        assert stage['parameter_names'] and all(n.startswith(f"stages.{stage['stage']}.") and 'tasks' not in n
                                                for n in stage['parameter_names'])
        assert len(stage['groups']) == count and sorted(t for g in stage['groups'] for t in g) == sorted(TASKS)
    assert (out / 'affinity.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    cfg = Config.fromfile(str(written))
    assert cfg.model.backbone.task_groups == [s['groups'] for s in report['stages']]
    assert cfg.model.backbone.branch_mode == 'side'
    assert cfg.data_root == str(root / 'PASCAL_MT')  # inherits the measured config
    assert written.read_text().startswith('# task_groups proposed by gradient affinity')
    # the written config builds a backbone with those groups
    backbone = init_model(load_run_config(str(written)), init_weights=False).backbone
    assert [[list(g) for g in plan.groups] for plan in backbone.plan] == [s['groups'] for s in report['stages']]


def test_same_matrices_from_a_checkpoint_of_the_same_weights(affinity_run, monkeypatch):
    root, config, checkpoint, out, _ = affinity_run
    monkeypatch.setenv('LOCAL_RANK', '0')  # what the tool would set in this process's environment
    again = root / 'from_checkpoint'
    load_tool().main([str(config), '--checkpoint', str(checkpoint), '--iters', '2', '--out', str(again),
                      '--num-groups', '2', '--mode', 'tree'])
    first = json.loads((out / 'affinity.json').read_text())['stages']
    second = json.loads((again / 'affinity.json').read_text())
    assert second['checkpoint'] == str(checkpoint) and second['mode'] == 'tree'
    for a, b in zip(first, second['stages']):  # other weights or batches would differ by ~0.1, not 1e-5
        torch.testing.assert_close(torch.tensor(b['matrix']), torch.tensor(a['matrix']), atol=1e-5, rtol=0)
    for parent, child in zip(second['stages'], second['stages'][1:]):  # tree mode: every stage refines the last
        owner = {t: i for i, g in enumerate(parent['groups']) for t in g}
        assert all(len({owner[t] for t in g}) == 1 for g in child['groups'])


def test_a_checkpoint_is_read_other_weights_give_other_matrices(affinity_run, monkeypatch):
    root, config, checkpoint, out, _ = affinity_run
    monkeypatch.setenv('LOCAL_RANK', '0')
    state = torch.load(checkpoint, weights_only=False)['state_dict']
    generator = torch.Generator().manual_seed(3)
    moved = {k: v + 0.3 * torch.randn(v.shape, generator=generator) if 'theta_' in k else v for k, v in state.items()}
    torch.save(dict(state_dict=moved, meta=dict()), root / 'moved.pth')
    load_tool().main([str(config), '--checkpoint', str(root / 'moved.pth'), '--iters', '2',
                      '--out', str(root / 'from_moved')])
    first = json.loads((out / 'affinity.json').read_text())['stages']
    second = json.loads((root / 'from_moved' / 'affinity.json').read_text())['stages']
    change = max((torch.tensor(b['matrix']) - torch.tensor(a['matrix'])).abs().max() for a, b in zip(first, second))
    assert change > 1e-3


def test_two_processes_through_torchrun_average_over_the_ranks_and_write_once(affinity_run):
    root, config, _, _, _ = affinity_run
    out = root / 'ddp'
    port = str(29600 + os.getpid() % 1000)
    run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', port, TOOL, config,
         '--iters', '2', '--out', out, '--launcher', 'pytorch'])
    report = json.loads((out / 'affinity.json').read_text())
    assert report['world_size'] == 2 and report['iterations'] == 2
    for stage in report['stages']:  # the tasks' pairs over the global batch: every diagonal is 1
        torch.testing.assert_close(torch.tensor(stage['matrix'], dtype=torch.float64).diagonal(),
                                   torch.ones(4, dtype=torch.float64))
    assert sorted(p.name for p in out.iterdir()) == ['affinity.json', 'affinity.png']  # rank 0 alone writes


def test_group_counts_per_stage_must_be_one_value_or_one_per_stage():
    tool = load_tool()
    assert tool.per_stage([3], 4, '--num-groups') == [3, 3, 3, 3]
    assert tool.per_stage(None, 2, '--threshold') == [None, None]
    with pytest.raises(SystemExit, match='--num-groups 1 2: expected one value or 4'):
        tool.per_stage([1, 2], 4, '--num-groups')
