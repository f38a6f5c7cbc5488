"""End-to-end runs of the `fastamp` console script: reruns, Ctrl-C, bad input, failures, piped output, two processes."""
import dataclasses, json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch

from conftest import FASTAMP


def run(*args, timeout=600):
    return subprocess.run([FASTAMP, *args], capture_output=True, text=True, timeout=timeout)


def error_lines(stderr):
    return [l for l in stderr.splitlines() if l.strip() and 'Warning' not in l and 'warnings.warn' not in l]


@pytest.mark.slow
def test_quick_bench_end_to_end_rerun_and_piped_output(tmp_path):
    out = tmp_path / 'out'
    r = run('bench', '--quick', '--out', str(out), '--threads', '1')
    assert r.returncode == 0, r.stderr[-2000:]
    assert '## coarse-to-fine: digits' in r.stdout and '## long-tailed: digits' in r.stdout
    assert '| erm |' in r.stdout and '| midpoint |' in r.stdout and ' * |' in r.stdout
    # piped output: one line per finished run, no progress bar
    assert len([l for l in r.stdout.splitlines() if l.startswith('done ')]) == 8
    assert '\r' not in r.stdout and '█' not in r.stdout and '\r' not in r.stderr
    runs = sorted((out / 'c2f' / 'runs').glob('*.json')) + sorted((out / 'lt' / 'runs').glob('*.json'))
    assert len(runs) == 8
    rec = json.loads(runs[0].read_text())
    assert {'config', 'seed', 'metrics', 'wall_s', 'versions', 'method_detail', 'per_class_accuracy'} <= set(rec)
    page = (out / 'results.md').read_text()
    rows = [l for l in page.splitlines()  # its own rows, not the choices' tables (c2f's, lt's)
            if '| midpoint |' in l and '| fine_' not in l and '(to recommend)' not in l]
    assert len(rows) == 4 and '### coarse-to-fine: selected on validation' in page  # metrics, collapse of each task
    assert '### long-tailed: selected on validation' in page
    assert len(list((out / 'c2f' / 'reports').glob('*.csv'))) == 4
    table = (out / 'runs.csv').read_text().splitlines()
    assert len(table) == 9 and 'class_accuracy_9' in table[0] and 'version_torch' in table[0]
    mtimes = {p: p.stat().st_mtime_ns for p in runs}
    r2 = run('bench', '--quick', '--out', str(out), '--threads', '1')
    assert r2.returncode == 0 and 'done ' not in r2.stdout          # every run was skipped
    assert all(p.stat().st_mtime_ns == m for p, m in mtimes.items())
    tables = lambda s: [l for l in s.splitlines() if l.startswith('|')]
    assert tables(r.stdout) == tables(r2.stdout)                  # same numbers from the saved runs


def _default_ctrl_c():
    "In the child: Ctrl-C as in a terminal, even when pytest was started in the background (SIGINT ignored)"
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_ends_with_one_line_and_keeps_finished_runs(tmp_path):
    out = tmp_path / 'out'
    args = ['bench', '--quick', '--task', 'c2f', '--seeds', '0', '--out', str(out)]  # two runs, one after the other
    p = subprocess.Popen([FASTAMP, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=_default_ctrl_c)
    runs = out / 'c2f' / 'runs'
    deadline = time.time() + 300
    while time.time() < deadline and not list(runs.glob('*.json')): time.sleep(0.2)
    p.send_signal(signal.SIGINT); _, err = p.communicate(timeout=60)
    assert p.returncode == 130
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith('interrupted:') and str(out) in lines[0] and 'rerun' in lines[0], err
    assert 'Traceback' not in err
    kept = {q.name: q.read_text() for q in runs.glob('*.json')}
    assert len(kept) == 1 and not list(out.rglob('*.tmp')) and not list(out.rglob('*.lock'))
    r = run(*args)
    assert r.returncode == 0
    assert {q.name: q.read_text() for q in runs.glob('*.json') if q.name in kept} == kept
    assert len(list(runs.glob('*.json'))) == 2


@pytest.mark.slow
def test_two_processes_on_one_out_train_each_run_once(tmp_path):
    out = tmp_path / 'out'
    args = [FASTAMP, 'bench', '--quick', '--task', 'lt', '--out', str(out), '--threads', '1']
    ps = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in ps]
    assert [p.returncode for p in ps] == [0, 0]
    done = [l.split()[1] for o in outs for l in o.splitlines() if l.startswith('done ')]
    assert len(done) == len(set(done)) == 4                       # every run trained by exactly one process
    assert len(list((out / 'lt' / 'runs').glob('*.json'))) == 4
    assert not list(out.rglob('*.tmp')) and not list(out.rglob('*.lock'))


