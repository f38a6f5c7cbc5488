"""End-to-end runs of the `fastamp` console script, interruption and failure injection."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest

FASTAMP = str(Path(sys.executable).parent / 'fastamp')


def run(*args, timeout=600):
    return subprocess.run([FASTAMP, *args], capture_output=True, text=True, timeout=timeout)


def test_quick_bench_end_to_end_and_rerun(tmp_path):
    out = tmp_path / 'out'
    r = run('bench', '--quick', '--out', str(out), '--threads', '2')
    assert r.returncode == 0, r.stderr[-2000:]
    assert '## coarse-to-fine: digits' in r.stdout and '## long-tailed: digits' in r.stdout
    assert '| erm |' in r.stdout and '| midpoint |' in r.stdout and ' * |' in r.stdout
    runs = sorted((out / 'c2f' / 'runs').glob('*.json')) + sorted((out / 'lt' / 'runs').glob('*.json'))
    assert len(runs) == 8
    rec = json.loads(runs[0].read_text())
    assert {'config', 'seed', 'metrics', 'wall_s', 'versions', 'method_detail'} <= set(rec)
    assert (out / 'results.md').read_text().count('| midpoint |') == 2
    assert len(list((out / 'c2f' / 'reports').glob('*.csv'))) == 4
    mtimes = {p: p.stat().st_mtime_ns for p in runs}
    t = time.perf_counter()
    r2 = run('bench', '--quick', '--out', str(out), '--threads', '2')
    assert r2.returncode == 0 and 'done ' not in r2.stdout          # every run was skipped
    assert all(p.stat().st_mtime_ns == m for p, m in mtimes.items())
    tables = lambda s: [l for l in s.splitlines() if l.startswith('|')]
    assert tables(r.stdout) == tables(r2.stdout)                  # same numbers from the saved runs


def test_same_seed_same_numbers(tmp_path):
    outs = []
    for k in range(2):
        r = run('bench', '--quick', '--task', 'lt', '--methods', 'midpoint', '--seeds', '0', '--out', str(tmp_path / f'o{k}'))
        assert r.returncode == 0, r.stderr[-2000:]
        outs.append(json.loads(next((tmp_path / f'o{k}' / 'lt' / 'runs').glob('*.json')).read_text())['metrics'])
    assert outs[0] == outs[1]


def test_interrupted_bench_keeps_finished_runs(tmp_path):
    out = tmp_path / 'out'
    p = subprocess.Popen([FASTAMP, 'bench', '--quick', '--task', 'c2f', '--out', str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    runs = out / 'c2f' / 'runs'
    deadline = time.time() + 300
    while time.time() < deadline and not list(runs.glob('*.json')): time.sleep(0.2)
    p.send_signal(signal.SIGINT); p.wait(timeout=60)
    kept = {q.name: q.read_text() for q in runs.glob('*.json')}
    assert 1 <= len(kept) < 4 and not list(runs.glob('*.tmp'))
    r = run('bench', '--quick', '--task', 'c2f', '--out', str(out))
    assert r.returncode == 0
    assert {q.name: q.read_text() for q in runs.glob('*.json') if q.name in kept} == kept
    assert len(list(runs.glob('*.json'))) == 4


def test_a_broken_run_is_reported_and_the_others_go_on(tmp_path, monkeypatch):
    from fastamp import bench
    logs = []
    cfg = bench.BenchConfig(task='lt', methods=['erm', 'midpoint'], seeds=[0], epochs=1, rhos=[10])
    orig = bench.run_lt
    def run_lt(cfg, method, *a, **k):
        if method == 'midpoint': raise RuntimeError('injected failure')
        return orig(cfg, method, *a, **k)
    monkeypatch.setattr(bench, 'run_lt', run_lt)
    df = bench.run_bench(cfg, tmp_path, progress=False, log=logs.append)
    assert list(df['method']) == ['erm']
    assert any('FAILED' in l and 'injected failure' in l for l in logs)
    assert len(list((tmp_path / 'runs').glob('*.error.txt'))) == 1


@pytest.mark.parametrize('args, msg', [
    (['bench', '--dataset', 'mnist'], "unknown dataset 'mnist'"),
    (['bench', '--methods', 'erm,cowmix'], "unknown method 'cowmix'"),
    (['bench', '--frobnicate'], 'unrecognized arguments'),
    (['bench', '--dataset', 'cifar10', '--data', '/no/such/cifar'], '/no/such/cifar'),
    (['bench', '--dataset', 'cifar10'], 'needs --data'),
])
def test_bad_input_exits_2_with_one_line(args, msg):
    r = run(*args, timeout=120)
    assert r.returncode == 2
    err = [l for l in r.stderr.splitlines() if l.strip() and 'Warning' not in l and 'warnings.warn' not in l]
    assert len(err) == 1 and msg in err[0], r.stderr
