"""Turn a finished `fastamp bench` output folder into a results/*.md page: command, machine, versions, seeds, wall time,
and the tables, exactly as the runs recorded them.

Usage: python benchmarks/write_results.py OUT_DIR TITLE "COMMAND" [LOG] > results/NAME.md
"""
import json, platform, sys
from pathlib import Path
import pandas as pd
from fastamp.bench import load_records, summarize, to_markdown


def main(out, title, command, log=None):
    out = Path(out)
    print(f'# {title}\n\nCommand: `{command}`\n')
    recs = [json.loads(p.read_text()) for p in sorted(out.glob('*/runs/*.json'))]
    if recs:
        v = recs[0]['versions']; cfg = recs[0]['config']
        print(f"Machine: {platform.machine()} CPU, {v['cpu_threads']} torch thread(s), GPU: {v['cuda'] or 'none'}; "
              f"python {v['python']}, torch {v['torch']}, fastai {v['fastai']}, fastamp {v['fastamp']}.\n")
        print(f"Fixed across methods: dataset {cfg['dataset']}, arch {cfg['arch']}, {cfg['epochs']} epochs, batch size "
              f"{cfg['bs']}, one-cycle lr {cfg['lr']}, seeds {sorted({r['seed'] for r in recs})}"
              + (f", rho {sorted({r['rho'] for r in recs if r['rho'] is not None})}, shot groups many > {cfg['many']}, few < {cfg['few']}" if cfg['task'] == 'lt' else '') + '.\n')
        print(f"Runs: {len(recs)}; summed wall time of the runs {sum(r['wall_s'] for r in recs) / 60:.1f} min.\n")
        print('Methods (paper defaults for the baselines):\n')
        for m in dict.fromkeys(r['method'] for r in recs): print(f"- `{m}`: {next(r['method_detail'] for r in recs if r['method'] == m)}")
        print()
    if log and Path(log).exists():
        real = [l for l in Path(log).read_text().splitlines() if l.startswith('real')]
        if real: print(f"Elapsed for the whole command: {real[-1].split()[1]}.\n")
    for task_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        if (task_dir / 'overhead.csv').exists():
            df = pd.read_csv(task_dir / 'overhead.csv').set_index('method').round(3)
            print('## training overhead (median ms per step, interleaved repeats)\n\n' + to_markdown(df) + '\n')
            continue
        df = load_records(task_dir)
        if df.empty: continue
        order = json.loads(next((task_dir / 'runs').glob('*.json')).read_text())['config']['methods']
        name = {'c2f': 'coarse-to-fine', 'lt': 'long-tailed'}.get(task_dir.name, task_dir.name)
        print(f'## {name}: mean ± std over seeds (best mean marked *)\n\n' + to_markdown(summarize(df, methods=order)) + '\n')
        coll = [c for c in df.columns if c.startswith('collapse_') and c != 'collapse_accuracy']
        print(f'### {name}: collapse measures of the classifier input on the held-out set (no best marked: the better direction differs per measure)\n\n' + to_markdown(summarize(df, coll, methods=order, mark_best=False)) + '\n')


if __name__ == '__main__': main(*sys.argv[1:])
