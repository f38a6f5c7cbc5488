"""Where a training step's time goes: data, forward, backward, optimizer and callbacks (issue 13, benchmark).

A CIFAR ResNet-32 at batch 128 on 32x32 images from the device-resident loader with crop + flip, trained through a
fastai `Learner` for a few steps per repeat, once with fastai's own `SGD` (it updates parameter by parameter in Python)
and once with torch's foreach SGD through fastai's `OptimWrapper` (`fastamp.bench.torch_sgd`, fused on a GPU), with
plain training and with `MidpointMixup()`. The phases are timed by `fastamp.bench.StepTimer` at fastai's events:

- data: from the end of one step to the start of the next (`after_batch` -> `before_batch`: fetching the batch);
- forward: `before_batch` -> `after_pred` (the callbacks' `before_batch` and the mixing hooks included);
- loss: `after_pred` -> `after_loss` (the mixing callbacks' loss included);
- backward: `after_loss` -> `after_backward`;
- optimizer: `before_step` -> `after_step`.

Medians over the timed steps of all repeats; the configurations take their repeats in turn, so that they share the
machine's load. On a GPU the marks are CUDA events read once at the end, so phases are the GPU's time.

Run: OMP_NUM_THREADS=1 python benchmarks/step_split.py [--out results/step_split.md]
"""
import argparse, os, platform, statistics, time
from pathlib import Path
import torch

torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', 1)))

import fastai  # noqa: E402
from fastai.learner import Learner  # noqa: E402
from fastai.optimizer import SGD  # noqa: E402
from fastai.torch_core import set_seed  # noqa: E402
from _synthetic import random_cifar  # noqa: E402
from fastamp.devicedata import device_dls  # noqa: E402
from fastamp.models import resnet32  # noqa: E402
from fastamp.mixup import MidpointMixup  # noqa: E402
from fastamp.bench import torch_sgd, StepTimer  # noqa: E402

PHASES = ('data', 'forward', 'loss', 'backward', 'optimizer')


def configs():
    fastai_sgd = lambda ps, lr: SGD(ps, lr, mom=0.9, wd=2e-4, decouple_wd=False)
    foreach = lambda ps, lr: torch_sgd(ps, lr, mom=0.9, wd=2e-4)
    return {("fastai SGD", 'plain'): (fastai_sgd, []), ("torch foreach SGD", 'plain'): (foreach, []),
            ("fastai SGD", 'MidpointMixup'): (fastai_sgd, [MidpointMixup]),
            ("torch foreach SGD", 'MidpointMixup'): (foreach, [MidpointMixup])}


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default='results/step_split.md')
    p.add_argument('--steps', type=int, default=8, help='timed steps per repeat')
    p.add_argument('--repeats', type=int, default=3)
    a = p.parse_args()
    t0 = time.perf_counter()
    data = random_cifar(6_000, 1_000)
    dls = device_dls(data, bs=128, augment=True, seed=0)
    rows = {k: [] for k in configs()}
    learners = {}
    for k, (opt, cbs) in configs().items():
        set_seed(0)
        learners[k] = Learner(dls, resnet32(10), opt_func=opt, cbs=[c() for c in cbs], wd_bn_bias=True)
    for _ in range(a.repeats):
        for k, learn in learners.items():
            timer = StepTimer(a.steps, warmup=2, cuda=torch.cuda.is_available())
            with learn.no_bar(), learn.no_logging(): learn.fit(1, 0.1, cbs=timer)
            rows[k] += timer.rows
    write(rows, a, time.perf_counter() - t0)


def write(rows, a, wall):
    nt = torch.get_num_threads()
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else f'CPU ({os.cpu_count()} cores), no GPU'
    base = statistics.median(r['step'] for r in rows[("fastai SGD", 'plain')])
    lines = ['# Where a training step goes: CIFAR ResNet-32, batch 128', '',
             f'Command: `OMP_NUM_THREADS={nt} python benchmarks/step_split.py --steps {a.steps} --repeats {a.repeats}` '
             f'(wall time {wall:.0f} s, {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}).',
             f'Machine: {dev}, torch threads {nt}, load average {os.getloadavg()[0]:.1f} at the end; '
             f'torch {torch.__version__}, fastai {fastai.__version__}, Python {platform.python_version()}.', '',
             f'Milliseconds per phase, median over {a.steps} timed steps x {a.repeats} repeats (the configurations '
             'take their repeats in turn). Data from the device-resident loader (random uint8 32x32 images, crop + '
             'flip); `step` is from the end of one step to the end of the next; the last column divides it by fastai '
             'SGD with plain training, measured in the same run.', '',
             '| optimizer | callbacks | ' + ' | '.join(PHASES) + ' | step | x fastai SGD, plain |',
             '|' + ' --- |' * (len(PHASES) + 4)]
    for (opt, cbs), rs in rows.items():
        med = {k: statistics.median(r[k] for r in rs) for k in (*PHASES, 'step')}
        lines.append(f'| {opt} | {cbs} | ' + ' | '.join(f'{1000 * med[k]:.1f}' for k in PHASES)
                     + f" | {1000 * med['step']:.1f} | {med['step'] / base:.3f} |")
    Path(a.out).write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__': main()
