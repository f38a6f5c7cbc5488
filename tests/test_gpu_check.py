"""`benchmarks/gpu_check.sh`, the one script a lent GPU runs, at a tiny size on the CPU: so that it never rots."""
import json, os, subprocess, sys, tarfile
from pathlib import Path
import pandas as pd, pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_gpu_check_runs_every_step_tiny_on_the_cpu(tmp_path):
    # the script's mechanics, whatever the machine's speed: TINY sets no step deadline, so a budget of 1 s (each step's
    # deadline a share of it on a real run: every step would be stopped) still runs every step to its end (#39 item 18)
    env = {**os.environ, 'TINY': '1', 'DEVICE': 'cpu', 'PYTHON': sys.executable, 'OUT': str(tmp_path/'out'),
           'WORK': str(tmp_path/'work'), 'BUDGET_S': '1', 'OMP_NUM_THREADS': '1'}
    r = subprocess.run(['bash', str(ROOT/'benchmarks'/'gpu_check.sh')], env=env, capture_output=True, text=True,
                       timeout=3300)
    log = (tmp_path/'out'/'gpu_check.log').read_text() if (tmp_path/'out'/'gpu_check.log').exists() else r.stderr
    assert r.returncode == 0, log[-3000:]
    page = (tmp_path/'out'/'gpu_check.md').read_text()
    assert page.startswith('# GPU check on CPU') and '| tests |' in page and '## overhead_compiled' in page
    assert 'TINY: no step deadlines' in page and log.count('(deadline: none)') == 4, log[-3000:]
    rows = [l for l in page.splitlines() if l.startswith('| ') and '`' in l]
    assert len(rows) == 4 and all(l.split('|')[3].strip() == '0' for l in rows), rows
    with tarfile.open(tmp_path/'out'/'gpu_check.tar.gz') as t: names = t.getnames()
    assert any(n.endswith('overhead_compiled/overhead/overhead.csv') for n in names), names
    assert sum(n.startswith('./lt/lt/runs/') and n.endswith('.json') for n in names) == 2, names
    df = pd.read_csv(tmp_path/'work'/'overhead_compiled'/'overhead'/'overhead.csv')
    assert list(df['method']) == ['erm', 'midpoint', 'erm (eager)'] and list(df['compiled']) == [True, True, False]
    rec = json.loads(next((tmp_path/'work'/'lt'/'lt'/'runs').glob('*.json')).read_text())
    assert rec['config']['epochs'] == 1 and rec['config']['compile'] is None
