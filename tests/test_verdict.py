"""The answer of a benchmark (#24, item 5; #35): paired per-seed differences against ERM and the best baseline with an
interval, an equivalence margin and one error rate per page, at the top of the results page and printed by `fastamp bench` / `fastamp report`; per-class accuracy
with the worst classes named, the shot groups by the runs' counts, and its plot.

Most tests read fake run records with known per-seed numbers (no training); one trains two one-epoch digits runs."""
import json, shutil
from dataclasses import asdict
from pathlib import Path
import pandas as pd, pytest
from hypothesis import given, settings, strategies as st

from fastamp.bench import BenchConfig, versions, run_comparison, run_records
from fastamp.bench.catalog import load_dataset
from fastamp.report import write_report, verdict_lines
import numpy as np
from fastamp.verdict import comparisons, compare, compare_family

COUNTS, NAMES = [120, 60, 30, 15, 8], ['cat', 'dog', 'fox', 'owl', 'yak']


def _runs(per_seed:dict, rho=10.)->pd.DataFrame:
    "A frame of runs: method -> its per-seed balanced accuracy"
    return pd.DataFrame([{'method': m, 'seed': s, 'rho': rho, 'balanced_accuracy': v}
                         for m, vs in per_seed.items() for s, v in enumerate(vs)])


def _verdicts(per_seed:dict)->dict:
    c = comparisons(_runs(per_seed), 'balanced_accuracy')
    return {(m, a): v for m, a, v in zip(c['method'], c['against'], c['verdict'])}


# --- the rule, on fake methods with known per-seed numbers

def test_known_numbers_give_the_four_verdicts():
    v = _verdicts({'erm': [.50, .60, .70, .65, .55], 'better': [.52, .63, .71, .67, .58],
                   'worse': [.45, .58, .66, .62, .50], 'noisy': [.55, .57, .71, .60, .58],
                   'same': [.501, .599, .701, .651, .549]})
    assert v[('better', 'erm')] == 'better' and v[('worse', 'erm')] == 'worse'
    assert v[('noisy', 'erm')] == 'inconclusive' and v[('same', 'erm')] == 'equivalent'
    assert set(_verdicts({'erm': [.5], 'midpoint': [.9]}).values()) == {'inconclusive'}


def test_every_seed_ahead_but_a_spread_larger_than_the_mean_is_inconclusive():
    c = compare([.001, .001, .2])
    assert c.label == 'inconclusive' and c.low < 0 < c.high and c.seeds_needed > 3
    assert compare([.1, .11, .12]).label == 'better'


def test_identical_runs_are_equivalent_within_any_margin():
    for n in (2, 3, 5):
        c = compare([0.] * n, margin=1e-6)
        assert c.label == 'equivalent' and c.low == c.high == 0


@pytest.mark.parametrize('n', [3, 5])
def test_with_no_true_difference_better_is_said_at_most_2_5_percent_of_the_time(n):
    "`compare` itself on 20,000 simulated comparisons (normal per-seed noise): 2.5 % within Monte Carlo error"
    rng = np.random.default_rng(n)
    better = np.mean([compare(d).label == 'better' for d in rng.normal(0, .01, (20_000, n))])
    assert better <= .025 + 3 * np.sqrt(.025 * .975 / 20_000)


def test_a_page_of_comparisons_shares_one_error_rate():
    "Six methods with no true difference against one reference: a false label on at most 5 % of pages"
    rng, wrong = np.random.default_rng(0), 0
    for _ in range(600):
        x = rng.normal(0, .01, (7, 5))
        wrong += any(c.label in ('better', 'worse') for c in compare_family([x[i] - x[0] for i in range(1, 7)]))
    assert wrong / 600 <= .05 + 3 * np.sqrt(.05 * .95 / 600)


@settings(max_examples=60, deadline=None)
@given(base=st.lists(st.floats(0, 1), min_size=3, max_size=6), delta=st.floats(1e-3, .2),
       noise=st.lists(st.floats(-.1, .1), min_size=6, max_size=6))