@pytest.mark.slow
def test_step_profile_from_the_command_line(tmp_path):
    "`--profile step`: the runs train on two levels of class counts, keyed apart from the exponential's, and say so"
    out = tmp_path / 'out'
    r = run('bench', '--dataset', 'digits', '--task', 'lt', '--profile', 'step', '--rhos', '5', '--epochs', '1',
            '--methods', 'erm', '--seeds', '0', '--out', str(out), '--threads', '1')
    assert r.returncode == 0, r.stderr[-2000:]
    [path] = (out / 'lt' / 'runs').glob('*.json')
    rec = json.loads(path.read_text())
    assert (rec['config']['profile'], rec['config']['mu']) == ('step', 0.5)
    counts = rec['class_counts']  # trained on: each class gives its validation split the same number of items
    assert len(set(counts)) == 2 and counts == [max(counts)] * 5 + [min(counts)] * 5  # round(0.5 * 10) in the tail
    assert max(counts) >= 4 * min(counts)  # rho 5 (a little steeper once the validation split is out)
    from fastamp.bench import BenchConfig, run_key
    assert path.stem != run_key(BenchConfig(**{**rec['config'], 'profile': 'exp'}), 'erm', 0, 5.)
    assert '## long-tailed: digits, step imbalance (mu 0.5)' in r.stdout


def test_a_broken_run_is_reported_and_the_others_go_on(tmp_path, monkeypatch):
    from fastamp import bench
    logs = []
    cfg = bench.BenchConfig(task='lt', methods=['erm', 'midpoint'], seeds=[0], epochs=1, rhos=[10])
    orig = bench.TASKS['lt'].runner
    def run_lt(cfg, method, *a, **k):
        if method == 'midpoint': raise RuntimeError('injected failure')
        return orig(cfg, method, *a, **k)
    monkeypatch.setitem(bench.TASKS, 'lt', dataclasses.replace(bench.TASKS['lt'], runner=run_lt))
    counts = bench.run_bench(cfg, tmp_path, log=logs.append)
    assert (counts['done'], counts['failed']) == (1, 1)
    assert list(bench.load_records(tmp_path / 'lt', cfg)['method']) == ['erm']
    assert any('FAILED' in l and 'injected failure' in l for l in logs)
    assert len(list((tmp_path / 'lt' / 'runs').glob('*.error.txt'))) == 1


def test_a_benchmark_where_every_run_failed_exits_nonzero(tmp_path, monkeypatch, capsys):
    from fastamp import bench, cli
    def broken(*a, **k): raise RuntimeError('injected failure')
    monkeypatch.setitem(bench.TASKS, 'lt', dataclasses.replace(bench.TASKS['lt'], runner=broken))
    rc = cli.main(['bench', '--quick', '--task', 'lt', '--seeds', '0', '--out', str(tmp_path / 'o')])
    err = error_lines(capsys.readouterr().err)
    assert rc == 1 and len(err) == 1 and 'every run' in err[0]


NO_GPU = not torch.cuda.is_available()
BAD = [
    (['--dataset', 'mnist'], "unknown dataset 'mnist'"),
    (['--methods', 'erm,cowmix'], "unknown method 'cowmix'"),
    (['--task', 'c2f,fit'], "unknown task 'fit'"),
    (['--frobnicate'], 'unrecognized arguments'),
    (['--dataset', 'cifar10', '--data', '/no/such/cifar'], '/no/such/cifar'),
    (['--epochs', '0'], '--epochs 0'), (['--epochs', '-3'], '--epochs -3'),
    (['--seeds', ''], '--seeds'), (['--seeds', ','], '--seeds'),
    (['--bs', '0'], '--bs 0'), (['--threads', '0'], '--threads 0'), (['--threads', '-2'], '--threads -2'),
    (['--jobs', '0'], '--jobs 0'),
    (['--lr', '0'], '--lr 0'), (['--lr', '-1e-3'], '--lr'),
    (['--lr', 'nan'], '--lr nan'), (['--lr', 'inf'], '--lr inf'),
    (['--rhos', '0.5'], '--rhos'), (['--rhos', '10,0'], '--rhos'),
    (['--arch', 'resnet33'], "--arch 'resnet33'"), (['--arch', 'timm:no_such_net'], '--arch'),
    (['--log', 'paper'], "unknown log 'paper'"),
    (['--heads', 'three'], "--heads: unknown head 'three'"),
    (['--methods', 'erm,mixup,erm'], "'erm,mixup,erm': erm is given twice"),  # every row twice (#39 item 17)
    (['--seeds', '0,1,0'], "0 is given twice"),
    (['--lock-timeout', '5'], '--lock-timeout 5.0: give at least 300 seconds'),       # #39 item 8: below the heartbeat
    (['--device', 'mps'], 'not on a mps device'), (['--device', 'meta'], 'not on a meta device'),
    (['--devices', 'cpu,mps'], '--devices mps'),
    (['--freeze-epochs', '2'], '--freeze-epochs 2: only --schedule fine_tune'),          # #39 item 17: keys only
    pytest.param(['--device', 'cuda'], 'no CUDA GPU', marks=pytest.mark.skipif(not NO_GPU, reason='a GPU is here')),
]


