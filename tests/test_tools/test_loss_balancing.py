"""A loss balancer on the user's path: tools/train.py with model.loss_balancer, its hook, its logged weights."""
import pytest
import torch

from ditask_mm.datasets.synthetic import generate

from .cli_utils import dist_env, evaluate, metrics, run, scalars, tiny_config, train, weights

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


def test_pcgrad_under_two_gloo_ranks_wraps_in_gradient_balancing_ddp_and_logs_the_weights(tmp_path):
    """tools/dist_train.sh with a gradient-level balancer: the runner picks the wrapper, the log has the weights."""
    generate('pascal', str(tmp_path / 'PASCAL_MT'), num_train=4, num_val=2, size=(48, 64), seed=3)
    config = tiny_config(tmp_path / 'pcgrad.py', tmp_path / 'PASCAL_MT',
                         extra="model['loss_balancer'] = dict(type='PCGrad')\n")
    work = tmp_path / 'work'
    proc = run(['bash', 'tools/dist_train.sh', str(config), '2', '--work-dir', str(work),
                '--cfg-options', 'train_cfg.max_epochs=2', 'train_cfg.val_interval=2'], env=dist_env())
    assert 'DDP wrapper GradientBalancingDDP' in proc.stdout + proc.stderr
    logged = [r for r in scalars(work) if 'balance.weight.semseg' in r]
    assert len(logged) == 2, 'one logged iteration per epoch expected (4 images, 2 ranks, batch 2)'
    for record in logged:
        assert record['balance.skipped_step'] == 0
        assert sum(record[f'balance.share.{t}'] for t in TASKS) == pytest.approx(1.0, abs=1e-3)
        assert all(record[f'balance.weight.{t}'] > 0 for t in TASKS)
    first, second = weights(work / 'epoch_1.pth'), weights(work / 'epoch_2.pth')
    assert not any(key.startswith('loss_balancer.') for key in second)  # PCGrad has no state to save
    shared = [k for k in second if 'theta_shared' in k]
    assert shared and any(not torch.equal(first[k], second[k]) for k in shared), 'the shared θ did not train'
    evaluate(config, work / 'epoch_2.pth', tmp_path / 'test')
    assert {'semseg.mIoU', 'human_parts.mIoU', 'sal.maxF', 'normals.mean', 'delta_m'} <= set(metrics(tmp_path / 'test'))