def test_a_steady_shift_on_every_seed_is_better_or_worse(base, delta, noise):
    "Any per-seed numbers: a method better by `delta` (+-10%) on each of 3+ seeds is better, worse by as much is worse"
    shift = [delta * (1 + e) for e in noise[:len(base)]]
    v = _verdicts({'erm': base, 'up': [b + s for b, s in zip(base, shift)],
                   'down': [b - s for b, s in zip(base, shift)]})
    assert v[('up', 'erm')] == 'better' and v[('down', 'erm')] == 'worse'
    one = _verdicts({'erm': base[:1], 'up': [base[0] + shift[0]]})
    assert one[('up', 'erm')] == 'inconclusive'


def test_runs_are_paired_by_seed_and_by_rho():
    "A seed one method lacks is left out; the rhos are compared apart"
    df = pd.concat([_runs({'erm': [.5, .6, .7], 'midpoint': [.6, .7]}, rho=10.),
                    _runs({'erm': [.5, .6], 'midpoint': [.4, .5]}, rho=100.)])
    c = comparisons(df, 'balanced_accuracy').set_index('rho')
    assert c.loc[10., 'seeds'] == 2 and c.loc[10., 'mean'] == pytest.approx(.1)
    assert c.loc[100., 'mean'] == pytest.approx(-.1)
    assert c.loc[10., 'verdict'] == 'better' and c.loc[100., 'verdict'] == 'worse'  # the same shift on every seed


def test_the_best_baseline_is_the_best_method_that_is_not_am_mixup():
    v = _verdicts({'erm': [.5, .6], 'la': [.6, .7], 'mixup': [.55, .65], 'midpoint': [.9, .9]})
    assert ('midpoint', 'la') in v and ('mixup', 'la') in v  # midpoint is best, but it is not a baseline
    assert ('erm', 'la') not in v and ('la', 'la') not in v  # ERM against it is the line `la` vs `erm`
    assert all(a in ('erm', 'la') for _, a in v)
    assert not any(a != 'erm' for _, a in _verdicts({'erm': [.7, .8], 'la': [.6, .7], 'midpoint': [.9, .9]}))


# --- the page and the plot, from fake records

def _record(out:Path, task:str, method:str, seed:int, metrics:dict, rho=None, methods=('erm', 'midpoint', 'mixup')):
    cfg = asdict(BenchConfig(task=task, methods=list(methods), seeds=[0, 1, 2], rhos=[rho] if rho else [10],
                             epochs=1, many=50, few=10))
    rec = {'key': f'{task}_{method}_{seed}_{rho}_0123abcd', 'task': task, 'dataset': 'digits', 'method': method,
           'seed': seed, 'rho': rho, 'metrics': metrics, 'collapse': {'alignment': .5, 'uniformity': -1.},
           'wall_s': 1., 'config': cfg, 'versions': versions(), 'method_detail': f'{method} (fake)',
           'per_class_accuracy': [.9, .8, .6, .3 + .1 * seed, .1 * (method == 'midpoint')],
           'class_counts': COUNTS, 'class_names': NAMES}
    (out/task/'runs').mkdir(parents=True, exist_ok=True)
    (out/task/'runs'/f"{rec['key']}.json").write_text(json.dumps(rec))


LT = {'erm': [.50, .60, .70], 'midpoint': [.55, .66, .72], 'mixup': [.45, .50, .69]}


@pytest.fixture
def fake_out(tmp_path):
    for m, vs in LT.items():
        for s, v in enumerate(vs): _record(tmp_path, 'lt', m, s, {'accuracy': v, 'balanced_accuracy': v}, rho=10.)
    return tmp_path


def test_write_report_reads_each_record_once(fake_out, monkeypatch):
    "One read of the folder's records, handed down to the runs table, the verdicts, the plan's line and the tables"
    from fastamp.bench.records import RunRecord
    loads, load = [], RunRecord.load.__func__
    counted = lambda cls, path: loads.append(Path(path).name) or load(cls, path)
    monkeypatch.setattr(RunRecord, 'load', classmethod(counted))
    write_report(fake_out, plots=False)
    files = sorted(p.name for p in fake_out.glob('*/runs/*.json'))
    assert len(files) == 9 and sorted(loads) == files


