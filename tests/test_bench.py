"""The benchmark's long-tail recipe, optimizer, parallel runs, resume inside a run, run table and loggers."""
import importlib.util, json, os, re, socket, subprocess
from pathlib import Path
import numpy as np, pytest, torch
from fastai.callback.core import Callback, CancelFitException
from fastai.optimizer import SGD
from fastai.torch_core import set_seed
from fastamp import bench
from fastamp.bench.training import _opt_func, _fit
from fastamp.data import imageset_dls
from fastamp.devicedata import PadCropFlip

from conftest import FASTAMP, load_script
TINY = dict(task='lt', methods=['midpoint'], seeds=[0], rhos=[10], lr=1e-2)


def test_lt_presets_hold_the_standard_recipe():
    for name, ds in (('cifar10-lt', 'cifar10'), ('cifar100-lt', 'cifar100')):
        p = bench.PRESETS[name]
        assert (p['dataset'], p['arch'], p['bs'], p['lr'], p['epochs'], p['rhos'], p['seeds']) == \
               (ds, 'resnet32', 128, 0.1, 200, [100, 10], [0, 1, 2, 3, 4])  # five seeds: a claim (#35)
        assert (p['opt'], p['mom'], p['wd'], p['schedule'], p['augment']) == ('sgd', 0.9, 2e-4, 'warmup_step', True)



def test_the_fmnist_lt_curves_preset_is_fmnist_lt_at_rho_100_with_a_curve_per_epoch():
    p, lt = bench.PRESETS['fmnist-lt-curves'], bench.PRESETS['fmnist-lt']
    same = ('dataset', 'tasks', 'bs', 'lr', 'loader', 'augment', 'many', 'few', 'epochs', 'seeds')
    assert {k: p.get(k) for k in same} == {k: lt.get(k) for k in same}
    assert (p['rhos'], p['probe_every'], p['methods']) == \
           ([100], 1, ['erm', 'la', 'mixup', 'remix', 'midpoint', 'midpoint-la'])
    assert set(p['methods']) <= set(bench.METHODS)
    bench.check_settings(p)

class _Stop(Callback):
    order = 100
    def __init__(self, n): self.n = n
    def after_step(self):
        if self.train_iter + 1 >= self.n: raise CancelFitException()


def _learner(cfg, **kw):
    set_seed(0, reproducible=True)
    data, _, size = bench.load_dataset('digits')
    dls = imageset_dls(data, bs=cfg.bs, size=size, device='cpu', **({'after_batch': [PadCropFlip()]}
                                                                           if cfg.augment else {}))
    return bench.make_learner(cfg.arch, dls, [], **kw)


def test_warmup_step_schedule_under_fastai_scales_with_epochs():
    cfg = bench.BenchConfig(**{**TINY, 'methods': ['erm'], 'lr': 0.1}, epochs=10, bs=128, schedule='warmup_step',
                            opt='sgd')
    learn = _learner(cfg, opt_func=_opt_func(cfg))
    _fit(learn, cfg, cfg.epochs)
    lrs = np.array(learn.recorder.lrs); pct = np.arange(len(lrs)) / len(lrs)
    # linear warm-up over 5/200 of training, 0.1 until 160/200, then x0.1, and x0.1 again at 180/200
    want = np.select([pct < 0.025, pct < 0.8, pct < 0.9], [0.1 * pct / 0.025, 0.1, 0.01], 0.001)
    away = np.abs(pct[:, None] - np.array([0.025, 0.8, 0.9])).min(1) > 1e-6   # steps at a boundary may go either way
    assert len(lrs) == 110 and away.sum() > 100
    np.testing.assert_allclose(lrs[away], want[away], rtol=1e-5)


def test_torch_sgd_in_a_learner_gives_fastai_sgd_updates():
    cfg = bench.BenchConfig(**{**TINY, 'lr': 0.1}, epochs=2, bs=64, schedule='warmup_step', opt='sgd', mom=0.9, wd=2e-4)
    params = []
    for opt in (_opt_func(cfg), lambda ps, lr: SGD(ps, lr, mom=0.9, wd=2e-4, decouple_wd=False)):
        learn = _learner(cfg, opt_func=opt, wd_bn_bias=True)
        _fit(learn, cfg, cfg.epochs, cbs=[_Stop(5)])
        params.append([p.detach().clone() for p in learn.model.parameters()])
    for a, b in zip(*params): torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert any((a != 0).any() for a in params[0])


def test_crop_flip_changes_training_batches_only():
    cfg = bench.BenchConfig(**TINY, augment=True)
    learn = _learner(cfg)
    x_tr, _ = learn.dls.train.one_batch(); x_va, _ = learn.dls.valid.one_batch()
    plain = _learner(bench.BenchConfig(**TINY)).dls
    assert torch.equal(x_va, plain.valid.one_batch()[0])
    x_plain = plain.train.one_batch()[0]              # the same items (same seed), not augmented
    assert x_tr.shape == x_plain.shape == (64, 3, 16, 16) and x_tr.min() >= 0 and x_tr.max() <= 1
    assert not torch.equal(x_tr, x_plain)


