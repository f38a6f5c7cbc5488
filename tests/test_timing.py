"Where a run's time goes (#40): phases in every record, the page's breakdown, the own-data budget, a sweep's progress"
import json, re, shutil
from pathlib import Path
import pytest
from fastamp.cli import main
from fastamp.datasets import load_digits, write_image_folder
from fastamp.bench import out_records, non_training_share, run_benchmark, PHASES, TRAIN
from fastamp.report import write_report


@pytest.fixture(scope='module')
def own(tmp_path_factory):
    """The default own-data command (`fastamp bench --data FOLDER`) on digits as a nested folder, 2 methods, 3 seeds, at
    `--size 28` as #40's own folder: at their 8 px, fastai's per-batch work is all of training and the share measures it"""
    flat = write_image_folder(load_digits(), tmp_path_factory.mktemp('own')/'digits')
    nested, out = tmp_path_factory.mktemp('own')/'nested', tmp_path_factory.mktemp('out')
    for c in (flat/'train').iterdir(): shutil.copytree(c, nested/('small' if int(c.name) < 5 else 'big')/c.name)
    assert main(['bench', '--data', str(nested), '--methods', 'erm,midpoint', '--seeds', '0,1,2', '--size', '28',
                 '--quiet', '--out', str(out)]) == 0
    return out


def test_every_record_has_its_phases(own):
    "Each run's record holds seconds per phase, training among them, covering its wall time"
    recs = out_records(own)
    assert {r.task for r in recs} == {'c2f', 'lt'} and len(recs) == 12
    for r in recs:
        assert set(r.phases) <= set(PHASES) and r.phases[TRAIN] > 0 and 'collapse' in r.phases
        assert ('probes' in r.phases) == (r.task == 'c2f'), (r.task, r.phases)  # the final probes: coarse-to-fine's
        assert sum(r.phases.values()) >= 0.9 * r.wall_s


def test_the_default_own_data_command_spends_at_most_a_quarter_beside_training(own):
    "Everything that is not training (data, probes, measures, tables, checkpoints, records) <= 25 % of training"
    recs = out_records(own)
    assert recs[0].config['loader'] == 'device'  # a folder that fits in memory is decoded once, not per batch
    assert non_training_share(recs) <= 0.25


def test_the_page_prints_the_breakdown_and_records_without_phases_print_none(own, tmp_path):
    "results.md has a breakdown per task; the same records without their phases (made before them) give none"
    page = (own/'results.md').read_text()
    assert page.count('where the time went') == 2 and '| train | the fit' in page
    old = tmp_path/'old'; shutil.copytree(own, old)
    for p in old.glob('*/runs/*.json'):
        d = json.loads(p.read_text()); del d['phases']; p.write_text(json.dumps(d))
    assert 'where the time went' not in write_report(old, plots=False)


def test_a_sweep_says_its_progress_in_plain_lines(tmp_path):
    "Not in a terminal: a line as each run starts (finished of planned, time left, the run) and one at the end"
    s = dict(dataset='digits', tasks=['lt'], methods=['erm'], seeds=[0, 1], rhos=[10], epochs=1)
    lines = []
    assert run_benchmark(s, tmp_path, log=lines.append)['done'] == 2
    prog = [l for l in lines if l.startswith('progress:')]
    assert len(prog) == 3, lines
    assert re.fullmatch(r'progress: 0 of 2 runs finished; now lt_digits_erm_s0_rho10_\w+', prog[0])
    assert re.fullmatch(r'progress: 1 of 2 runs finished, about \d+:\d\d:\d\d left \(from 1 run\(s\) finished '
                        r'here\); now lt_digits_erm_s1_rho10_\w+', prog[1])
    assert re.fullmatch(r'progress: 2 of 2 runs finished, in \d+:\d\d:\d\d', prog[2])
    again, quiet = [], []
    run_benchmark(s, tmp_path, log=again.append)                     # nothing left to run: nothing to say
    run_benchmark({**s, 'seeds': [2]}, tmp_path, log=quiet.append, progress=False)   # `--quiet`
    assert not [l for l in again + quiet if l.startswith('progress:')] and quiet[0].startswith('done lt_digits_erm_s2')


def test_the_budget_page_rebuilds_from_the_records_beside_it():
    "results/own_data_budget.md (#40 item 4) is `benchmarks/own_data_page.py` of its two sweeps' committed records"
    from conftest import load_script
    root = Path(__file__).resolve().parents[1]
    script, d = load_script(root/'benchmarks'/'own_data_page.py'), root/'results'/'own_data_budget'
    page = script.page(d/'before', d/'after')
    assert page + '\n' == (root/'results'/'own_data_budget.md').read_text() and '**Verdict: met.**' in page