def test_a_record_written_before_the_record_type_loads(tmp_path):
    "Records without `schema` (layout 1) read as they were, keys the type does not know kept; new ones carry `SCHEMA`"
    from fastamp.bench.records import RunRecord, SCHEMA, read_record
    old = json.loads(next((RESULTS/'digits').glob('lt/runs/*.json')).read_text())
    assert 'schema' not in old
    p = tmp_path/'old.json'; p.write_text(json.dumps({**old, 'by_hand': [1, 2]}))
    rec = read_record(p)
    assert (rec.schema, rec.key, rec.plan, rec.extra) == (1, old['key'], old['plan'], {'by_hand': [1, 2]})
    assert rec.to_dict() == {'schema': 1, **old, 'by_hand': [1, 2]}                    # nothing lost
    assert rec.save(tmp_path/'again.json') and read_record(tmp_path/'again.json') == rec
    assert SCHEMA > 1 and RunRecord(**{k: old[k] for k in ('key', 'task', 'dataset', 'method', 'seed', 'rho',
                                       'metrics', 'collapse', 'wall_s', 'config', 'versions')}).schema == SCHEMA

def test_the_page_starts_with_the_verdict_lines(fake_out):
    page = write_report(fake_out, plots=False)
    assert (fake_out/'results.md').read_text() == page
    lines = verdict_lines(fake_out)
    assert lines == [
        'long-tailed, digits, cnn, rho 10: `midpoint` vs `erm`, balanced_accuracy: +0.0433 [-0.0312, +0.1179] at '
        '97.5 %, 3 seeds: inconclusive (5 seeds would find a true difference of this size 80 % of the time)',
        'long-tailed, digits, cnn, rho 10: `mixup` vs `erm`, balanced_accuracy: -0.0533 [-0.2149, +0.1082] at 97.5 %, '
        '3 seeds: inconclusive (10 seeds would find a true difference of this size 80 % of the time)']
    head = page.split('\n\n')
    assert head[0] == '## Verdict' and head[1].startswith('Paired per-seed differences')
    assert "within ±0.005" in head[1] and "The page's 2 comparisons are one family" in head[1]
    assert head[2] == '\n'.join(f'- {l}' for l in lines)  # then how the runs were made, then the tables


def test_the_per_class_section_names_the_worst_classes_and_the_shot_groups(fake_out):
    page = write_report(fake_out, plots=False)
    assert '### long-tailed: per-class accuracy, rho 10' in page
    assert ('Shot groups by the training counts: many (> 50 items): 2 classes: cat (120), dog (60); medium (10 to 50 '
            'items): 2 classes: fox (30), owl (15); few (< 10 items): 1 class: yak (8).') in page
    assert 'Worst classes (mean accuracy over seeds): `erm`: yak (0.00), owl (0.40), fox (0.60)' in page
    rows = [l for l in page.splitlines() if l.startswith('| yak |') or l.startswith('| owl |')]
    assert rows[0].startswith('| yak | 8 | few |')  # worst first
    assert not list(fake_out.glob('lt/plots/per_class_*.png'))  # plots=False: no file, no link


def test_the_per_class_plot_is_written_and_linked(fake_out):
    page = write_report(fake_out)
    pngs = list((fake_out/'lt'/'plots').glob('per_class_digits_*_rho10.png'))
    assert len(pngs) == 1 and pngs[0].stat().st_size > 1000
    assert f'](lt/plots/{pngs[0].name})' in page


def test_coarse_to_fine_is_judged_on_the_fine_linear_probe(tmp_path):
    for m, vs in {'erm': [.80, .82], 'midpoint': [.84, .85]}.items():
        for s, v in enumerate(vs):
            _record(tmp_path, 'c2f', m, s, {'coarse_accuracy': .99 - v / 10, 'fine_linear_probe_pooled': v},
                    methods=('erm', 'midpoint'))
    lines = verdict_lines(tmp_path)
    assert lines == ['coarse-to-fine, digits, cnn: `midpoint` vs `erm`, fine_linear_probe_pooled: +0.0350 [-0.0285, '
                     '+0.0985], 2 seeds: inconclusive (4 seeds would find a true difference of this size 80 % of the '
                     'time)']
    page = write_report(tmp_path)  # its per-class accuracy would be of the coarse classes: not the task's question
    assert page.startswith('## Verdict') and 'per-class accuracy' not in page
    assert not list(tmp_path.glob('c2f/plots/per_class_*'))