def test_resnet32_learner_from_the_models_module():
    cfg = bench.BenchConfig(**TINY, arch='resnet32')
    learn = _learner(cfg)
    assert sum(p.numel() for p in learn.model.parameters()) == pytest.approx(0.46e6, rel=0.02)
    x, _ = learn.dls.one_batch()
    assert learn.model(x).shape == (64, 10)


class _FailAfterEpoch(Callback):
    "An injected failure right after epoch `k` (1-based) has been checkpointed"
    order = 100
    def __init__(self, k): self.k = k
    def after_epoch(self):
        if self.epoch + 1 == self.k: raise RuntimeError(f'injected failure after epoch {self.k}')


def test_an_interrupted_run_resumes_from_its_last_epoch(tmp_path):
    cfg = bench.BenchConfig(**TINY, epochs=3)
    status, line = bench.run_one(cfg, 'midpoint', 0, 10, tmp_path / 'a', cbs=[_FailAfterEpoch(2)])
    runs = tmp_path / 'a' / 'lt' / 'runs'
    assert status == 'failed' and 'injected failure' in line
    assert not list(runs.glob('*.json')) and len(list(runs.glob('*.ckpt'))) == 1   # nothing read as finished
    assert bench.run_bench(cfg, tmp_path / 'a', log=lambda l: None)['done'] == 1
    rec = json.loads(next(runs.glob('*.json')).read_text())
    assert rec['resumed_at_epoch'] == 2 and not list(runs.glob('*.ckpt')) and not list(runs.glob('*.lock'))
    assert rec['wall_s'] > 0
    status, _ = bench.run_one(cfg, 'midpoint', 0, 10, tmp_path / 'b')
    ref = json.loads(next((tmp_path / 'b' / 'lt' / 'runs').glob('*.json')).read_text())
    assert status == 'done' and set(rec) == set(ref) and rec['key'] == ref['key']
    assert rec['metrics'] == pytest.approx(ref['metrics'], abs=1e-6)      # model, optimizer, schedule and RNG restored


def test_a_checkpoint_with_the_older_random_state_names_resumes_the_same(tmp_path):
    "Checkpoints saved before fastai's `get_random_states` held the states as 'python', 'numpy', 'torch', 'cuda'"
    from fastai.torch_core import get_random_states
    cfg = bench.BenchConfig(**TINY, epochs=3)
    bench.run_one(cfg, 'midpoint', 0, 10, tmp_path / 'a', cbs=[_FailAfterEpoch(2)])
    ckpt = next((tmp_path / 'a' / 'lt' / 'runs').glob('*.ckpt'))
    st = torch.load(ckpt, weights_only=False); rng = st['rng']
    assert set(rng) == {*get_random_states(), 'dl'}
    st['rng'] = {'python': rng['random_state'], 'numpy': rng['numpy_state'], 'torch': rng['torch_state'],
                 'dl': rng['dl'], **({'cuda': rng['torch_cuda_state']} if torch.cuda.is_available() else {})}
    torch.save(st, ckpt)
    assert bench.run_one(cfg, 'midpoint', 0, 10, tmp_path / 'a')[0] == 'done'
    assert bench.run_one(cfg, 'midpoint', 0, 10, tmp_path / 'b')[0] == 'done'
    rec, ref = [json.loads(next((tmp_path / d / 'lt' / 'runs').glob('*.json')).read_text()) for d in 'ab']
    assert rec['resumed_at_epoch'] == 2 and rec['metrics'] == pytest.approx(ref['metrics'], abs=1e-6)


def test_a_run_locked_by_a_live_process_is_not_started(tmp_path):
    cfg = bench.BenchConfig(**TINY, epochs=1)
    runs = tmp_path / 'lt' / 'runs'; runs.mkdir(parents=True)
    key = bench.run_key(cfg, 'midpoint', 0, 10)
    (runs / f'{key}.lock').write_text(str(subprocess.Popen(['sleep', '30']).pid))
    status, line = bench.run_one(cfg, 'midpoint', 0, 10, tmp_path)
    assert status == 'busy' and f'held by {socket.gethostname()}:' in line and not list(runs.glob('*.json'))


def _on_two_cores():
    "Run a child on the first two cores of this process's mask (what the jobs tests assume)"
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:2]))


TWO_CORES = pytest.mark.skipif(not hasattr(os, 'sched_setaffinity') or len(os.sched_getaffinity(0)) < 2,
                               reason='needs 2 cores')


