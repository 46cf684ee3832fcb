"""tools/analysis_tools/count_params.py on the paper's configs."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def count(config: str, *extra: str):
    proc = subprocess.run([sys.executable, str(REPO / 'tools/analysis_tools/count_params.py'),
                           str(REPO / config), *extra], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_ditask_swin_t_matches_the_public_code_minus_its_dead_thetas():
    counts = json.loads(count('configs/ditask/swin-t_pascal-mtl.py', '--json'))
    assert counts == {'backbone_trainable': 1_602_525, 'adapter': 2_979, 'decode_heads': 1_946_624,
                      'total_trainable': 3_549_149, 'total': 29_467_421,
                      'adapter_by_group': {'semseg': 36, 'human_parts': 36, 'sal': 36, 'normals': 36}}
    assert list(counts['adapter_by_group']) == ['semseg', 'human_parts', 'sal', 'normals']


def test_mtlora_r64_without_the_unused_shared_path():
    counts = json.loads(count('configs/baselines/mtlora-r64_swin-t_pascal-mtl.py', '--json'))
    assert counts['backbone_trainable'] == 6_398_010 - 589_824 == 5_808_186


def test_table_output_groups():
    table = count('configs/ditask/swin-t_pascal-mtl.py')
    rows = {line.split('|')[1].strip(): line.split('|')[2].strip() for line in table.splitlines()
            if line.startswith('| ') and not line.startswith('| group ')}
    assert rows['adapter, shared'] == '2,835' and rows['adapter, per task'] == '144'
    assert rows['other backbone'] == '1,599,546' and rows['decode heads'] == '1,946,624'
    # one row per task (each task is its own group in this config)
    assert [k for k in rows if k.startswith('adapter, group ')] == [
        f'adapter, group {t}' for t in ('semseg', 'human_parts', 'sal', 'normals')]
    assert all(rows[f'adapter, group {t}'] == '36' for t in ('semseg', 'human_parts', 'sal', 'normals'))