def test_fastamp_report_prints_the_verdict_lines(fake_out, capsys):
    from fastamp.cli import main
    assert main(['report', '--out', str(fake_out)]) == 0
    out = capsys.readouterr().out
    assert out.startswith('## Verdict') and all(l in out for l in verdict_lines(fake_out))


def test_report_pairs_join_the_family_and_name_no_best_baseline(tmp_path, capsys):
    "`fastamp report --pairs midpoint-la:la` adds that comparison to the page's one family (#36 item 2)"
    from fastamp.cli import main
    runs = {'erm': [.50, .60, .70], 'la': [.45, .56, .66], 'midpoint-la': [.56, .665, .75]}  # ERM the best baseline
    for m, vs in runs.items():
        for s, v in enumerate(vs): _record(tmp_path, 'lt', m, s, {'balanced_accuracy': v}, rho=10.)
    assert len(verdict_lines(tmp_path)) == 2
    assert main(['report', '--out', str(tmp_path), '--no-plots', '--pairs', 'midpoint-la:la,la:erm']) == 0
    out = capsys.readouterr().out
    assert "The page's 3 comparisons are one family" in out  # la vs erm: made already, not twice
    pair = [l for l in out.splitlines() if '`midpoint-la` vs `la`' in l]
    assert len(pair) == 1 and '(best baseline)' not in pair[0]
    assert main(['report', '--out', str(tmp_path), '--pairs', 'midpoint:erm']) == 2
    assert "no run of 'midpoint'" in capsys.readouterr().err


def test_the_margin_decides_what_is_equivalent(tmp_path, capsys):
    "`--margin` reaches the verdict: the same runs are equivalent within 0.05 and inconclusive within 0.005"
    from fastamp.cli import main
    for m, vs in {'erm': [.50, .60, .70], 'midpoint': [.505, .598, .703]}.items():
        for s, v in enumerate(vs): _record(tmp_path, 'lt', m, s, {'balanced_accuracy': v}, rho=10.)
    assert verdict_lines(tmp_path)[0].endswith('+0.0020 [-0.0070, +0.0110], 3 seeds: inconclusive (28 seeds would '
                                               'find a true difference of this size 80 % of the time)')
    assert main(['report', '--out', str(tmp_path), '--no-plots', '--margin', '0.05']) == 0
    out = capsys.readouterr().out
    assert ': equivalent\n' in out and 'within ±0.05 and holds 0,' in out
    assert main(['report', '--out', str(tmp_path), '--margin', '-1']) == 2
    assert "argument --margin: '-1': give a margin >= 0" in capsys.readouterr().err


# --- real runs record what the per-class section reads

def test_a_run_records_its_class_counts_and_names(tmp_path):
    cfg = BenchConfig(task='lt', methods=['erm', 'midpoint'], seeds=[0], rhos=[10], epochs=1, lr=1e-2)
    run_comparison(cfg, tmp_path, log=lambda l: None)
    recs = run_records(tmp_path/'lt', cfg)
    assert len(recs) == 2 and recs[0].class_names == [str(i) for i in range(10)]
    counts = recs[0].class_counts  # the items trained on: the long-tailed subset less its validation split (#36)
    digits = load_dataset('digits')[0]  # from its labels: the exponential profile at rho 10, head = the rarest class's
    n_max = np.bincount(digits.labels[digits.train_idx]).min()  # count, less each class's validation items
    subset = np.floor(n_max * 10. ** (-np.arange(10) / 9) + 1e-9).astype(int)
    val = np.minimum(max(5, round(0.2 * subset.min())), subset - 1)
    assert counts == recs[1].class_counts == (subset - val).tolist()
    assert sum(counts) + recs[0].metrics['val_items'] == subset.sum() and min(counts) >= 1
    page = write_report(tmp_path, cfgs=[cfg], plots=False)
    assert page.startswith('## Verdict') and '1 seed: inconclusive (one seed has no interval' in page and '| class | train items | shot |' in page


