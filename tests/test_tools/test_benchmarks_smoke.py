"""The benchmark scripts run end to end on tiny sizes (no timing is asserted)."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_adapters_smoke(tmp_path):
    out = tmp_path / 'adapters.json'
    proc = subprocess.run([sys.executable, str(REPO / 'tools/benchmarks/bench_adapters.py'), '--token-scale', '0.0005',
                           '--iters', '1', '--warmup', '1', '--variants', 'ditask', 'lora_r64', 'frozen',
                           '--json', str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    records = {r['variant']: r for r in json.loads(out.read_text())}
    assert set(records) == {'ditask', 'lora_r64', 'frozen'}
    assert records['ditask']['trainable_params'] == 16 * 63  # one shared θ (tessellation 64) per matrix
    assert records['lora_r64']['trainable_params'] == sum(
        64 * (fi + fo) for c in (96, 192, 384, 768) for fi, fo in ((c, 3 * c), (c, c), (c, 4 * c), (4 * c, c)))
    assert '| ditask |' in proc.stdout and 'DiTASK time / LoRA r=64 time' in proc.stdout


def run_bench_train_step(out, variants):
    """bench_train_step.py on ``variants`` at a tiny size: the finished process and ``{variant: record}``."""
    # --threads 1: the benchmark stays usable when other processes share the 2 CPU cores
    proc = subprocess.run([sys.executable, str(REPO / 'tools/benchmarks/bench_train_step.py'), '--configs', *variants,
                           '--batch', '1', '--img', '64', '--iters', '1', '--warmup', '1', '--device', 'cpu',
                           '--threads', '1', '--json', str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc, {r['variant']: r for r in json.loads(out.read_text())}


def test_bench_train_step_smoke(tmp_path):
    variants = ['ditask', 'ditask_progressive', 'full_ft', 'full_ft_branched', 'inference']
    proc, records = run_bench_train_step(tmp_path / 'train_step.json', variants)
    assert set(records) == set(variants)
    assert all(r['threads'] == 1 for r in records.values())
    train = {k: records[k] for k in ('ditask', 'ditask_progressive', 'full_ft', 'full_ft_branched')}
    assert all(r['flops_per_step'] > 0 and r['train_step_ms'] > 0 and r['gflop_per_s'] > 0 for r in train.values())
    # the same task-branched architecture, fully trained: the per-task proj/fc1/fc2 copies train and run too
    assert train['full_ft_branched']['trainable'] > train['full_ft']['trainable']
    assert train['full_ft_branched']['flops_per_step'] > train['full_ft']['flops_per_step']
    assert train['ditask']['trainable'] < train['full_ft']['trainable']
    # task groups: stages 1-2 unbranched and stage 3 in two groups cost fewer FLOPs than a branch per task everywhere
    assert train['ditask_progressive']['flops_per_step'] < 0.9 * train['ditask']['flops_per_step']
    inference = records['inference']
    assert set(inference['single_task']) == {'semseg', 'human_parts', 'sal', 'normals'}
    assert all(r['ms'] > 0 and r['gflop'] > 0 for r in inference['single_task'].values())
    models = inference['models']
    assert all(r['ms'] > 0 and r['gflop'] > 0 for r in models.values())
    assert models['multi_task']['gflop'] > models['plain_swin_forward']['gflop']
    assert '| model | train step (ms) | vs full FT | vs full FT, same branched arch | GFLOP / step |' in proc.stdout
    assert '| inference | ms per batch | images/s | GFLOP per batch |' in proc.stdout
    assert '| full_ft_branched |' in proc.stdout


def test_bench_spectra_smoke(tmp_path):
    out = tmp_path / 'spectra.json'
    proc = subprocess.run([sys.executable, str(REPO / 'tools/benchmarks/bench_spectra.py'),
                           str(REPO / 'configs/ditask/swin-t_pascal-mtl.py'), '--iters', '1', '--warmup', '0',
                           '--json', str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    # Swin-T: 48 adapted layers; shared θ on all but the 3 last-stage task layers, 4 task θ on 12 layers
    assert result['layers'] == 48 and result['paths'] == 45 + 12 * 4
    assert result['per_layer']['cpab_calls'] == result['paths']
    assert result['batched']['cpab_calls'] == 8  # 4 spectrum lengths × (shared, task) tessellations
    assert result['batched']['ops'] * 4 < result['per_layer']['ops']
    assert '| batched |' in proc.stdout


def test_ablate_train_step_smoke():
    proc = subprocess.run([sys.executable, str(REPO / 'tools/benchmarks/ablate_train_step.py'), '--batch', '1',
                           '--img', '64', '--iters', '1', '--only', 'torch dropout', 'spectra per layer'],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith('| paper') or line.startswith('| clean')]
    assert [row.split('|')[1].strip() for row in rows] == ['paper, torch dropout', 'clean, spectra per layer']
    assert all(float(row.split('|')[3]) > 0 for row in rows)  # FLOPs were counted


def load_bench_utils():
    """``tools/benchmarks/bench_utils.py`` as a module (the scripts import it from their own folder)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('bench_utils', REPO / 'tools/benchmarks/bench_utils.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_per_call_svd_layer_recomputes_every_svd_and_matches_the_cached_layer():
    import copy

    import torch
    import torch.nn as nn

    from ditask_mm.adapters import DiTASKLinear, batched_spectra
    from ditask_mm.registry import MODELS
    per_call_class = load_bench_utils().per_call_svd_layer_class()
    assert MODELS.get('PerCallSVDDiTASKLinear') is per_call_class
    torch.manual_seed(0)
    base = nn.Linear(12, 24)
    kwargs = dict(tessellation_size=8, tasks=['a'], task_tessellation_size=4, num_splits=3, theta_init='kaiming')
    torch.manual_seed(1)
    cached = DiTASKLinear(copy.deepcopy(base), **kwargs)
    torch.manual_seed(1)
    per_call = per_call_class(copy.deepcopy(base), **kwargs)
    x = torch.randn(5, 12)
    for layer in (cached, per_call):
        layer(x)  # first call: both compute the SVD
    before = cached.svd.num_refreshes, per_call.svd.num_refreshes
    for task in (None, 'a', None):
        torch.testing.assert_close(per_call(x, task=task), cached(x, task=task), rtol=0, atol=0)
    assert cached.svd.num_refreshes == before[0] and per_call.svd.num_refreshes == before[1] + 3
    cached.eval(), per_call.eval()
    with torch.no_grad():  # eval: the cached layer keeps its weight, the per-call one rebuilds it every call
        torch.testing.assert_close(per_call(x), cached(x), rtol=1e-5, atol=1e-6)  # factored or dense: rounding
        per_call(x)
    assert per_call.svd.num_refreshes == before[1] + 5 and not per_call._eval_weights
    with batched_spectra(nn.ModuleList([cached, per_call])) as count:  # left out of the batched spectra
        assert count == 1 and per_call.precomputed_spectra is None and cached.precomputed_spectra is not None


def test_train_on_synthetic_gives_each_variant_its_backbone_on_the_main_job(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / 'tools/benchmarks'))
    from train_on_synthetic import MAIN_JOB, write_run_config

    from ditask_mm.apis import init_model
    from ditask_mm.engine.config_loading import load_run_config
    config = write_run_config('configs/ditask/swin-t_pascal-mtl_progressive.py', tmp_path / 'run/config.py',
                              'standin.pth')
    cfg = load_run_config(str(config))
    main = load_run_config(str(REPO / MAIN_JOB))
    assert cfg.train_cfg == main.train_cfg and cfg.optim_wrapper == main.optim_wrapper  # the main job's schedule
    assert cfg.train_dataloader.dataset.data_root == main.train_dataloader.dataset.data_root
    assert cfg.model.backbone.init_cfg == dict(type='Pretrained', checkpoint='standin.pth')
    backbone = init_model(cfg, init_weights=False).backbone
    assert backbone.branch_mode == 'side' and [len(p.groups) for p in backbone.plan] == [1, 1, 2, 4]


