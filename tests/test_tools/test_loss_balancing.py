"""A loss balancer on the user's path: tools/train.py with model.loss_balancer, its hook, its logged weights."""
import pytest

from ditask_mm.datasets.synthetic import generate

from .cli_utils import scalars, tiny_config, train, weights

TASKS = ('semseg', 'human_parts', 'sal', 'normals')


@pytest.fixture(scope='module')
def dwa_run(tmp_path_factory):
    root = tmp_path_factory.mktemp('balancing')
    generate('pascal', str(root / 'PASCAL_MT'), num_train=4, num_val=2, size=(48, 64), seed=3)
    config = tiny_config(root / 'dwa.py', root / 'PASCAL_MT', extra="model['loss_balancer'] = dict(type='DWA')\n")
    proc = train(config, root / 'work')  # 3 epochs; no LossBalancerHook in the config
    return root, proc


def test_the_runner_adds_the_balancer_hook_and_dwa_moves_its_weights_after_two_epochs(dwa_run):
    root, proc = dwa_run
    assert 'added LossBalancerHook: model.loss_balancer is DWA' in proc.stdout + proc.stderr
    logged = [r for r in scalars(root / 'work') if 'balance.weight.semseg' in r]
    assert logged, 'the weights are not in scalars.json'
    by_epoch = {r['epoch']: [r[f'balance.weight.{t}'] for t in TASKS] for r in logged}
    assert by_epoch[1] == [1.0] * 4 and by_epoch[2] == [1.0] * 4  # DWA: weights 1 for the first two epochs
    assert by_epoch[3] != [1.0] * 4 and sum(by_epoch[3]) == pytest.approx(4.0, abs=1e-4)  # T·softmax
    state = weights(root / 'work/epoch_3.pth')
    assert int(state['loss_balancer.completed_epochs']) == 3  # the hook ran at every epoch end, before the save