def test_fastamp_bench_prints_the_verdict_after_its_runs(tmp_path, capsys):
    "The end of a run: the verdict lines come right after the runs' lines, before the tables"
    from fastamp.cli import main
    assert main(['bench', '--task', 'lt', '--methods', 'erm,midpoint', '--seeds', '0,1', '--epochs', '1',
                 '--threads', '1', '--out', str(tmp_path)]) == 0
    lines = verdict_lines(tmp_path)
    assert len(lines) == 1 and lines[0].startswith('long-tailed, digits, cnn, rho 20: `midpoint` vs `erm`')
    after_runs = capsys.readouterr().out.split('\n## Verdict\n', 1)[1]
    assert 'done ' not in after_runs and after_runs.index(lines[0]) < after_runs.index('## long-tailed')



def test_a_planned_page_reads_its_plans_margin(tmp_path, capsys):
    "Records of a plan that fixed a margin are read with it; another `--margin` is used and the page says so"
    from fastamp.cli import main
    for m, vs in {'erm': [.50, .60, .70], 'midpoint': [.505, .598, .703]}.items():
        for s, v in enumerate(vs): _record(tmp_path, 'lt', m, s, {'balanced_accuracy': v}, rho=10.)
    for p in tmp_path.glob('lt/runs/*.json'):
        rec = json.loads(p.read_text()); rec['plan'] = {'hash': 'abc', 'margin': .05}; p.write_text(json.dumps(rec))
    assert verdict_lines(tmp_path)[0].endswith(': equivalent')
    assert main(['report', '--out', str(tmp_path), '--no-plots', '--margin', '0.005']) == 0
    out = capsys.readouterr().out
    assert 'within ±0.005 (the plan fixed ±0.05) and holds 0' in out and ': inconclusive (28 seeds' in out

# --- committed results pages: records beside them, or a word that they are gone

RESULTS = Path(__file__).resolve().parents[1]/'results'
WITH_RECORDS = ['digits', 'fmnist_lt', 'fmnist_lt_rho50', 'cifar10_lt']  # results/<name>.md with results/<name>/runs
# the options its page's rebuild command gives `fastamp report`
REPORT_ARGS = {'cifar10_lt': ['--pairs', 'midpoint-drw:drw,midpoint-la:la,midpoint-ldam-drw:ldam-drw']}
BY_SCRIPT = ['own_data_budget']  # pages a script of benchmarks/ rebuilds from the records beside them (own tests)


def test_a_committed_page_rebuilds_from_its_records_exactly(tmp_path):
    "`fastamp report --out results/digits` writes the committed results.md and runs.csv again, byte for byte"
    from fastamp.cli import main
    for name in WITH_RECORDS:
        src, out = RESULTS/name, tmp_path/name
        shutil.copytree(src, out)
        (out/'results.md').unlink(); (out/'runs.csv').unlink()
        assert main(['report', '--out', str(out), *REPORT_ARGS.get(name, [])]) == 0
        assert (out/'results.md').read_text() == (src/'results.md').read_text()
        assert (out/'runs.csv').read_text() == (src/'runs.csv').read_text()
        recs = [json.loads(p.read_text()) for p in src.glob('*/runs/*.json')]
        assert recs and all(r['versions'].get('commit') and r.get('plan', {}).get('hash') for r in recs)
        assert (src/'results.md').read_text().count('Pre-registered: plan ') == 1


def test_every_results_page_has_its_records_or_says_they_are_gone():
    pages = [p for p in sorted(RESULTS.glob('*.md')) if p.name != 'README.md']
    kept = {p.stem for p in pages if list((RESULTS/p.stem).glob('**/runs/*.json'))}
    assert kept == set(WITH_RECORDS) | set(BY_SCRIPT)
    gone = [p.name for p in pages if p.stem not in kept and '**Records not kept**' not in p.read_text()]
    assert not gone, f"pages with neither records beside them nor the 'Records not kept' note: {gone}"



def test_the_margin_balance_page_prints_what_the_script_reads_from_the_records(capsys):
    "results/fmnist_lt/balance.md (#36 item 3): its tables are `margin_curves.py --final` of the committed records"
    from conftest import load_script
    script = load_script(RESULTS.parent/'benchmarks'/'margin_curves.py')
    script.main([str(RESULTS/'fmnist_lt'), '--final', '--pairs', 'midpoint:erm'])
    tables = capsys.readouterr().out.strip()
    page = (RESULTS/'fmnist_lt'/'balance.md').read_text()
    assert tables and page.rstrip().endswith(tables) and page.count('| inconclusive (') == 12

