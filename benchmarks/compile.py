"""Step time of training compiled by `torch.compile` (inductor) against eager, and of MidpointMixup compiled (issue 27).

For each model (the CIFAR ResNet-32 and the small CNN of `fastamp.models`) one call of the overhead task
(`fastamp.bench.measure_overhead` with `BenchConfig.compile`) times, in the same rounds, plain training compiled,
MidpointMixup compiled and plain training eager: the methods take their repeats in turn, so the machine's load falls
on all of them alike, and every ratio is between numbers of the same run. Step times are medians over repeats of the
median of the timed steps; compile time is the untimed warm-up steps of the first repeat (`first_steps_s`), where a
compiled model compiles, with inductor's on-disk caches empty (`--warm-cache` keeps them). Data: random CIFAR-shaped
images (`_synthetic.random_cifar`) through the device-resident loader, SGD as the long-tail recipe's. A second call
times MidpointMixup and plain training both eager: what the callback costs without compiling.

Run: OMP_NUM_THREADS=1 python benchmarks/compile.py [--out results/compile.md]
"""
import argparse, os, platform, subprocess, sys, tempfile, time
from pathlib import Path
import torch

torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', 1)))
if '--warm-cache' not in sys.argv:   # compile time as a first run pays it: inductor's on-disk caches start empty
    os.environ['TORCHINDUCTOR_CACHE_DIR'] = tempfile.mkdtemp(prefix='inductor_cold_')

import fastai  # noqa: E402
from _synthetic import random_cifar  # noqa: E402
from fastamp.bench import BenchConfig, measure_overhead, EAGER_ERM  # noqa: E402


def uptime() -> str:
    return subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()


def measure(arch, bs, steps, warmup, repeats, compile='default'):
    cfg = BenchConfig(task='overhead', arch=arch, bs=bs, methods=['erm', 'midpoint'], opt='sgd', lr=0.1, wd=2e-4,
                      loader='device', compile=compile, device='cpu')
    t = time.perf_counter()
    df = measure_overhead(cfg, data=(random_cifar(2_000, 200), None, None), steps=steps, warmup=warmup,
                          repeats=repeats)
    return df.set_index('method'), time.perf_counter() - t


def eager_ratio(arch, bs, steps, warmup, repeats):
    "MidpointMixup / ERM, both eager (a second call, after the compiled one): what the callback costs without compile"
    df, secs = measure(arch, bs, steps, warmup, repeats, compile=None)
    return df, secs


def summary_row(arch, bs, df):
    ms = df['step_ms']
    eager, comp, mid = ms[EAGER_ERM], ms['erm'], ms['midpoint']
    return (f"| {arch} | {bs} | {eager:.1f} | {comp:.1f} | {comp / eager:.3f} | {mid:.1f} | {mid / comp:.3f} | "
            f"{'yes' if mid / comp <= 1.03 else 'no'} | {df['first_steps_s']['erm']:.1f} | "
            f"{df['first_steps_s']['midpoint']:.1f} |")


def md_table(df) -> str:
    "`df` as a Markdown table (no tabulate needed)"
    cols = ['method', *df.columns]
    cell = lambda v: f'{v:.3f}' if isinstance(v, float) else str(v)
    rows = [[m, *map(cell, r)] for m, r in zip(df.index, df.itertuples(False, None))]
    return '\n'.join('| ' + ' | '.join(r) + ' |' for r in [cols, ['---'] * len(cols), *rows])


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default='results/compile.md')
    p.add_argument('--steps', type=int, default=8, help='timed steps per repeat')
    p.add_argument('--warmup', type=int, default=3, help='untimed steps first (the compile falls there)')
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--warm-cache', action='store_true', help="keep inductor's on-disk cache (default: a fresh one)")
    a = p.parse_args()
    before, t0 = uptime(), time.perf_counter()
    models = [('cnn', 64, 2 * a.repeats), ('resnet32', 32, a.repeats)]   # the CNN's steps are short: more repeats
    runs = [(arch, bs, *measure(arch, bs, a.steps, a.warmup, r)) for arch, bs, r in models]
    eager = {arch: eager_ratio(arch, bs, a.steps, a.warmup, r) for arch, bs, r in models}
    after = uptime()
    head = ('| model | batch | eager ERM ms | compiled ERM ms | compiled / eager | compiled MidpointMixup ms | '
            'MidpointMixup / ERM, compiled | <= 1.03x | compile s, ERM | compile s, MidpointMixup | '
            'MidpointMixup / ERM, eager |')
    ratio = lambda arch: eager[arch][0]['ratio_to_erm']['midpoint']
    lines = ['# torch.compile on the CPU: step time', '', head, '|' + ' --- |' * 11,
             *[summary_row(arch, bs, df) + f' {ratio(arch):.3f} |' for arch, bs, df, _ in runs], '',
             f"Command: `OMP_NUM_THREADS={torch.get_num_threads()} python benchmarks/compile.py` ({a.steps} timed "
             f"steps after {a.warmup} warm-up steps per repeat, {a.repeats} interleaved repeats, twice that for "
             "the CNN), "
             f"{time.perf_counter() - t0:.0f} s in all, {time.strftime('%Y-%m-%d')}.",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread, no GPU; "
             f"torch {torch.__version__}, fastai {fastai.__version__}, python {platform.python_version()}, "
             f"inductor's C++ backend (`{os.environ.get('CXX', 'g++')}`), "
             + ("its on-disk caches kept from earlier runs." if a.warm_cache else "its on-disk caches empty at the "
                "start of the run (later learners of the run may reuse kernels that earlier ones compiled)."),
             f"Load: `{before}` before, `{after}` after (other engineers' jobs shared the 2 cores).", '']
    for arch, bs, df, secs in runs:
        lines += [f"## {arch}, batch {bs}: compiled, with eager ERM in the same rounds ({secs:.0f} s)", '',
                  md_table(df), '', f"Eager, a second call ({eager[arch][1]:.0f} s):", '', md_table(eager[arch][0]), '']
    Path(a.out).write_text('\n'.join(lines))
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
