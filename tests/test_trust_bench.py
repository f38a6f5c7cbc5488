"""Issue 22, the benchmark's side: a result is tied to the data and settings that made it, nothing untrained is
recorded, unreadable files in --out are set aside and rerun, an unwritable --out ends in one line, logs survive a
resume, and the command line's help and output hold what a user needs and no noise."""
import errno, json, subprocess, warnings
from pathlib import Path
import numpy as np, pandas as pd, pytest
from fastai.callback.core import Callback
from fastamp import bench, cli, report
from fastamp.datasets import CIFAR10_CLASSES
from fastamp.metrics import DegenerateWarning

from conftest import FASTAMP

TINY = dict(task='lt', methods=['erm'], seeds=[0], rhos=[10], lr=1e-2, epochs=1)
quiet = lambda line: None


def _cifar_folder(path:Path, seed:int, n_train=8, n_test=2, side=16)->Path:
    "A tiny CIFAR-10 image folder (`train/<class>/*.png`, `test/<class>/*.png`) whose pixels depend on `seed`"
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split, n in (('train', n_train), ('test', n_test)):
        for c, name in enumerate(CIFAR10_CLASSES):
            (path / split / name).mkdir(parents=True)
            for i in range(n):
                x = (rng.integers(0, 64, (side, side, 3)) + 19 * c).astype(np.uint8)
                Image.fromarray(x).save(path / split / name / f'{i}.png')
    return path


def test_other_data_in_the_same_out_is_trained_not_skipped(tmp_path):
    a, b = _cifar_folder(tmp_path / 'a', 0), _cifar_folder(tmp_path / 'b', 1)
    s = dict(tasks=['c2f'], dataset='cifar10', methods=['erm'], seeds=[0], epochs=1, bs=16, lr=1e-2)
    out = tmp_path / 'out'
    assert bench.run_benchmark({**s, 'data': str(a)}, out, log=quiet)['done'] == 1
    got = bench.run_benchmark({**s, 'data': str(b)}, out, log=quiet)
    assert (got['done'], got['skipped']) == (1, 0)
    recs = [json.loads(p.read_text()) for p in (out / 'c2f' / 'runs').glob('*.json')]
    assert len({r['key'] for r in recs}) == 2 and len({r['config']['data_sha'] for r in recs}) == 2
    assert bench.run_benchmark({**s, 'data': str(b)}, out, log=quiet)['skipped'] == 1  # the same data: finished


def test_a_page_of_a_sweep_shows_its_runs_only(tmp_path):
    for rho in (10, 5): bench.run_benchmark({**TINY, 'tasks': ['lt'], 'rhos': [rho]}, tmp_path, log=quiet)
    cfg = bench.BenchConfig(**{**TINY, 'rhos': [5]})
    page = report.results_page(tmp_path, cfgs=[cfg], plots=False)
    assert '| 5 | erm |' in page and '| 10 | erm |' not in page and 'Finished: 1 of 1 planned runs' in page
    everything = report.results_page(tmp_path, plots=False)    # `fastamp report`: every run of the folder
    assert '| 5 | erm |' in everything and '| 10 | erm |' in everything


def test_what_cannot_train_is_refused_before_any_work(tmp_path):
    with pytest.raises(bench.SettingsError, match=r'--bs 5000: above the \d+ training images'):
        bench.run_benchmark({**TINY, 'tasks': ['lt'], 'bs': 5000}, tmp_path / 'o', log=quiet)
    with pytest.raises(bench.SettingsError, match='--bs 64.*a larger --subset'):
        bench.run_benchmark({**TINY, 'tasks': ['c2f'], 'subset': 10}, tmp_path / 'o', log=quiet)
    folder = _cifar_folder(tmp_path / 'c10', 0, n_train=2, n_test=1)
    with pytest.raises(bench.SettingsError, match='hold 10 classes, cifar100 has 100'):
        bench.run_benchmark({**TINY, 'tasks': ['lt'], 'dataset': 'cifar100', 'data': str(folder)}, tmp_path / 'o',
                            log=quiet)
    assert not (tmp_path / 'o').exists()     # no plan, no run, no record
    for bad, msg in [(dict(methods=['drw'], epochs=2), 'give --epochs 3'), (dict(many=20, few=100), '--many 20'),
                     (dict(arch='list_models'), '--arch'), (dict(arch='get_model'), '--arch')]:
        with pytest.raises(bench.SettingsError, match=msg): bench.check_settings({**TINY, **bad})


class _FailAfterEpoch(Callback):
    order = 100   # after the checkpoint of the epoch
    def __init__(self, k): self.k = k
    def after_epoch(self):
        if self.epoch + 1 == self.k: raise RuntimeError(f'injected failure after epoch {self.k}')


