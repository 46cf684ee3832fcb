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