# --- #39: runs a page cannot count, stale plans, several settings, bad files (items 5, 6, 9, 10, 16, 17)

def _edit(path:Path, **kw):
    "Rewrite the record at `path` with `kw` changed (None: the key removed)"
    rec = json.loads(path.read_text()); rec.update(kw)
    path.write_text(json.dumps({k: v for k, v in rec.items() if v is not None}))


def test_a_nan_seed_is_named_and_counted_on_the_page(fake_out):
    "One seed's primary metric NaN: the table counts 2 seeds, the verdict pairs 2 and both name the run left out"
    _edit(fake_out/'lt'/'runs'/'lt_erm_2_10.0_0123abcd.json', metrics={'accuracy': .7, 'balanced_accuracy': None})
    page = write_report(fake_out, plots=False)
    assert '| 10 | erm | 0.5500 ± 0.0707 | 0.5500 ± 0.0707 | 2 |' in page
    assert 'Left out of the means and the verdicts: 1 of these 9 runs, `erm` seed 2 rho 10 (no balanced_accuracy).' in page
    line = next(l for l in verdict_lines(fake_out) if '`midpoint` vs `erm`' in l)
    assert ', 2 seeds: ' in line and line.endswith('; left out: `erm` seed 2 (no balanced_accuracy)')


def test_erm_nan_on_every_seed_names_its_runs_on_each_line(fake_out):
    for s in range(3): _edit(fake_out/'lt'/'runs'/f'lt_erm_{s}_10.0_0123abcd.json',
                             metrics={'accuracy': .5, 'balanced_accuracy': float('nan')})
    lines = [l for l in verdict_lines(fake_out) if 'vs `erm`' in l]
    assert len(lines) == 2 and all(': no paired runs; left out: `erm` seed 0 (balanced_accuracy NaN); `erm` seed 1' in l
                                   for l in lines)


def test_a_diverged_run_is_recorded_as_such_and_kept_out_of_means_and_verdicts(tmp_path, fake_out):
    "--lr 1e6 trains to NaN weights: the record says so (one read at the end); the page leaves such a run out, named"
    cfg = BenchConfig(task='lt', methods=['erm'], seeds=[0], rhos=[10], epochs=1, lr=1e6)
    lines = []; run_comparison(cfg, tmp_path/'div', log=lines.append)
    assert run_records(tmp_path/'div'/'lt', cfg)[0].diverged == 'weights' and 'DIVERGED (weights' in lines[0]
    _edit(fake_out/'lt'/'runs'/'lt_midpoint_1_10.0_0123abcd.json', diverged='loss')
    page = write_report(fake_out, plots=False)
    assert '`midpoint` seed 1 rho 10 (diverged: loss not finite)' in page and '| 10 | midpoint | 0.6350 ± 0.1202' in page
    assert '2 seeds: ' in next(l for l in verdict_lines(fake_out) if l.startswith('long-tailed, digits, cnn, rho 10: `midpoint` vs `erm`'))


def test_planned_runs_no_finished_command_asked_for_are_set_apart(fake_out):
    "A complete sweep beside the keys of a killed command with other options: all its runs counted, the rest named"
    mine = [f'lt_digits_{m}_s{s}_rho10_0123abcd' for m in LT for s in range(3)]
    other = [f'lt_digits_erm_s{s}_rho10_deadbeef' for s in range(4)] + ['lt_digits_erm_s7_rho10_0123abcd']
    (fake_out/'plan.json').write_text(json.dumps({'runs': {'lt': mine + other}}))
    page = write_report(fake_out, plots=False)
    assert 'Finished: 9 of 9 planned runs. Not counted: 5 run(s) of plan.json that no finished run' in page
    assert 'Mean ± std over seeds (best mean marked *), 9 of 9 planned runs:' in page


def test_two_settings_in_one_out_name_their_setting_in_headings_and_lines(fake_out):
    for p in list((fake_out/'lt'/'runs').glob('*.json')):
        rec = json.loads(p.read_text())
        rec['key'] = rec['key'].replace('0123abcd', 'feedbeef'); rec['config']['lr'] = .1
        (p.parent/f"{rec['key']}.json").write_text(json.dumps(rec))
    page = write_report(fake_out, plots=False)
    assert '## long-tailed: digits (lr 0.005)' in page and '## long-tailed: digits (lr 0.1)' in page
    lines = verdict_lines(fake_out)
    assert len({l for l in lines}) == len(lines) and any(l.startswith('long-tailed, digits, cnn (lr 0.1), rho 10: ')
                                                         for l in lines)