@pytest.mark.parametrize('args, msg', BAD)
def test_bad_option_is_rejected_before_any_work_in_one_line(args, msg, tmp_path, capsys):
    from fastamp import cli
    out = tmp_path / 'out'
    assert cli.main(['bench', *args, '--out', str(out)]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and msg in err[0], err
    assert not out.exists()                                         # nothing was done


def test_out_naming_a_file_is_rejected(tmp_path, capsys):
    from fastamp import cli
    f = tmp_path / 'file.txt'; f.write_text('x')
    assert cli.main(['bench', '--out', str(f)]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and 'is a file' in err[0]


@pytest.mark.parametrize('args, msg', [
    (['bench', '--dataset', 'cifar10'], 'needs --data'),             # a settings check (the others: BAD, in-process)
    (['bench', '--bs', 'x'], "invalid int value: 'x'"),               # argparse
])
@pytest.mark.slow
def test_bad_input_from_the_console_script_exits_2_with_one_line(args, msg, tmp_path):
    r = run(*args, '--out', str(tmp_path / 'o'), timeout=120)
    assert r.returncode == 2
    err = error_lines(r.stderr)
    assert len(err) == 1 and msg in err[0], r.stderr


def _checkpoint_since(runs:Path, t:float)->bool:
    "Whether a run in `runs` has written a checkpoint since time `t`"
    for q in runs.glob('*.ckpt'):
        try:
            if q.stat().st_mtime >= t: return True
        except FileNotFoundError: pass  # replaced as we looked
    return False


@pytest.mark.slow
def test_ctrl_c_then_sigterm_with_jobs_stop_the_workers_and_a_rerun_resumes_their_epochs(tmp_path):
    "Ctrl-C, then SIGTERM (what a scheduler sends) on the rerun: each ends in one line; a third run resumes, finishes"
    out = tmp_path / 'out'
    args = lambda jobs: [FASTAMP, 'bench', '--quick', '--task', 'lt', '--seeds', '0', '--epochs', '6',  # two runs
                         '--out', str(out), '--jobs', str(jobs)]   # --jobs is no part of a run's key
    runs = out / 'lt' / 'runs'
    for sig in (signal.SIGINT, signal.SIGTERM):
        start = time.time()
        p = subprocess.Popen(args(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=_default_ctrl_c)
        while time.time() < start + 300 and not _checkpoint_since(runs, start): time.sleep(0.1)
        p.send_signal(sig); _, err = p.communicate(timeout=120)  # a hang guard, not a speed measure: load varies
        assert p.returncode == 130, sig
        lines = error_lines(err)
        assert len(lines) == 1 and lines[0].startswith('interrupted:') and 'Traceback' not in err, err
        left = lambda: list(out.rglob('*.tmp')) + list(out.rglob('*.lock'))
        deadline = time.time() + 60  # the workers' last writes end on their own; wait for that, not a fixed second
        while left() and time.time() < deadline: time.sleep(0.1)
        assert not left(), left()
        assert not list(runs.glob('*.json'))                      # neither run had finished
    r = subprocess.run(args(1), capture_output=True, text=True, timeout=600)   # the workers' runs, resumed in-process
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'resumed at epoch' in r.stdout and len(list(runs.glob('*.json'))) == 2


def _alive(pid:int)->bool:
    try: os.kill(pid, 0)
    except ProcessLookupError: return False
    return True


@pytest.mark.slow
def test_workers_end_when_their_parent_is_killed_and_the_rerun_takes_their_runs_over(tmp_path):
    from fastamp import bench
    out = tmp_path / 'out'
    args = [FASTAMP, 'bench', '--quick', '--task', 'lt', '--seeds', '0', '--jobs', '2', '--epochs', '30',  # a run each
            '--out', str(out)]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = out / 'lt' / 'runs'
    deadline = time.time() + 300
    while time.time() < deadline and not list(runs.glob('*.ckpt')): time.sleep(0.1)
    workers = [bench.read_lock(l)['pid'] for l in runs.glob('*.lock')]
    p.kill(); p.wait()                                        # SIGKILL: the parent cannot stop its workers
    deadline = time.time() + 10                            # a run lasts longer than that
    while time.time() < deadline and any(_alive(w) for w in workers): time.sleep(0.2)
    assert workers and not any(_alive(w) for w in workers)   # they end by themselves, not train on for hours
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(list(runs.glob('*.json'))) == 2 and not list(runs.glob('*.lock'))


def _plan(tmp_path, name='PLAN.md', *extra):
    "Write a quick plan (digits, 1 epoch, one seed) with `fastamp plan`; its path"
    from fastamp import cli
    plan = tmp_path / name
    assert cli.main(['plan', '--quick', '--epochs', '1', '--seeds', '0', *extra, '--to', str(plan)]) == 0
    return plan


def test_a_plan_runs_stamps_every_record_and_the_page_says_it_came_first(tmp_path, capsys):
    from fastamp import bench, cli
    plan, out = _plan(tmp_path), tmp_path / 'out'
    h = bench.plan_hash(plan)
    assert f'plan {h} written to' in capsys.readouterr().out and '```fastamp-plan' in plan.read_text()
    assert cli.main(['bench', '--plan', str(plan), '--out', str(out)]) == 0
    recs = [json.loads(p.read_text()) for p in sorted(out.glob('*/runs/*.json'))]
    assert len(recs) == 4 and {r['config']['epochs'] for r in recs} == {1} and {r['seed'] for r in recs} == {0}
    assert all(r['plan']['hash'] == h and r['plan']['path'] == str(plan.name if plan.is_absolute() else plan)
               and r['started'] >= r['plan']['written'] for r in recs)
    assert (out / 'plan.md').read_bytes() == plan.read_bytes()
    capsys.readouterr()
    assert cli.main(['report', '--out', str(out), '--no-plots']) == 0
    assert f"Pre-registered: plan {h} registered " in capsys.readouterr().out
    # the same folder with a changed plan: refused, nothing run
    (tmp_path / 'P2.md').write_text(plan.read_text() + '\nOne more sentence.\n')
    assert cli.main(['bench', '--plan', str(tmp_path / 'P2.md'), '--out', str(out)]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and f"holds runs of plan {h}, not of" in err[0] and 'use another --out' in err[0], err
    assert len(list(out.glob('*/runs/*.json'))) == 4


@pytest.mark.parametrize('args, msg', [
    (['--seeds', '0,1'], "--seeds 0,1 differs from the plan"),
    (['--epochs', '3'], "--epochs 3 differs from the plan"),
    (['--preset', 'fmnist'], "--preset fmnist (its"),
])
def test_an_option_that_changes_the_plan_is_refused_before_any_run(args, msg, tmp_path, capsys):
    from fastamp import cli
    plan, out = _plan(tmp_path), tmp_path / 'out'
    capsys.readouterr()
    assert cli.main(['bench', '--plan', str(plan), *args, '--out', str(out)]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and msg in err[0] and 'drop the option or write a new plan' in err[0], err
    assert not out.exists()                                         # nothing was done


def test_bench_help_lists_plan_and_plan_help_its_options(capsys):
    from fastamp import cli
    assert cli.main(['bench', '--help']) == 0
    assert '--plan PLAN.md' in capsys.readouterr().out
    assert cli.main(['plan', '--help']) == 0
    text = capsys.readouterr().out
    assert '--to PLAN.md' in text and '--seeds' in text and '--jobs' not in text


def _start_then_sigterm(slots):
    "A worker's start-up (`_worker_init`) that receives SIGTERM in its last step, as a Ctrl-C during spawning does"
    import fastamp.bench.runner as runner
    runner.set_threads = lambda n: os.kill(os.getpid(), signal.SIGTERM)
    runner._worker_init(slots)


def test_sigterm_while_a_worker_starts_prints_no_traceback(capfd):
    "The parent's one `interrupted:` line stays the only one: a worker ended while it starts says nothing"
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    ctx = mp.get_context('spawn')
    q = ctx.Queue(); q.put({'env': {}, 'cores': [], 'threads': 1, 'device': None})
    with ProcessPoolExecutor(1, mp_context=ctx, initializer=_start_then_sigterm, initargs=(q,)) as ex:
        with pytest.raises(BrokenProcessPool): ex.submit(int, 1).result(timeout=300)
    err = capfd.readouterr().err
    assert 'Traceback' not in err and 'Exception in initializer' not in err, err


# `fastamp` whose spawned workers hold inside their start-up (importing the parent's main module, before their
# initializer) until `go` exists in $HOLD_DIR, each saying so with a file `started.<pid>`: a test's own script
_HELD_START = """import os, pathlib, sys, time
if __name__ == '__mp_main__':
    d = pathlib.Path(os.environ['HOLD_DIR']); (d / f'started.{os.getpid()}').touch()
    while not (d / 'go').exists(): time.sleep(0.05)
from fastamp.cli import main
if __name__ == '__main__': sys.exit(main())
"""


def _took_sigint(pid:int)->bool:
    "Whether process `pid` has taken a SIGINT sent to it: it ended (a zombie or gone), or blocks it (pending till then)"
    try: status = dict(l.split(':', 1) for l in Path(f'/proc/{pid}/status').read_text().splitlines() if ':' in l)
    except FileNotFoundError: return True
    held = int(status['SigPnd'], 16) | int(status['ShdPnd'], 16)
    held &= int(status['SigBlk'], 16)              # pending and not blocked: not delivered yet
    return status['State'].split()[0] in 'ZX' or bool(held & (1 << (signal.SIGINT - 1)))


@pytest.mark.slow
@pytest.mark.skipif(not Path('/proc/self/status').exists(), reason='reads pending signals from /proc (Linux)')
def test_ctrl_c_while_the_workers_start_ends_with_one_line(tmp_path):
    "Ctrl-C reaching the workers as they import, then the parent: one `interrupted:` line, nothing left (#39 item 18)"
    out, hold = tmp_path / 'out', tmp_path / 'hold'; hold.mkdir()
    (tmp_path / 'held_fastamp.py').write_text(_HELD_START)
    args = ['bench', '--quick', '--task', 'lt', '--seeds', '0', '--epochs', '1', '--out', str(out), '--jobs', '2']
    p = subprocess.Popen([sys.executable, str(tmp_path / 'held_fastamp.py'), *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, 'HOLD_DIR': str(hold)},
                         preexec_fn=_default_ctrl_c)
    try:
        deadline = time.time() + 300                  # a hang guard only: each wait below ends on an event
        while time.time() < deadline and p.poll() is None and len(list(hold.glob('started.*'))) < 2: time.sleep(0.1)
        workers = [int(f.suffix[1:]) for f in hold.glob('started.*')]
        assert len(workers) == 2, 'the two workers did not start'
        for w in workers: os.kill(w, signal.SIGINT)  # Ctrl-C reaches every process of the group: the workers first
        while time.time() < deadline and not all(_took_sigint(w) for w in workers): time.sleep(0.1)
        p.send_signal(signal.SIGINT)                  # then the parent
    finally: (hold / 'go').touch()                    # the workers go on with their start-up
    _, err = p.communicate(timeout=300)
    assert p.returncode == 130, err
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith('interrupted:') and 'Traceback' not in err, err
    assert not list(out.rglob('*.tmp')) and not list(out.rglob('*.lock'))


def test_report_of_a_folder_without_runs_says_so(tmp_path, capsys):
    "`fastamp report` on a folder with no record: one line and exit 1, not an empty page (#39 item 17)"
    from fastamp.cli import main
    assert main(['report', '--out', str(tmp_path)]) == 1
    assert 'no runs recorded there' in capsys.readouterr().err and not (tmp_path/'results.md').exists()


def test_report_of_a_folder_whose_every_record_is_set_aside_says_so_and_writes_nothing(tmp_path, capsys):
    """Records a page cannot read are set aside one by one (a warning each); none left: one line and exit 1 (#39 item
    17), and nothing written: the page there stays as it was, no runs.csv"""
    from fastamp.cli import main
    (tmp_path/'lt'/'runs').mkdir(parents=True); (tmp_path/'lt'/'runs'/'k.json').write_text('{"key": [1]}')
    (tmp_path/'results.md').write_text('# the page of an earlier report\n')
    with pytest.warns(UserWarning, match='k.json: cannot be read'): assert main(['report', '--out', str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('fastamp: error: ') and 'every record there was set aside' in err
    assert (tmp_path/'results.md').read_text() == '# the page of an earlier report\n'
    assert not (tmp_path/'runs.csv').exists() and (tmp_path/'lt'/'runs'/'k.json.corrupt').exists()