@pytest.mark.slow
@TWO_CORES
def test_jobs_2_gives_the_numbers_of_jobs_1_with_a_thread_each(tmp_path):
    "The same seeds give the same numbers in another process and in the pool's workers (2 jobs, 2 cores: 1 thread each)"
    recs = []
    for jobs, threads in ((1, ['--threads', '1']), (2, [])):
        out = tmp_path / f'j{jobs}'
        r = subprocess.run([FASTAMP, 'bench', '--quick', '--task', 'lt', '--seeds', '0', *threads,
                            '--jobs', str(jobs), '--out', str(out)], capture_output=True, text=True, timeout=600,
                           preexec_fn=_on_two_cores)
        assert r.returncode == 0, r.stderr[-2000:]
        assert len([l for l in r.stdout.splitlines() if l.startswith('done ')]) == 2
        recs.append({p.name: json.loads(p.read_text()) for p in (out / 'lt' / 'runs').glob('*.json')})
    assert {k: r['metrics'] for k, r in recs[0].items()} == {k: r['metrics'] for k, r in recs[1].items()}
    assert len(recs[0]) == 2 and [r['versions']['cpu_threads'] for r in recs[1].values()] == [1, 1]
    assert 'note: --jobs' not in r.stdout  # 2 jobs on 2 cores cost nothing more


def test_csv_log_gets_epochs_and_the_mixing_values_of_each_step(tmp_path):
    cfg = bench.BenchConfig(**TINY, epochs=2)
    status, _ = bench.run_one(cfg, 'midpoint', 0, 10, tmp_path, log='csv')
    assert status == 'done'
    logs = tmp_path / 'lt' / 'logs'
    epochs = next(p for p in logs.glob('*.csv') if not p.name.endswith('_steps.csv')).read_text().splitlines()
    assert len(epochs) == 3 and 'train_loss' in epochs[0]
    steps = next(logs.glob('*_steps.csv')).read_text().splitlines()
    assert 'MidpointMixup/lam' in steps[0] and 'MidpointMixup/loss_aug' in steps[0] and len(steps) > 10


@pytest.mark.parametrize('kind', ['tensorboard', 'wandb'])
def test_a_missing_logger_package_is_named_with_its_install_command(kind):
    if importlib.util.find_spec(kind) is not None: pytest.skip(f'{kind} is installed')
    with pytest.raises(bench.SettingsError, match=f'pip install {kind}'): bench.check_settings({'log': kind})


def test_the_lt_recipe_runs_end_to_end_with_its_pieces(tmp_path):
    s = {**bench.PRESETS['cifar10-lt'], 'dataset': 'digits', 'epochs': 2, 'methods': ['midpoint'], 'seeds': [0],
         'rhos': [10]}
    counts = bench.run_benchmark(s, tmp_path, log=lambda l: None, logger='csv')
    assert counts['done'] == 1 and counts['failed'] == 0
    rec = json.loads(next((tmp_path / 'lt' / 'runs').glob('*.json')).read_text())
    assert {k: rec['config'][k] for k in ('arch', 'opt', 'schedule', 'augment', 'wd', 'bs')} == \
           dict(arch='resnet32', opt='sgd', schedule='warmup_step', augment=True, wd=2e-4, bs=128)
    assert len(rec['per_class_accuracy']) == 10 and (tmp_path / 'runs.csv').exists()


C2F = dict(task='c2f', methods=['midpoint'], seeds=[0], lr=1e-2, subset=500, probe_every=1, head='one', loader='device')


def test_an_interrupted_c2f_run_keeps_its_probe_curves(tmp_path):
    cfg = bench.BenchConfig(**C2F, epochs=3)
    status, _ = bench.run_one(cfg, 'midpoint', 0, None, tmp_path / 'a', cbs=[_FailAfterEpoch(2)])
    assert status == 'failed'
    assert bench.run_one(cfg, 'midpoint', 0, None, tmp_path / 'a')[0] == 'done'
    rec = bench.run_records(tmp_path / 'a' / 'c2f')[0]
    bench.run_one(cfg, 'midpoint', 0, None, tmp_path / 'b')
    ref = bench.run_records(tmp_path / 'b' / 'c2f')[0]
    assert rec.resumed_at_epoch == 2
    for place in ('pooled', 'classifier'):                  # restored epochs, no row for the skipped or extra passes
        assert [r['epoch'] for r in rec.curves[place]] == [0, 1, 2]
        assert [r['fine_linear_probe'] for r in rec.curves[place]] == \
               pytest.approx([r['fine_linear_probe'] for r in ref.curves[place]], abs=1e-6)
    assert rec.metrics == pytest.approx(ref.metrics, abs=1e-6)


