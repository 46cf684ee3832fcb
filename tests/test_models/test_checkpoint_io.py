"""The one checkpoint reader, the one state-dict comparison and the one fit check."""
import logging

import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from torch import nn

from ditask_mm.engine import check_checkpoint_fits as engine_check_checkpoint_fits
from ditask_mm.engine.log_filter import DemoteToDebug, init_info_at_debug, optimizer_summary
from ditask_mm.models.adapter_checkpoint import check_full_checkpoint, load_adapter_checkpoint
from ditask_mm.models.checkpoint_file import (CheckpointContents, CheckpointReadError, checkpoint_contents,
                                              read_checkpoint)
from ditask_mm.models.checkpoint_fit import (FULL_CHECKPOINT_ADVICE, CheckpointMismatchError, check_checkpoint_fits,
                                             compare_state_dicts)


class Net(nn.Module):
    def __init__(self, width: int = 3):
        super().__init__()
        self.backbone = nn.Linear(width, 4)
        self.head = nn.BatchNorm1d(4)


def model_state(seed: int = 0, width: int = 3) -> dict:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in Net(width).state_dict().items()}


def save(obj, path) -> str:
    torch.save(obj, path)
    return str(path)


# ------------------------------------------------------------------ reading
def test_every_layout_reads_into_the_same_type_and_state_dict(tmp_path):
    sd = model_state()
    adapter_part = {k: v for k, v in sd.items() if k.startswith('head.')}
    files = {
        'full': ({'meta': {'epoch': 2, 'iter': 6}, 'state_dict': sd, 'message_hub': {'x': 1}}, sd),
        'adapter_only': ({'meta': {'kind': 'adapter_only', 'keys': 5}, 'state_dict': adapter_part}, adapter_part),
        'official_swin': ({'model': sd}, sd),
        'bare': (sd, sd),
        'ddp': ({'state_dict': {f'module.{k}': v for k, v in sd.items()}}, sd),
    }
    for name, (obj, expected) in files.items():
        contents = read_checkpoint(save(obj, tmp_path / f'{name}.pth'))
        assert type(contents) is CheckpointContents, name
        assert contents.path == str(tmp_path / f'{name}.pth')
        assert list(contents.state_dict) == list(expected), name
        assert all(torch.equal(contents.state_dict[k], v) for k, v in expected.items()), name
        assert isinstance(contents.raw, dict) and contents.raw.keys() == obj.keys(), name
    assert read_checkpoint(str(tmp_path / 'full.pth')).meta == {'epoch': 2, 'iter': 6}
    assert read_checkpoint(str(tmp_path / 'full.pth')).raw['message_hub'] == {'x': 1}  # the training state
    assert read_checkpoint(str(tmp_path / 'adapter_only.pth')).meta['kind'] == 'adapter_only'
    assert read_checkpoint(str(tmp_path / 'bare.pth')).meta == {}


def test_an_already_read_object_gives_the_same_contents(tmp_path):
    obj = {'meta': {'kind': 'adapter_only'}, 'state_dict': model_state()}
    from_file = read_checkpoint(save(obj, tmp_path / 'a.pth'))
    in_memory = checkpoint_contents(obj, 'a.pth')
    assert in_memory.meta == from_file.meta and in_memory.state_dict.keys() == from_file.state_dict.keys()
    assert checkpoint_contents(from_file, 'ignored') is from_file


