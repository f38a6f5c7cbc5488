"""Per-seed margin-balance numbers of a long-tailed `fastamp bench` folder run with `--probe-every`, and the paired
verdicts of results/fmnist_lt_margins.md (its rule is written there, before the runs).

Usage: python benchmarks/margin_curves.py OUT_DIR [--from-epoch 6] [--pairs midpoint:erm,midpoint-la:la] > tables.md
       python benchmarks/margin_curves.py OUT_DIR --final [--pairs midpoint:erm] > tables.md
For each run: the margin CV and min / max averaged over epochs FROM..last (NaN epochs dropped, counted) and at the
last epoch; for each pair, the per-seed differences, their mean, std, the 95 % Student t interval in the claimed
direction and the verdict of `fastamp.verdict.compare` read in that direction (supported / against / equivalent /
inconclusive).
--final reads runs without curves, at every rho: each run's balance measures from its recorded final per-class margins
(`fastamp.metrics.margin_balance`, so records older than `margin_spread` get it too), its smallest class margin (below
0, min / max and the CV stop reading balance), and each pair's per-seed differences within each rho, every comparison
printed labelled as one family (`fastamp.verdict.compare_family`: Holm), its interval that of method - reference.
"""
import argparse
import numpy as np, pandas as pd
from fastamp.bench import run_records
from fastamp.curves import probe_curves
from fastamp.metrics import margin_balance
from fastamp.report import to_markdown
from fastamp.verdict import compare, compare_family

CLAIM = {'margin_spread': -1, 'margin_std': -1, 'margin_cv': -1, 'margin_min_max': 1}  # reads as more balanced
# (margin_spread, margin_std: runs recorded since issue 36; the CV and min / max read the right way only while every
# class margin is > 0)
WORDS = {'better': 'supported', 'worse': 'against'}  # a label read in the claimed direction


def per_run(recs, metric, first):
    "One row per run: the mean of `metric` over epochs >= `first` (NaN dropped), NaN epochs there, the last value"
    df = probe_curves(recs, 'classifier', metric)
    late = df[df['epoch'] >= first]
    g = late.groupby(['method', 'seed'], sort=False)['value']
    last = df.sort_values('epoch').groupby(['method', 'seed'], sort=False)['value'].last()
    return pd.DataFrame({'over training': g.mean(), 'NaN epochs': g.apply(lambda v: int(v.isna().sum())),
                         'last epoch': last})


def verdict(d, sign):
    "`compare` of differences `d` (one per seed) in the claimed direction `sign`: the interval and the label"
    c = compare(sign * np.asarray(d))  # fastamp.verdict's rule, read in the claimed direction
    return f"[{c.low:+.4f}, {c.high:+.4f}]", WORDS.get(c.label, c.label)


def final_runs(recs):
    "One row per run (method, rho, seed): `margin_balance` of its final per-class margins, and the smallest of them"
    return pd.DataFrame([{'method': r.method, 'rho': r.rho, 'seed': r.seed, **margin_balance(r.class_margins),
                          'smallest class margin': min(r.class_margins)} for r in recs if r.class_margins]
                        ).set_index(['method', 'rho', 'seed']).sort_index()


def final(recs, pairs):
    "The --final tables: per measure each run's value, then every pair at every rho, one family"
    runs, order = final_runs(recs), list(dict.fromkeys(r.method for r in recs))
    rhos = sorted(runs.index.unique('rho'), reverse=True)
    for col in [*CLAIM, 'smallest class margin']:
        wide = runs[col].unstack('seed').round(4)
        wide.columns = [f's{s}' for s in wide.columns]
        wide['mean'], wide['std'] = runs[col].groupby(['method', 'rho']).mean().round(4), \
            runs[col].groupby(['method', 'rho']).std(ddof=1).round(4)
        wide = wide.reindex([(m, rho) for rho in rhos for m in order if (m, rho) in wide.index])
        print(f"### {col}: each run's final value, per rho\n\n{to_markdown(wide)}\n")
    rows, diffs = [], []
    for metric, sign in CLAIM.items():
        for rho in rhos:
            for new, ref in pairs:
                d = (runs.loc[(new, rho), metric] - runs.loc[(ref, rho), metric]).dropna()
                below = [(runs.loc[(m, rho), 'smallest class margin'] < 0).sum() for m in (new, ref)]
                rows.append({'measure': metric, 'rho': rho, 'pair': f'{new} - {ref}',
                             **{f's{s}': round(v, 4) for s, v in d.items()}, 'mean': round(d.mean(), 4),
                             'std': round(d.std(ddof=1), 4),
                             'runs with a class margin < 0 (method, reference)': f'{below[0]}, {below[1]} of {len(d)}'})
                diffs.append(sign * d.to_numpy())
    cs = compare_family(diffs)
    for row, c, sign in zip(rows, cs, [CLAIM[r['measure']] for r in rows]):
        low, high = (c.low, c.high) if sign > 0 else (-c.high, -c.low)  # the interval of method - reference
        row['interval (method - reference)'] = f"[{low:+.4f}, {high:+.4f}] at {100 * c.level:.1f} %"
        need = ('' if c.label != 'inconclusive' else f' ({c.seeds_needed} seeds would settle it)' if c.seeds_needed
                else ' (more than 100 seeds would be needed)')
        row['verdict'] = WORDS.get(c.label, c.label) + need
    print(f"### Paired differences, method - reference, runs paired by seed within each rho ({len(rows)} "
          f"comparisons, one family: Holm; equivalence margin ±{cs[0].margin:g}; supported: more balanced, lower "
          "spread, std and CV, higher min / max)\n")
    print(to_markdown(pd.DataFrame(rows).set_index('measure')) + '\n')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('out'); p.add_argument('--from-epoch', type=int, default=6)
    p.add_argument('--pairs', default='midpoint:erm,midpoint-la:la')
    p.add_argument('--final', action='store_true', help="runs without curves: their final per-class margins")
    a = p.parse_args(argv)
    recs = run_records(f'{a.out}/lt')
    pairs = [tuple(x.split(':')) for x in a.pairs.split(',')]
    if a.final: return final(recs, pairs)
    for metric, sign in CLAIM.items():
        if probe_curves(recs, 'classifier', metric).empty: continue  # a measure these runs did not record
        runs = per_run(recs, metric, a.from_epoch)
        print(f"### {metric}: each run, mean over epochs {a.from_epoch}-last and at the last epoch\n")
        wide = runs.unstack('seed').round(4)
        wide.columns = [f'{c} s{s}' for c, s in wide.columns]
        print(to_markdown(wide.reindex(list(dict.fromkeys(r.method for r in recs)))) + '\n')
        rows = []
        for new, ref in pairs:
            for col in ('over training', 'last epoch'):
                d = (runs.loc[new, col] - runs.loc[ref, col]).dropna()
                rows.append({'pair': f'{new} - {ref}', 'when': col,
                             **{f's{s}': round(v, 4) for s, v in d.items()}, 'mean': round(d.mean(), 4),
                             'std': round(d.std(ddof=1), 4),
                             **dict(zip(['interval (claimed direction)', 'verdict'], verdict(d.values, sign)))})
        print(f"### {metric}: paired differences (claimed direction: {'lower' if sign < 0 else 'higher'})\n")
        print(to_markdown(pd.DataFrame(rows).set_index('pair')) + '\n')


if __name__ == '__main__': main()