@pytest.mark.slow
def test_cli_heads_give_one_setting_each_with_its_curves(tmp_path, capsys):
    r = subprocess.run([FASTAMP, 'bench', '--quick', '--task', 'c2f', '--methods', 'erm,midpoint', '--seeds', '0',
                        '--heads', 'one,two', '--subset', '400', '--probe-every', '1', '--loader', 'device',
                        '--threads', '1', '--out', str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len([l for l in r.stdout.splitlines() if l.startswith('done ')]) == 4
    recs = bench.run_records(tmp_path / 'c2f')
    assert sorted((x.config['head'], x.method) for x in recs) == \
           [('one', 'erm'), ('one', 'midpoint'), ('two', 'erm'), ('two', 'midpoint')]
    assert all(len(x.curves['pooled']) == 2 and x.config['subset'] == 400 for x in recs)
    page = (tmp_path / 'results.md').read_text()
    assert 'digits, cnn with head one' in page and 'digits, cnn with head two' in page
    pngs = sorted(p.name for p in (tmp_path / 'c2f' / 'plots').glob('fine_probe_*.png'))
    assert len(pngs) == 2 and all(f'c2f/plots/{p}' in page for p in pngs)
    script = Path(__file__).parents[1] / 'benchmarks' / 'write_results.py'
    write_results = load_script(script)
    capsys.readouterr()
    write_results.main([str(tmp_path), 'c2f', 'cmd', '--figures', str(tmp_path / 'figs')])
    links = re.findall(r'\]\((figs/[^)]+\.png)\)', capsys.readouterr().out)
    assert len(links) == 4 and all((tmp_path / l).exists() for l in links)  # fine probe and coarse NC1, per head
    assert len([l for l in links if '/nc1_' in l]) == 2


@pytest.mark.slow
@TWO_CORES
def test_jobs_take_the_threads_given(tmp_path):
    r = subprocess.run([FASTAMP, 'bench', '--quick', '--task', 'lt', '--methods', 'erm', '--epochs', '1', '--jobs', '2',
                        '--threads', '2', '--out', str(tmp_path)], capture_output=True, text=True, timeout=600,
                       preexec_fn=_on_two_cores)
    assert r.returncode == 0, r.stderr[-2000:]
    recs = [json.loads(p.read_text()) for p in (tmp_path / 'lt' / 'runs').glob('*.json')]
    assert len(recs) == 2 and [rec['versions']['cpu_threads'] for rec in recs] == [2, 2]


def test_more_jobs_than_cores_is_said_in_one_line(monkeypatch):
    "On a CPU machine, jobs beyond the cores cost a one-line note; on a GPU machine (and within the cores) none"
    from fastamp.bench import jobs_cost_line, cpu_cores
    for gpu in (False, True):
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: gpu)
        line = jobs_cost_line(cpu_cores() + 2)
        assert line is None if gpu else ('--jobs' in line and 'slower' in line and '\n' not in line), (gpu, line)
        assert jobs_cost_line(cpu_cores()) is None


def test_the_jobs_note_counts_the_runs_that_start(tmp_path, monkeypatch):
    "#39 item 17: `--jobs 100` on a sweep of one run said '100 runs' memory held'; at most one run starts"
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    lines, s = [], dict(tasks=['lt'], methods=['erm'], seeds=[0], rhos=[10], epochs=1, lr=1e-2)
    assert bench.run_benchmark(s, tmp_path, jobs=100, log=lines.append)['done'] == 1
    assert not [l for l in lines if 'memory' in l], lines


def test_an_lt_run_with_probe_every_records_margin_curves_and_the_report_draws_them(tmp_path):
    from fastamp.report import write_report, LT_CURVES
    s = dict(tasks=['lt'], methods=['erm', 'midpoint'], seeds=[0], rhos=[10], epochs=2, lr=1e-2, probe_every=1)
    assert bench.run_benchmark(s, tmp_path, log=lambda l: None)['done'] == 2
    for rec in bench.run_records(tmp_path / 'lt'):
        rows = rec.curves['classifier']                     # one row per epoch, on the whole held-out set
        assert [r['epoch'] for r in rows] == [0, 1]
        assert {*LT_CURVES, *(f'margin_{c}' for c in range(10))} <= set(rows[0])
        for m in LT_CURVES: assert rows[-1][m] == pytest.approx(rec.collapse[m], rel=1e-3, abs=1e-5), m
    page = write_report(tmp_path)
    pngs = sorted(p.name for p in (tmp_path / 'lt' / 'plots').glob('curve_*.png'))
    assert sorted(p.split('_digits_')[0] for p in pngs) == sorted(f'curve_{m}' for m in LT_CURVES)
    assert all(f'](lt/plots/{p})' in page for p in pngs) and '### long-tailed: curves, rho 10' in page
    assert 'fine_probe_' not in page and 'collapse measures every 1 epoch(s) of training' in page
