"""Wall time of `fastamp bench --jobs 2` with the default threads per worker against the old behaviour (issue 29).

What it must show, decided before running: with `--jobs N` and no `--threads`, each worker now gets
`max(1, cores // N)` torch/BLAS threads; before, every worker started with all of the machine's cores, which
`--threads <cores>` reproduces. On a machine whose cores are all given to the workers (here 2 cores, `--jobs 2`), the
default should be no slower than the old behaviour, and faster when workers oversubscribe the cores.

Method: the `quick` preset (digits, 2 tasks, ERM and MidpointMixup, 2 seeds, 2 epochs: 8 runs) into a fresh `--out`
each time, the two settings alternating within each repeat so that the machine's load falls on both alike; wall time
of the whole command (process start, data, training, tables), median over `--repeats`, and the ratio of the medians.
The 1-minute load average before each command is printed beside it: other work on the machine slows oversubscribed
workers most.

Run: python benchmarks/jobs_threads.py [--repeats 3] [--preset quick] [--out results/jobs_threads.md]
"""
import argparse, os, platform, statistics, subprocess, sys, tempfile, time
from pathlib import Path

FASTAMP = str(Path(sys.executable).parent / 'fastamp')


def wall(preset, extra, jobs):
    "Seconds `fastamp bench --preset <preset> --jobs <jobs> <extra>` takes (fresh `--out`), and the load average before"
    with tempfile.TemporaryDirectory() as out:
        env = {k: v for k, v in os.environ.items() if k not in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS')}
        load, t = os.getloadavg()[0], time.perf_counter()
        subprocess.run([FASTAMP, 'bench', '--preset', preset, '--jobs', str(jobs), '--out', out, *extra],
                       check=True, env=env, capture_output=True)
        return time.perf_counter() - t, load


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--preset', default='quick'); p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--jobs', type=int, default=2); p.add_argument('--out', default='results/jobs_threads.md')
    a = p.parse_args()
    cores = len(os.sched_getaffinity(0))
    settings = {f'default (no --threads: {max(1, cores // a.jobs)} per worker)': [],
                f'--threads {cores} per worker (the old default)': ['--threads', str(cores)]}
    times = {k: [] for k in settings}
    for r in range(a.repeats):
        for k in (list(settings) if r % 2 == 0 else list(settings)[::-1]):
            times[k].append(wall(a.preset, settings[k], a.jobs)); print(f'repeat {r}: {k}: {times[k][-1]}')
    med = {k: statistics.median(s for s, _ in v) for k, v in times.items()}
    base, old = list(med.values())
    rows = [f"| {k} | {' '.join(f'{s:.1f}' for s, _ in times[k])} | {' '.join(f'{l:.1f}' for _, l in times[k])} | "
            f"{med[k]:.1f} |" for k in settings]
    import torch, fastai
    page = f"""# `--jobs {a.jobs}`: threads per worker

What it must show (decided before running): the default threads per worker (`max(1, cores // jobs)`) are no slower
than every worker starting with all the cores (the behaviour before issue 29, reproduced with `--threads {cores}`),
and faster where the workers oversubscribe the cores.

Command: `python benchmarks/jobs_threads.py --preset {a.preset} --jobs {a.jobs} --repeats {a.repeats}`: `fastamp bench
--preset {a.preset} --jobs {a.jobs}` into a fresh folder, wall time of the whole command, the two settings alternating.

| setting | wall time of each repeat (s) | load average before each | median (s) |
|---|---|---|---|
{chr(10).join(rows)}

The load average is the 1-minute one before each command: it includes the previous command of this script and any
other work on the machine, which slows oversubscribed workers most.

Old behaviour / default: **{old / base:.2f}x** the wall time (median over {a.repeats} repeats each).

Machine: {platform.processor() or platform.machine()}, {cores} cores usable, {platform.system()}; torch
{torch.__version__}, fastai {fastai.__version__}, Python {platform.python_version()}.
"""
    Path(a.out).write_text(page); print(page)


if __name__ == '__main__': main()
