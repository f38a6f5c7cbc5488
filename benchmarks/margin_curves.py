"""Per-seed margin-balance numbers of a long-tailed `fastamp bench` folder run with `--probe-every`, and the paired
verdicts of results/fmnist_lt_margins.md (its rule is written there, before the runs).

Usage: python benchmarks/margin_curves.py OUT_DIR [--from-epoch 6] [--pairs midpoint:erm,midpoint-la:la] > tables.md
For each run: the margin CV and min / max averaged over epochs FROM..last (NaN epochs dropped, counted) and at the
last epoch; for each pair, the per-seed differences, their mean, std, the 95 % Student t interval in the claimed
direction and the verdict of `fastamp.verdict.compare` read in that direction (supported / against / equivalent /
inconclusive).
"""
import argparse
import numpy as np, pandas as pd
from fastamp.bench import run_records
from fastamp.curves import probe_curves
from fastamp.report import to_markdown
from fastamp.verdict import compare

CLAIM = {'margin_spread': -1, 'margin_cv': -1, 'margin_min_max': 1}  # the direction that reads as more balanced
# (margin_spread: runs recorded since issue 36; the CV and min / max read the right way only while margins are > 0)


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
    return f"[{c.low:+.4f}, {c.high:+.4f}]", {'better': 'supported', 'worse': 'against'}.get(c.label, c.label)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('out'); p.add_argument('--from-epoch', type=int, default=6)
    p.add_argument('--pairs', default='midpoint:erm,midpoint-la:la')
    a = p.parse_args(argv)
    recs = run_records(f'{a.out}/lt')
    pairs = [tuple(x.split(':')) for x in a.pairs.split(',')]
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
