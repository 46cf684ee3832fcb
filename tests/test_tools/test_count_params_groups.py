"""Per task-group adapter counts: ``count_parameters(...)['adapter_by_group']`` and count_params.py's table/JSON."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch.nn as nn

import ditask_mm  # noqa: F401
from ditask_mm.adapters import DiTASKLinear, LoRALinear, inject_adapters
from ditask_mm.analysis import count_parameters
from ditask_mm.analysis.parameters import adapter_group_key

REPO = Path(__file__).resolve().parents[2]
GROUPS = ['semseg+human_parts', 'sal']


class GroupedModel(nn.Module):
    """Three adapted linears in ``backbone`` and a plain head.

    * ``first`` (8 → 8): LoRA rank 2 for ``sal`` only, no shared pair: 2·(8+8) = 32 for ``sal``.
    * ``second`` (8 → 16): DiTASK, shared tessellation 8 (θ of 7) and tessellation 4 per group (θ of 3).
    * ``third`` (16 → 8): LoRA rank 3, shared and per group: 3·(16+8) = 72 each.
    """

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.ModuleDict(dict(first=nn.Linear(8, 8), second=nn.Linear(8, 16), third=nn.Linear(16, 8)))
        self.decode_head = nn.Linear(8, 3)
        inject_adapters(self.backbone, dict(adapter=dict(type='LoRALinear', rank=2), target_modules=['first', 'third'],
                                            overrides=[dict(pattern='first', tasks=['sal'], shared=False),
                                                       dict(pattern='third', rank=3, tasks=GROUPS)]))
        inject_adapters(self.backbone, dict(adapter=dict(type='DiTASKLinear', tessellation_size=8,
                                                         task_tessellation_size=4, tasks=GROUPS),
                                            target_modules=['second']))


@pytest.fixture
def counts():
    return count_parameters(GroupedModel())


def load_tool():
    spec = importlib.util.spec_from_file_location('count_params', REPO / 'tools/analysis_tools/count_params.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_group_key_is_the_second_name_part_of_task_parameters():
    assert adapter_group_key('theta_tasks.semseg+human_parts') == 'semseg+human_parts'
    assert adapter_group_key('lora_tasks_A.sal') == 'sal'
    assert adapter_group_key('lora_tasks_B.semseg+human_parts') == 'semseg+human_parts'
    assert adapter_group_key('lora_shared_A') is None
    assert adapter_group_key('lora_A') is None and adapter_group_key('theta_shared') is None


def test_the_model_is_what_the_counts_below_assume():
    model = GroupedModel()
    first, second, third = (model.backbone[k] for k in ('first', 'second', 'third'))
    assert isinstance(first, LoRALinear) and first.tasks == ('sal', ) and first.lora_A is None
    assert isinstance(second, DiTASKLinear) and second.tasks == tuple(GROUPS)
    assert second.shared_transform.theta_dim == 7 and second.task_transforms['sal'].theta_dim == 3
    assert isinstance(third, LoRALinear) and third.tasks == tuple(GROUPS) and third.rank == 3


def test_counts_per_group_in_order_of_first_appearance(counts):
    # sal: 32 (first) + 3 (second) + 72 (third); semseg+human_parts: 3 (second) + 72 (third)
    assert counts['adapter_by_group'] == {'sal': 107, 'semseg+human_parts': 75}
    assert list(counts['adapter_by_group']) == ['sal', 'semseg+human_parts']
    assert counts['adapter_task'] == 182 == sum(counts['adapter_by_group'].values())
    assert counts['adapter_shared'] == 7 + 72 and counts['adapter'] == 79 + 182
    assert counts['other_backbone'] == 0 and counts['backbone_trainable'] == 261
    assert counts['decode_heads'] == 8 * 3 + 3 and counts['total_trainable'] == 261 + 27


def test_frozen_group_parameters_are_not_counted():
    model = GroupedModel()
    model.backbone['third'].lora_tasks_A['sal'].requires_grad_(False)  # 3 × 16
    counts = count_parameters(model)
    assert counts['adapter_by_group'] == {'sal': 107 - 48, 'semseg+human_parts': 75}
    assert counts['adapter_task'] == 182 - 48


def test_json_summary_adds_the_groups_and_keeps_the_other_keys(counts):
    summary = load_tool().json_summary(counts)
    assert summary == {'backbone_trainable': 261, 'adapter': 261, 'decode_heads': 27, 'total_trainable': 288,
                       'total': counts['total'], 'adapter_by_group': {'sal': 107, 'semseg+human_parts': 75}}
    assert list(json.loads(json.dumps(summary))['adapter_by_group']) == ['sal', 'semseg+human_parts']


def test_table_has_one_row_per_group_after_the_per_task_row(counts):
    table = load_tool().format_table('grouped.py', counts)
    lines = table.splitlines()
    assert lines[0] == 'grouped.py' and lines[1].startswith('| group ')
    assert len({len(line) for line in lines[1:]}) == 1  # the columns line up with the longest label
    labels = [line.split('|')[1].strip() for line in lines[3:]]
    values = [line.split('|')[2].strip() for line in lines[3:]]
    assert labels[:4] == ['adapter, shared', 'adapter, per task', 'adapter, group sal',
                          'adapter, group semseg+human_parts']
    assert values[:4] == ['79', '182', '107', '75']
    assert labels[4:] == ['other backbone', 'backbone trainable', 'decode heads', 'total trainable',
                          'total (incl. frozen)']
