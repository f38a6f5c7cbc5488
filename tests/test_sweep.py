"""A sweep beyond one process (#26): locks across hosts and restarts, shards of a sweep, workers over devices and
cores, busy runs, and reports of a sweep half done."""
import functools, json, multiprocessing as mp, os, socket, subprocess, time
import pandas as pd, pytest, torch
from fastamp import bench
from fastamp.bench.store import RunLock, LOCK_TIMEOUT, read_lock, this_process, _start_time
from fastamp.cli import main, bench_settings, _parser

from conftest import FASTAMP
TINY = dict(tasks=['lt'], methods=['erm', 'midpoint'], seeds=[0, 1], epochs=1, lr=1e-2)


def _lock(path, **holder): path.write_text(json.dumps({**this_process(), **holder}))
def _age(path, seconds): os.utime(path, (time.time() - seconds,) * 2)


def test_a_lock_of_another_host_holds_while_its_heartbeat_is_fresh_and_is_taken_when_stale(tmp_path):
    lock = tmp_path / 'k.lock'
    _lock(lock, host='node-elsewhere', pid=os.getpid())       # a pid alive here means nothing for another host
    with RunLock(lock) as l:
        assert not l.acquired and bench.holder_line(l.holder).startswith('node-elsewhere:')
    _age(lock, LOCK_TIMEOUT - 60)
    with RunLock(lock) as l: assert not l.acquired
    _age(lock, LOCK_TIMEOUT + 60)
    with RunLock(lock) as l: assert l.acquired and read_lock(lock)['host'] == socket.gethostname()
    assert not lock.exists()
    _lock(lock, host='node-elsewhere'); _age(lock, 10)
    with RunLock(lock, timeout=5) as l: assert l.acquired    # --lock-timeout


@pytest.mark.parametrize('pid', [1, os.getppid()])
def test_a_lock_naming_a_live_unrelated_process_of_this_host_is_taken(tmp_path, pid):
    lock = tmp_path / 'k.lock'
    if _start_time(pid) is None: pytest.skip('no /proc start times here')
    _lock(lock, pid=pid, start=_start_time(pid))              # that process itself: held
    with RunLock(lock) as l: assert not l.acquired
    _lock(lock, pid=pid, start=_start_time(pid) + 1)          # the pid now names another process: taken
    with RunLock(lock) as l: assert l.acquired
    lock.write_text('999999999')                              # an old-format lock of a dead process
    with RunLock(lock) as l: assert l.acquired


def _try_lock(path, q):
    with RunLock(path) as l:
        q.put(l.acquired); time.sleep(1.)


def test_processes_racing_for_a_stale_lock_take_it_once(tmp_path):
    lock = tmp_path / 'k.lock'
    _lock(lock, host='node-elsewhere', pid=7); _age(lock, LOCK_TIMEOUT + 60)
    ctx = mp.get_context('fork'); q = ctx.Queue()
    ps = [ctx.Process(target=_try_lock, args=(lock, q)) for _ in range(4)]
    for p in ps: p.start()
    got = [q.get(timeout=30) for _ in ps]
    for p in ps: p.join(30)
    assert sorted(got) == [False, False, False, True] and not lock.exists()


def test_devices_are_dealt_in_turn_each_worker_seeing_its_own_gpu_and_cores():
    slots = bench.assign_workers(4, ['cuda:0', 'cuda:1', 'cuda:2'], range(8), visible='4,5,6')
    assert [s['env']['CUDA_VISIBLE_DEVICES'] for s in slots] == ['4', '5', '6', '4']
    assert {s['device'] for s in slots} == {'cuda:0'} and [s['threads'] for s in slots] == [2] * 4
    cores = [set(s['cores']) for s in slots]
    assert all(len(c) == 2 for c in cores) and len(set().union(*cores)) == 8    # disjoint
    assert [s['env'] for s in bench.assign_workers(2, ['cpu'], range(2))] == [{'CUDA_VISIBLE_DEVICES': ''}] * 2
    assert bench.worker_devices(4, devices=['cuda:0', 'cuda:1']) == ['cuda:0', 'cuda:1']
    assert bench.worker_devices(4) == ([f'cuda:{i}' for i in range(torch.cuda.device_count())] or [None])


