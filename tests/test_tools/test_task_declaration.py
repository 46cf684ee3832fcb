"""tools/train.py with the task list changed from the command line, and mismatches refused before training.

The tiny config inherits the paper's four PASCAL tasks from the dataset base;
``--cfg-options "tasks=[...]"`` must change the model's heads, the data and
the metrics together, and a part naming other tasks must stop the run before
its first iteration.
"""
import pytest
import torch

from ditask_mm.datasets.synthetic import generate

from .cli_utils import scalars, tiny_config, train

PASCAL_TASKS = ['semseg', 'human_parts', 'sal', 'normals']
ONE_EPOCH = ('train_cfg.max_epochs=1', 'train_cfg.val_interval=1')


@pytest.fixture(scope='module')
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('tasks')
    data = root / 'PASCAL_MT'
    generate('pascal', str(data), num_train=4, num_val=2, size=(48, 64), seed=1)
    return root, tiny_config(root / 'tiny.py', data)


def test_cfg_options_tasks_train_exactly_those_heads_and_metrics(tiny_setup):
    root, config = tiny_setup
    work = root / 'two_tasks'
    train(config, work, '--cfg-options', "tasks=['semseg','sal']", *ONE_EPOCH)
    state = torch.load(work / 'epoch_1.pth', map_location='cpu', weights_only=False)['state_dict']
    heads = {key.split('.')[1] for key in state if key.startswith('decode_heads.')}
    assert heads == {'semseg', 'sal'}
    records = scalars(work)
    losses = {key for record in records for key in record if '.loss_' in key}
    assert losses == {'semseg.loss_ce', 'sal.loss_balanced_bce'}
    evaluated = {key.split('.')[0] for record in records for key in record
                 if key.split('.')[0] in PASCAL_TASKS and '.loss_' not in key}
    assert evaluated == {'semseg', 'sal'}
    assert any('delta_m' in record for record in records)  # from the two tasks' baselines, the others ignored


@pytest.mark.parametrize('option,key', [
    ("model.tasks=['semseg','sal']", 'model.tasks'),
    ("train_dataloader.dataset.tasks=['semseg','sal']", 'train_dataloader.dataset.tasks'),
    ("val_evaluator.tasks=['semseg','sal']", 'val_evaluator.tasks'),
])
def test_a_part_naming_other_tasks_fails_before_the_first_iteration(tiny_setup, option, key):
    root, config = tiny_setup
    work = root / key.replace('.', '_')
    proc = train(config, work, '--cfg-options', option, *ONE_EPOCH, check=False)
    assert proc.returncode != 0
    assert f"{key} ['semseg', 'sal'] differs from tasks {PASCAL_TASKS} (config top level)" in proc.stderr
    assert not (work / 'epoch_1.pth').exists() and not list(work.glob('**/*.pth'))