def test_bench_train_step_times_a_gradient_balancer_through_its_own_update(tmp_path):
    variants = ['balance_fixed', 'balance_pcgrad']
    proc, records = run_bench_train_step(tmp_path / 'balancers.json', variants)
    assert set(records) == set(variants)
    fixed, pcgrad = records['balance_fixed'], records['balance_pcgrad']
    assert (fixed['loss_balancer'], fixed['balancer_kind']) == ('FixedWeights', 'loss')
    assert (pcgrad['loss_balancer'], pcgrad['balancer_kind']) == ('PCGrad', 'gradient')
    assert pcgrad['options'] == ['model.loss_balancer.type=PCGrad'] and pcgrad['train_step_ms'] > 0
    # balanced_update ran (not update_params): it logs the skipped-step flag and the task shares, which add up to 1
    log = pcgrad['balance_log']
    assert log['balance.skipped_step'] == 0.0 and 'balance.skipped_step' not in fixed['balance_log']
    shares = [value for key, value in log.items() if key.startswith('balance.share.')]
    assert len(shares) == 4 and abs(sum(shares) - 1) < 1e-3
    # one backward per task over the shared parameters: far more FLOPs than the single backward of fixed weights
    assert pcgrad['flops_per_step'] > 1.5 * fixed['flops_per_step']
    assert pcgrad['trainable'] == fixed['trainable']
    assert '| variant | balancer | train step (ms) | vs balance_fixed |' in proc.stdout
    assert '| balance_pcgrad | PCGrad |' in proc.stdout and '| balance_fixed | FixedWeights |' in proc.stdout