def test_unreadable_files_name_the_file_and_the_reason(tmp_path):
    with pytest.raises(CheckpointReadError, match='nope.pth does not exist') as info:
        read_checkpoint(str(tmp_path / 'nope.pth'))
    assert info.value.reason == 'missing'
    (tmp_path / 'empty.pth').write_bytes(b'')
    with pytest.raises(CheckpointReadError, match=r'empty\.pth cannot be read: it is empty') as info:
        read_checkpoint(str(tmp_path / 'empty.pth'))
    assert info.value.reason == 'empty'
    whole = save({'state_dict': model_state()}, tmp_path / 'whole.pth')
    data = open(whole, 'rb').read()
    (tmp_path / 'cut.pth').write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointReadError, match=r'cut\.pth cannot be read: it is truncated') as info:
        read_checkpoint(str(tmp_path / 'cut.pth'))
    assert info.value.reason == 'truncated' and 'whole.pth' in str(info.value)  # the good sibling is named
    with pytest.raises(CheckpointMismatchError, match=r'list\.pth: expected a dict, got list'):
        read_checkpoint(save([1, 2], tmp_path / 'list.pth'))
    with pytest.raises(CheckpointMismatchError, match=r'its state_dict is a list'):
        read_checkpoint(save({'state_dict': [1]}, tmp_path / 'bad_sd.pth'))


# ------------------------------------------------------------------ comparing
def test_compare_state_dicts_lists_missing_unexpected_and_shapes_in_order():
    model = model_state()
    ckpt = {'extra.w': torch.zeros(1), 'backbone.weight': torch.zeros(4, 5), 'head.weight': model['head.weight']}
    comparison = compare_state_dicts(model, ckpt)
    assert comparison.missing == [k for k in model if k not in ckpt]
    assert comparison.unexpected == ['extra.w']
    assert comparison.shape_mismatches == [('backbone.weight', (4, 5), (4, 3))]
    assert comparison.shape_lines() == ['backbone.weight: checkpoint (4, 5) vs model (4, 3)']
    assert compare_state_dicts(model, model_state(seed=1)) == compare_state_dicts(model, model)  # values don't count


# ------------------------------------------------------------------ deciding
def test_a_full_checkpoint_must_fit_exactly(tmp_path):
    model = Net()
    check_checkpoint_fits(model, save({'state_dict': model_state()}, tmp_path / 'ok.pth'))
    partial = {k: v for k, v in model_state().items() if k != 'backbone.bias'}
    path = save({'state_dict': partial}, tmp_path / 'partial.pth')
    with pytest.raises(CheckpointMismatchError) as info:
        check_checkpoint_fits(model, path)
    message = str(info.value)
    assert message.startswith(f'checkpoint {path} does not fit the model built from the config')
    assert '1 model keys the checkpoint lacks: backbone.bias' in message and message.endswith(FULL_CHECKPOINT_ADVICE)
    assert isinstance(info.value, ValueError) and isinstance(info.value, RuntimeError)
    other = save({'state_dict': model_state(width=5)}, tmp_path / 'wider.pth')
    with pytest.raises(CheckpointMismatchError, match=r'1 size mismatches: backbone.weight: checkpoint \(4, 5\) '
                                                      r'vs model \(4, 3\)'):
        check_checkpoint_fits(model, other)
    with pytest.raises(CheckpointMismatchError, match=r'1 model keys the checkpoint lacks'):
        check_full_checkpoint(model, path)  # the tools' name for the same check


def test_an_adapter_only_checkpoint_may_leave_keys_out_but_not_add_or_reshape(tmp_path):
    model = Net()
    heads = {k: v for k, v in model_state().items() if k.startswith('head.')}
    check_checkpoint_fits(model, save({'meta': {'kind': 'adapter_only'}, 'state_dict': heads}, tmp_path / 'a.pth'))
    path = save({'meta': {'kind': 'adapter_only'}, 'state_dict': {**heads, 'head.theta': torch.zeros(2)}},
                tmp_path / 'extra.pth')
    with pytest.raises(CheckpointMismatchError, match=r"extra\.pth: key 'head\.theta' \(shape \(2,\) in the file\) "
                                                      r'is not in the model'):
        check_checkpoint_fits(model, path)
    wide = {'backbone.weight': torch.zeros(4, 5), 'backbone.bias': torch.zeros(7)}
    path = save({'meta': {'kind': 'adapter_only'}, 'state_dict': wide}, tmp_path / 'wide.pth')
    with pytest.raises(CheckpointMismatchError, match=r"key 'backbone\.weight' has shape \(4, 5\) in the file but "
                                                      r'\(4, 3\) in the model \(1 more keys do not fit\)'):
        check_checkpoint_fits(model, path)
    with pytest.raises(CheckpointMismatchError, match=r'empty\.pth holds no tensors'):
        check_checkpoint_fits(model, save({'meta': {'kind': 'adapter_only'}, 'state_dict': {}}, tmp_path / 'empty.pth'))


