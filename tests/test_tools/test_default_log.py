"""The default log of a 1-epoch tiny run is readable; mmengine's per-parameter lines are at DEBUG.

Measured on the tiny config of :mod:`.cli_utils` with a local pretrained file
(``tools/train.py CONFIG --cfg-options train_cfg.max_epochs=1``): before the
log filter the console got 609 lines and the log file 1309 (per-parameter
``init_weights`` table, ``paramwise_options -- ...`` and ``... is skipped since
its requires_grad=False`` lines, the hook order); after it, about 390 each,
most of them the config dump.
"""
import re
from pathlib import Path

import pytest
import torch

from ditask_mm.datasets.synthetic import generate

from ..test_models.test_backbones.swin_checkpoints import SwinArch, make_official_checkpoint
from .cli_utils import TINY_ARCH, evaluate, tiny_config, train

#: Upper bounds on the lines of a 1-epoch tiny run (measured: about 390 on the console and in the log file).
MAX_CONSOLE_LINES = 450
MAX_LOG_FILE_LINES = 450
#: Lines that say a checkpoint file was read.
LOAD_LINE = re.compile(r'Loads? checkpoint|Swin checkpoint \S+ \(\w+\): loaded|loaded \d+ tensors from')
PER_PARAMETER = ('paramwise_options -- ', 'is skipped since its requires_grad=False', 'Initialized by',
                 'Name of parameter - Initialization information')


def log_file_lines(work_dir: Path) -> list:
    files = sorted(work_dir.glob('*/*.log'))
    assert len(files) == 1, files
    return files[0].read_text().splitlines()


def load_lines(text: str, path: Path) -> list:
    return [line for line in text.splitlines() if LOAD_LINE.search(line) and str(path) in line]


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp('default_log')
    data = root / 'PASCAL_MT'
    generate('pascal', str(data), num_train=6, num_val=5, size=(48, 64), seed=1)
    pretrained = root / 'swin_tiny_official.pth'
    torch.save(make_official_checkpoint(SwinArch(**TINY_ARCH), seed=3), pretrained)
    return root, tiny_config(root / 'tiny.py', data, pretrained), pretrained


def test_a_one_epoch_run_logs_no_per_parameter_lines_and_each_file_once(tiny):
    root, config, pretrained = tiny
    proc = train(config, root / 'info', '--cfg-options', 'train_cfg.max_epochs=1')
    console = proc.stdout + proc.stderr
    log_file = log_file_lines(root / 'info')
    assert len(console.splitlines()) < MAX_CONSOLE_LINES, len(console.splitlines())
    assert len(log_file) < MAX_LOG_FILE_LINES, len(log_file)
    for text in (console, '\n'.join(log_file)):
        for marker in PER_PARAMETER:
            assert marker not in text, marker
        assert 'Hooks will be executed in the following order' not in text
        assert len(load_lines(text, pretrained)) == 1, load_lines(text, pretrained)
    assert re.search(r'optimizer: \d+ frozen parameters \(requires_grad=False\) left out, \d+ with paramwise', console)
    proc = evaluate(config, root / 'info/epoch_1.pth', root / 'test')
    loaded = load_lines(proc.stdout + proc.stderr, root / 'info/epoch_1.pth')
    assert loaded == [line for line in loaded if 'Load checkpoint from' in line] and len(loaded) == 1, loaded


def test_log_level_debug_still_shows_the_demoted_lines(tiny):
    root, config, _ = tiny
    proc = train(config, root / 'debug', '--cfg-options', 'train_cfg.max_epochs=1', 'log_level=DEBUG')
    console = proc.stdout + proc.stderr
    log_file = '\n'.join(log_file_lines(root / 'debug'))
    for text in (console, log_file):
        for marker in PER_PARAMETER:
            assert marker in text, marker
        assert 'Hooks will be executed in the following order' in text
        assert re.search(r'- DEBUG - paramwise_options -- backbone\.\S+:weight_decay=0\.0', text)
    init_table = log_file[log_file.index('Name of parameter - Initialization information'):]
    assert re.search(r'backbone\.patch_embed\.projection\.weight - \(16, 3, 4, 4\): .*Initialized by', init_table)