def test_a_cut_record_or_checkpoint_is_set_aside_and_its_run_trains_again(tmp_path):
    cfg = bench.BenchConfig(**{**TINY, 'seeds': [0, 1], 'epochs': 2})
    status, _ = bench.run_one(cfg, 'erm', 0, 10, tmp_path, cbs=[_FailAfterEpoch(1)])
    runs = tmp_path / 'lt' / 'runs'
    ckpt = runs / f"{bench.run_key(cfg, 'erm', 0, 10)}.ckpt"
    assert status == 'failed' and ckpt.exists()
    ckpt.write_bytes(ckpt.read_bytes()[:100])                                         # cut by a full disk
    rec = runs / f"{bench.run_key(cfg, 'erm', 1, 10)}.json"; rec.write_text('{"key": "lt_digits_erm_s1", "metr')
    lines = []
    assert bench.run_comparison(cfg, tmp_path, log=lines.append)['done'] == 2
    assert any(f'{rec}: cannot be read' in l for l in lines) and rec.with_name(rec.name + '.corrupt').exists()
    assert any(f'{ckpt}: cannot be read' in l and 'starts again from epoch 0' in l for l in lines)
    assert Path(f'{ckpt}.corrupt').exists()
    assert len(bench.runs_table(tmp_path)) == 2


def test_an_out_that_cannot_be_written_ends_in_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / 'file').write_text('')
    args = ['bench', '--task', 'lt', '--methods', 'erm', '--seeds', '0', '--epochs', '1']
    assert cli.main([*args, '--out', str(tmp_path / 'file' / 'sub')]) == 2
    assert 'file is a file' in capsys.readouterr().err

    def full(*a, **k): raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(bench.records, 'write_json', full)  # `RunRecord.save`
    assert cli.main([*args, '--out', str(tmp_path / 'o')]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fastamp: error: --out {tmp_path / 'o'}: cannot write there: No space left on device"]


def _csv(p:Path)->pd.DataFrame: return pd.read_csv(p)


def test_csv_logs_keep_what_was_logged_before_a_resume(tmp_path):
    cfg = bench.BenchConfig(**{**TINY, 'methods': ['midpoint'], 'epochs': 3})
    bench.run_one(cfg, 'midpoint', 0, 10, tmp_path / 'a', log='csv', cbs=[_FailAfterEpoch(2)])
    logs = tmp_path / 'a' / 'lt' / 'logs'
    key = bench.run_key(cfg, 'midpoint', 0, 10)
    before = _csv(logs / f'{key}.csv'), _csv(logs / f'{key}_steps.csv')
    assert bench.run_one(cfg, 'midpoint', 0, 10, tmp_path / 'a', log='csv')[0] == 'done'
    bench.run_one(cfg, 'midpoint', 0, 10, tmp_path / 'b', log='csv')        # the same run, never interrupted
    epochs, steps = _csv(logs / f'{key}.csv'), _csv(logs / f'{key}_steps.csv')
    ref = _csv(tmp_path / 'b' / 'lt' / 'logs' / f'{key}_steps.csv')
    assert list(epochs['epoch']) == [0, 1, 2]
    pd.testing.assert_frame_equal(epochs.iloc[:2], before[0].iloc[:2])     # the rows before the resume, as they were
    assert list(steps['iter']) == list(ref['iter']) == list(range(len(ref)))
    pd.testing.assert_frame_equal(steps.iloc[:len(before[1])], before[1])


class _Degenerate(Callback):
    def after_fit(self): warnings.warn(DegenerateWarning('nc1 is NaN: one class only.', 'nc1'))


def test_a_degenerate_measure_is_said_once_in_the_tables_not_per_run_on_stderr(tmp_path):
    cfg = bench.BenchConfig(**TINY)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert bench.run_one(cfg, 'erm', 0, 10, tmp_path, cbs=[_Degenerate()])[0] == 'done'
    assert not [w for w in caught if issubclass(w.category, DegenerateWarning)]
    rec = json.loads(next((tmp_path / 'lt' / 'runs').glob('*.json')).read_text())
    assert rec['notes']['nc1'] == 'nc1 is NaN: one class only.'
    page = report.results_page(tmp_path, cfgs=[cfg], plots=False)
    assert page.count('nc1 is NaN') == 1 and '`nc1` in 1 of 1 runs' in page


def test_bench_help_names_every_method_preset_and_dataset_with_no_warning():
    r = subprocess.run([FASTAMP, 'bench', '--help'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == '', r.stderr
    text = ' '.join(r.stdout.split())
    assert all(n in text for n in [*bench.METHODS, *bench.PRESETS, *bench.DATASETS]) and 'fastamp bench --list' in text


def test_data_from_FASTAMP_DATA_is_keyed_by_its_files(tmp_path, monkeypatch):
    from fastamp.datasets import _FMNIST_FILES
    for f in _FMNIST_FILES.values(): (tmp_path / f).write_bytes(b'idx')
    monkeypatch.setenv('FASTAMP_DATA', str(tmp_path))
    key = lambda: bench.run_key(bench.BenchConfig(dataset='fmnist'), 'erm', 0)
    first = key()
    (tmp_path / f).write_bytes(b'other idx')
    assert key() != first and key() == key()