def test_the_rules_follow_meta_kind_unless_told_and_ddp_wrappers_are_unwrapped(tmp_path):
    model = Net()
    heads = {k: v for k, v in model_state().items() if k.startswith('head.')}
    path = save({'meta': {}, 'state_dict': heads}, tmp_path / 'heads.pth')
    with pytest.raises(CheckpointMismatchError, match='model keys the checkpoint lacks'):
        check_checkpoint_fits(model, path)  # no kind: a full checkpoint
    check_checkpoint_fits(model, path, adapter_only=True)
    assert load_adapter_checkpoint(model, path, logger=logging.getLogger('test_checkpoint_io')) == len(heads)

    class Wrapper(nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    check_checkpoint_fits(Wrapper(model), save({'state_dict': model_state()}, tmp_path / 'full.pth'))
    assert engine_check_checkpoint_fits is check_checkpoint_fits


# ------------------------------------------------------------------ log filter
def test_demote_to_debug_hides_the_per_parameter_lines_at_info_and_counts_them():
    logger = logging.Logger('test_demote', level=logging.INFO)
    records = []
    handler = logging.Handler(level=logging.INFO)
    handler.emit = records.append
    logger.addHandler(handler)
    demote = DemoteToDebug()
    logger.addFilter(demote)
    logger.info('paramwise_options -- backbone.norm.bias:weight_decay=0.0')
    logger.warning('backbone.qkv.weight is skipped since its requires_grad=False')
    logger.info('Loads checkpoint by local backend from path: x.pth')
    logger.info('Load checkpoint from x.pth')
    logger.warning('something else')
    assert [r.getMessage() for r in records] == ['Load checkpoint from x.pth', 'something else']
    assert demote.counts == {'paramwise_options': 1, 'frozen_skipped': 1, 'mmengine_checkpoint_load': 1}
    assert '1 frozen parameters' in optimizer_summary(demote.counts) and optimizer_summary({}) is None
    handler.setLevel(logging.DEBUG)
    logger.setLevel(logging.DEBUG)
    logger.info('paramwise_options -- backbone.norm.weight:weight_decay=0.0')
    assert records[-1].levelname == 'DEBUG' and records[-1].getMessage().startswith('paramwise_options')


class ConstantNet(BaseModule):
    def __init__(self):
        super().__init__(init_cfg=dict(type='Constant', val=1.0, layer='Linear'))
        self.fc = nn.Linear(2, 2)


@pytest.mark.parametrize('level', ['INFO', 'DEBUG'])
def test_the_init_weights_table_goes_to_the_log_file_only_at_debug(tmp_path, level):
    log_file = tmp_path / 'run.log'
    MMLogger.get_instance(f'test_init_info_{level}', log_file=str(log_file), log_level=level)  # the current one
    plain = ConstantNet()
    plain.init_weights()  # mmengine writes its table straight into the file, whatever the level
    assert 'Name of parameter - Initialization information' in log_file.read_text()
    start = len(log_file.read_text())
    net = ConstantNet()
    with init_info_at_debug(net):
        net.init_weights()
    assert '_dump_init_info' not in net.__dict__  # the method is back
    text = log_file.read_text()[start:]
    assert torch.equal(net.fc.weight, torch.ones(2, 2))  # initialised all the same
    if level == 'INFO':
        assert 'Initialization information' not in text and 'fc.weight' not in text
    else:
        assert '- DEBUG - Name of parameter - Initialization information' in text
        assert 'fc.weight - (2, 2): ConstantInit: val=1.0, bias=0' in text