def _view(wait=0.5):
    "What a worker sees (its threads are checked by test_bench: importing this module runs conftest, which sets them)"
    time.sleep(wait)
    return os.getpid(), os.environ.get('CUDA_VISIBLE_DEVICES'), sorted(os.sched_getaffinity(0))


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, 'sched_setaffinity') or len(os.sched_getaffinity(0)) < 2, reason='needs 2 cores')
def test_each_worker_process_gets_its_slot_before_cuda_starts():
    cores = sorted(os.sched_getaffinity(0))[:2]
    slots = bench.assign_workers(2, ['cuda:3', 'cuda:5'], cores)   # fake GPUs: only the environment is set
    with bench.worker_pool(slots) as ex:
        seen = {pid: rest for pid, *rest in ex.map(_view, [0.5] * 4)}
    assert sorted(seen.values()) == sorted([[s['env']['CUDA_VISIBLE_DEVICES'], s['cores']] for s in slots])


@pytest.mark.slow
def test_two_shards_on_one_out_train_every_run_exactly_once(tmp_path):
    out = tmp_path / 'out'
    args = [FASTAMP, 'bench', '--quick', '--task', 'lt', '--threads', '1', '--out', str(out)]
    ps = [subprocess.Popen(args + ['--shard', f'{i}/2'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for i in range(2)]
    outs = [p.communicate(timeout=600) for p in ps]
    assert [p.returncode for p in ps] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    done = [[l.split()[1].rstrip(':') for l in o.splitlines() if l.startswith('done ')] for o, _ in outs]
    assert [len(d) for d in done] == [2, 2] and len(set(done[0] + done[1])) == 4    # no duplicate, none lost
    assert {p.stem for p in (out / 'lt' / 'runs').glob('*.json')} == set(done[0] + done[1])
    assert sorted(json.loads((out / 'plan.json').read_text())['runs']['lt']) == sorted(done[0] + done[1])
    assert not list(out.rglob('*.lock')) and not list(out.rglob('*.tmp'))
    r = subprocess.run([FASTAMP, 'report', '--out', str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and 'Runs: 4 of 4 planned runs' in r.stdout, r.stderr[-2000:]


def test_report_of_a_sweep_half_done_says_k_of_n(tmp_path, capsys):
    out = tmp_path / 'out'
    assert bench.run_benchmark(TINY, out, log=lambda l: None, shard='1/2')['done'] == 2
    assert main(['report', '--out', str(out), '--no-plots']) == 0
    page = capsys.readouterr().out
    assert 'Runs: 2 of 4 planned runs;' in page and 'Finished: 2 of 4 planned runs.' in page
    assert (out / 'results.md').read_text() in page and len(pd.read_csv(out / 'runs.csv')) == 2


def test_a_run_still_held_elsewhere_at_the_end_exits_1_with_how_to_rerun(tmp_path, monkeypatch, capsys):
    out = tmp_path / 'out'
    argv = ['bench', '--task', 'lt', '--methods', 'erm', '--seeds', '0', '--rhos', '10', '--epochs', '1',
            '--out', str(out)]
    cfg = bench.task_configs(bench_settings(_parser().parse_args(argv)))[0]
    runs = out / 'lt' / 'runs'; runs.mkdir(parents=True)
    _lock(runs / f"{bench.run_key(cfg, 'erm', 0, 10)}.lock", host='node-elsewhere', pid=7)
    monkeypatch.setattr(bench, 'run_benchmark', functools.partial(bench.run_benchmark, busy_wait=0.5))
    assert main(argv) == 1
    got = capsys.readouterr()
    assert 'busy lt_digits_erm_s0' in got.out and 'node-elsewhere:7' in got.out
    assert 'still held by other processes' in got.err and 'rerun the same command' in got.err