def test_bad_files_in_a_report_folder_are_set_aside_or_named(fake_out, capsys):
    "A record or plan.json of the wrong shape: set aside with a warning; an empty overhead.csv: a line; no traceback"
    from fastamp.cli import main
    _edit(fake_out/'lt'/'runs'/'lt_mixup_0_10.0_0123abcd.json', seed=[0])
    _edit(fake_out/'lt'/'runs'/'lt_mixup_1_10.0_0123abcd.json', class_counts=[1, 2])  # JSON a page cannot read
    (fake_out/'plan.json').write_text('{"runs": {"lt": 5}}')
    (fake_out/'overhead').mkdir(); (fake_out/'overhead'/'overhead.csv').write_text('')
    with pytest.warns(UserWarning) as w: assert main(['report', '--out', str(fake_out), '--no-plots']) == 0
    said = ' '.join(str(m.message) for m in w)
    assert 'lt_mixup_0_10.0_0123abcd.json: cannot be read' in said and '`seed` is list' in said
    assert 'plan.json: cannot be read' in said and (fake_out/'plan.json.corrupt').exists()
    assert 'lt_mixup_1_10.0_0123abcd.json: cannot be read' in said and 'lists have different lengths' in said
    assert '`overhead/overhead.csv` holds no measurement' in capsys.readouterr().out


def test_one_seed_shows_no_spread_and_a_bar_in_a_class_name_stays_in_its_cell(tmp_path):
    for m, v in {'erm': .5, 'midpoint': .6}.items(): _record(tmp_path, 'lt', m, 0, {'balanced_accuracy': v}, rho=10.)
    for p in (tmp_path/'lt'/'runs').glob('*.json'): _edit(p, class_names=['c|t', *NAMES[1:]])
    page = write_report(tmp_path, plots=False)
    assert '| 10 | erm | 0.5000 | 1 |' in page and '± 0.0000' not in page.split('collapse measures')[0]
    assert '| c\\|t | 120 |' in page


def test_the_page_describes_a_fine_tune_run_as_it_ran(tmp_path, capsys):
    "fine_tune's frozen and unfrozen epochs, its schedule, where the weights started and --size (#39 item 10)"
    from fastamp.cli import main
    assert main(['bench', '--task', 'lt', '--arch', 'resnet18', '--no-pretrained', '--schedule', 'fine_tune',
                 '--freeze-epochs', '2', '--epochs', '1', '--size', '12', '--methods', 'erm', '--seeds', '0',
                 '--threads', '1', '--out', str(tmp_path)]) == 0
    page = (tmp_path/'results.md').read_text()
    assert ('arch resnet18, from scratch, images resized to 12 px, 2 epochs with the body frozen, then 1 epoch '
            "unfrozen, batch size 64, adam with fastai's fine_tune (one-cycle per stage) lr 0.005") in page
    assert 'warm-up and step' not in page


def test_long_tailed_runs_without_validation_are_labelled_chosen_on_test(tmp_path):
    "#36: older records (no validation split) keep the rule that says 'by mean test score'; beside newer ones, each line"
    from fastamp.report import verdict_section
    out = tmp_path/'fmnist_lt'; shutil.copytree(RESULTS/'fmnist_lt', out)
    assert 'else by mean test score on these runs (long-tailed; this can only favour it)' in verdict_section(out)
    for p in (out/'lt'/'runs').glob('*.json'):  # rho 100 as if recorded with its validation split, the others older
        r = json.loads(p.read_text())
        if r['rho'] == 100: r['metrics']['balanced_accuracy_val'] = r['metrics']['balanced_accuracy']
        p.write_text(json.dumps(r))
    lines = verdict_lines(out)
    marked = [l for l in lines if l.endswith('(chosen on test)') or '(chosen on test);' in l]
    assert marked and all('rho 100' not in l and '(best baseline)' in l for l in marked)
    assert not [l for l in lines if 'rho 100' in l and 'chosen on test' in l]
    assert "lines marked 'chosen on test'" in verdict_section(out)