def test_train_on_synthetic_carries_the_variant_loss_balancer_and_its_custom_keys(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / 'tools/benchmarks'))
    from train_on_synthetic import MAIN_JOB, write_run_config

    from ditask_mm.apis import init_model
    from ditask_mm.engine.config_loading import load_run_config
    main = load_run_config(str(REPO / MAIN_JOB))
    assert main.model.get('loss_balancer') is None

    def run_config(name, variant_config, options=()):
        return load_run_config(str(write_run_config(variant_config, tmp_path / name / 'config.py', 'standin.pth',
                                                    options)))

    pcgrad = run_config('pcgrad', 'configs/ditask/swin-t_pascal-mtl_pcgrad.py')
    assert pcgrad.model.loss_balancer.type == 'PCGrad'
    assert pcgrad.optim_wrapper == main.optim_wrapper and pcgrad.train_cfg == main.train_cfg
    uncertainty = run_config('uncertainty', 'configs/ditask/swin-t_pascal-mtl_uncertainty.py')
    assert uncertainty.model.loss_balancer.type == 'UncertaintyWeighting'
    paramwise = uncertainty.optim_wrapper.paramwise_cfg
    assert paramwise.custom_keys == {'loss_balancer': dict(decay_mult=0.0)}
    assert paramwise.norm_decay_mult == main.optim_wrapper.paramwise_cfg.norm_decay_mult  # the main job's kept
    assert uncertainty.optim_wrapper.optimizer == main.optim_wrapper.optimizer
    # a bench_train_step.py variant's overrides are applied to its config first
    mgda = run_config('mgda', 'configs/ditask/swin-t_pascal-mtl_clean.py', ['model.loss_balancer.type=MGDA'])
    assert mgda.model.loss_balancer.type == 'MGDA'
    assert run_config('clean', 'configs/ditask/swin-t_pascal-mtl_clean.py').model.get('loss_balancer') is None
    model = init_model(uncertainty, init_weights=False)
    assert type(model.loss_balancer).__name__ == 'UncertaintyWeighting' and model.loss_balancer.tasks == model.tasks
