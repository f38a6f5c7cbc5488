"""Data-path throughput: the per-item `imageset_dls` against the device-resident `device_dls` (issue 13, item 2).

Both paths iterate training batches of 128 CIFAR-sized images (32x32x3 uint8) in the same process, on the same
arrays, with the same torch thread count; images/s is the median over repeats of one timed pass each, the paths
taking their passes in turn so that a machine shared with other jobs loads them alike.

- random data: uint8 arrays of shape (50000, 32, 32, 3) (+ 10000 held out), drawn with a fixed seed;
- the real CIFAR-10 too, when FASTAMP_CIFAR10 names the JPEG archive or folder:
  the per-item path reads the JPEG files (`load_image_folder`), the device path the decoded arrays.
  Decoding is skipped when the first 1,000 images project more than `--decode-budget` seconds for all 60,000.

Run: OMP_NUM_THREADS=1 python benchmarks/throughput.py [--out results/throughput.md]

A folder of image files (issue 24, item 4): `--folder N` writes N 64x64 PNGs (scikit-learn's digits, upscaled) as
`train/<class>/`, `test/<class>/` in a temp folder, times their first decode by `decode_images` (all cores) and the
read of the kept array, then an epoch of the per-item path on the files against the device path on the decoded
array, and writes that section of `--out` (the rest of the page is kept):

    OMP_NUM_THREADS=1 python benchmarks/throughput.py --folder 4000

`--folder-path PATH` measures the same on a folder or archive of your own instead (at `--size`, default the images'
own size), in a section of `--out` named after it, e.g. the CIFAR-10 archive read as a user's folder:

    OMP_NUM_THREADS=1 python benchmarks/throughput.py --folder-path cifar10-jpg.tar.gz --out results/cifar10_folder.md
"""
import argparse, os, platform, statistics, sys, time
from itertools import islice
from pathlib import Path
import numpy as np, torch

torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', 1)))

from fastai.vision.augment import Flip, RandomResizedCropGPU  # noqa: E402
from fastai.data.transforms import Normalize  # noqa: E402
from fastai.vision.core import imagenet_stats  # noqa: E402
from fastamp.datasets import load_cifar, load_image_folder  # noqa: E402
from fastamp.data import imageset_dls  # noqa: E402
from fastamp.devicedata import device_dls, decode_images  # noqa: E402
from _synthetic import random_cifar  # noqa: E402

BS = 128


def images_per_s(dl, n_batches=None):
    "Images/s of one fresh pass over `n_batches` of `dl` (all of it if None)"
    t, n = time.perf_counter(), 0
    for b in islice(iter(dl), n_batches): n += len(b[0])
    return n / (time.perf_counter() - t)


def interleaved(loaders, repeats):
    "`[(median, min, max) images/s]` of each `(dl, n_batches)`, passes taken in turn so that all see the same load"
    rates = [[] for _ in loaders]
    for _ in range(repeats):
        for r, (dl, nb) in zip(rates, loaders): r.append(images_per_s(dl, nb))
    return [(statistics.median(r), min(r), max(r)) for r in rates]


def per_item_tfms(size=32):
    "fastai batch transforms as near the CIFAR recipe as fastai has: flip, a square random crop, normalisation"
    return [Flip(p=0.5), RandomResizedCropGPU(size, min_scale=0.77, ratio=(1., 1.)),
            Normalize.from_stats(*imagenet_stats)]


def measure(data, label, n_item_batches, repeats):
    "Rows `(data, path, images/s median, min, max)` of the per-item and device paths on `data`"
    paths = [('per-item `imageset_dls`, no batch transforms', imageset_dls(data, bs=BS).train, n_item_batches),
             ('per-item `imageset_dls` + fastai Flip, RandomResizedCropGPU, Normalize',
              imageset_dls(data, bs=BS, after_batch=per_item_tfms()).train, n_item_batches),
             ('device `device_dls`, crop (pad 4) + flip + normalise',
              device_dls(data, bs=BS, device='cpu', seed=0, augment=True).train, None),
             ('device `device_dls`, normalise only', device_dls(data, bs=BS, device='cpu', seed=0, augment=False).train,
              None)]
    for _, dl, _ in paths: next(iter(dl))  # warm-up (transform setup)
    rates = interleaved([(dl, nb) for _, dl, nb in paths], repeats)
    rows = [(label, what, *r) for (what, _, _), r in zip(paths, rates)]
    for r in rows: print(r, file=sys.stderr)
    return rows


def decoded_cifar(path, budget_s):
    "The CIFAR-10 JPEG set as a file-list `ImageSet` and as a uint8-array one (None if decoding exceeds the budget)"
    from PIL import Image
    files = load_image_folder(path)   # the JPEG files themselves (an archive is extracted once)
    t = time.perf_counter()
    [np.asarray(Image.open(f).convert('RGB')) for f in files.items[:1000]]
    projected = (time.perf_counter() - t) * len(files) / 1000
    if projected > budget_s:
        print(f'skipped decoding CIFAR-10: {projected:.0f} s projected > {budget_s} s', file=sys.stderr)
        return files, None, projected
    t = time.perf_counter()
    arrays = load_cifar(path)          # decoded once into uint8 arrays (and cached)
    return files, arrays, time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default='results/throughput.md')
    p.add_argument('--item-batches', type=int, default=40, help='batches timed on the per-item path')
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--decode-budget', type=float, default=120.)
    p.add_argument('--folder', type=int, default=0, help='measure only a folder of this many 64x64 PNGs')
    p.add_argument('--folder-path', help='measure only this image folder or archive (train/<class>/, test/<class>/)')
    p.add_argument('--size', type=int, help='--folder-path: decode at NxN (default: the images\' own size)')
    a = p.parse_args()
    t0 = time.perf_counter()
    if a.folder or a.folder_path: return folder_case(a, t0)
    rand = random_cifar(60_000, 10_000)
    rows = measure(rand, 'random uint8 (50000, 32, 32, 3)', a.item_batches, a.repeats)
    notes = []
    if os.environ.get('FASTAMP_CIFAR10'):
        files, arrays, s = decoded_cifar(os.environ['FASTAMP_CIFAR10'], a.decode_budget)
        if arrays is None: notes.append(f'Real CIFAR-10: decoding projected {s:.0f} s, over the budget: not measured.')
        else:
            notes.append(f'Real CIFAR-10: 60,000 JPEGs decoded by `load_cifar` in {s:.0f} s (from its cache when '
                         'an earlier run decoded them).')
            dl = imageset_dls(files, bs=BS).train
            rows.append(('CIFAR-10 JPEG files', 'per-item `imageset_dls` (PIL decoding per item), no batch transforms',
                         *interleaved([(dl, a.item_batches // 2)], a.repeats)[0]))
            print(rows[-1], file=sys.stderr)
            jpeg = rows[-1][2]
            rows += measure(arrays, 'CIFAR-10 decoded uint8 (50000, 32, 32, 3)', a.item_batches, a.repeats)
            notes.append(f'On real CIFAR-10 the device path with crop+flip makes {rows[-2][2] / jpeg:.0f} times the '
                         'images/s of the per-item path on the JPEG files (`load_image_folder`) '
                         '(measured one after the other).')
    else: notes.append('Real CIFAR-10: not measured (FASTAMP_CIFAR10 unset).')
    write(rows, notes, a, time.perf_counter() - t0)


FOLDER_SIDE = 64
FOLDER_HEAD = f'## A folder of {FOLDER_SIDE}x{FOLDER_SIDE} image files: per-item against decoded once (issue 24)'


def write_folder(root, n):
    "`n` 64x64 RGB PNGs from scikit-learn's digits (upscaled, cycled), a fifth of them in `test/`"
    from PIL import Image
    from fastamp.datasets import load_digits
    d = load_digits()
    for i in range(n):
        k = i % len(d.labels)
        img = Image.fromarray(d.items[k]).resize((FOLDER_SIDE, FOLDER_SIDE), Image.BILINEAR).convert('RGB')
        f = Path(root)/('test' if i % 5 == 4 else 'train')/str(d.labels[k])/f'{i:05d}.png'
        f.parent.mkdir(parents=True, exist_ok=True); img.save(f)
    return Path(root)


def folder_case(a, t0):
    "Decode time, cached read, and epoch images/s of the per-item path against the device path on a 64x64 folder"
    import tempfile
    tmp = Path(tempfile.mkdtemp()); os.environ['FASTAMP_CACHE'] = str(tmp/'cache')  # a fresh cache: a first decode
    files = load_image_folder(a.folder_path or write_folder(tmp/'folder', a.folder))
    side = a.size if a.folder_path else FOLDER_SIDE
    cores = len(os.sched_getaffinity(0))
    t = time.perf_counter(); arrays = decode_images(files, side, workers=cores)
    decode_s = time.perf_counter() - t
    t = time.perf_counter(); decode_images(files, side); cached_s = time.perf_counter() - t
    side = arrays.items.shape[1]
    paths = [('per-item `imageset_dls` on the files, no batch transforms', imageset_dls(files, bs=BS).train),
             ('per-item `imageset_dls` on the files + Flip, RandomResizedCropGPU, Normalize',
              imageset_dls(files, bs=BS, after_batch=per_item_tfms(side)).train),
             ('device `device_dls` on the decoded array, crop (pad 4) + flip + normalise',
              device_dls(arrays, bs=BS, device='cpu', seed=0, augment=True).train),
             ('device `device_dls` on the decoded array, normalise only',
              device_dls(arrays, bs=BS, device='cpu', seed=0, augment=False).train)]
    for _, dl in paths: next(iter(dl))
    rates = interleaved([(dl, None) for _, dl in paths], a.repeats)
    for (what, _), r in zip(paths, rates): print(what, r, file=sys.stderr)
    write_folder_section(a, paths, rates, len(files), (decode_s, cores, cached_s, side), time.perf_counter() - t0)


def write_folder_section(a, paths, rates, n, decoding, wall):
    "The folder section of `a.out`, put in place of an earlier one (the rest of the page kept)"
    nt, base, ratio = torch.get_num_threads(), rates[0][0], rates[2][0] / rates[0][0]
    decode_s, cores, cached_s, side = decoding
    head, desc = _folder_names(a, n, side)
    lines = [head, '',
             f'Command: `OMP_NUM_THREADS={nt} python benchmarks/throughput.py {_args(a)}` (wall time '
             f'{wall:.0f} s, {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}). Machine: {cpu_name()}, '
             f'{os.cpu_count()} cores shared with other jobs (load average {os.getloadavg()[0]:.1f} at the end), '
             'no GPU.',
             '',
             f'Data: {desc}. Decided before running: the target is the device path '
             '(crop + flip + normalise, the recipe `--loader device` trains with) at least 10x the per-item path on '
             'the files (its cheapest form, no batch transforms, fastai\'s default worker processes) after the '
             'first decode; whole training epochs, images/s median (min to max) of '
             f'{a.repeats} passes taken in turn.', '',
             f'- First decode (`decode_images`, {side}x{side}, {cores} processes): {decode_s:.1f} s '
             f'({n / decode_s:,.0f} images/s); the next run reads the kept array in {cached_s:.2f} s, decoding '
             'nothing.',
             '', '| path | images/s | min to max | x per-item (none) |', '| --- | --- | --- | --- |']
    lines += [f'| {what} | {med:,.0f} | {lo:,.0f} to {hi:,.0f} | {med / base:.1f} |'
              for (what, _), (med, lo, hi) in zip(paths, rates)]
    lines += ['', f'Result: the device path makes {ratio:.1f}x the images/s of the per-item path after the first '
              f'decode: the 10x target is {"met" if ratio >= 10 else "NOT met"}.']
    out = Path(a.out)
    page = out.read_text() if out.exists() else ''
    page = page.split('\n' + head)[0].rstrip('\n')
    out.write_text((page + '\n\n' if page else '') + '\n'.join(lines) + '\n')
    print('\n'.join(lines))


def _folder_names(a, n, side)->tuple:
    "The section's heading and the data's description: a folder of the user's (`--folder-path`) or the written PNGs"
    if not a.folder_path: return FOLDER_HEAD, (f"{n:,} PNG files of {FOLDER_SIDE}x{FOLDER_SIDE} RGB (scikit-learn's "
                                               "digits upscaled), `train/<class>/` and a fifth in `test/<class>/`")
    name = Path(a.folder_path).name
    return (f'## {name} as a folder: per-item against decoded once',
            f'{n:,} image files of `{name}` (training and held-out), decoded at {side}x{side}')


def _args(a)->str:
    "The command-line options that chose this folder case"
    return (f'--folder-path {a.folder_path}' + (f' --size {a.size}' if a.size else '') + f' --out {a.out}'
            if a.folder_path else f'--folder {a.folder}')


def cpu_name():
    info = Path('/proc/cpuinfo')
    lines = info.read_text().splitlines() if info.exists() else []
    return next((l.split(':', 1)[1].strip() for l in lines if l.startswith('model name')), platform.processor())


def write(rows, notes, a, wall):
    import fastai
    nt = torch.get_num_threads()
    lines = ['# Data-path throughput: per-item against device-resident', '',
             f'Command: `OMP_NUM_THREADS={nt} python benchmarks/throughput.py` '
             f'(wall time {wall:.0f} s, {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}).',
             f'Machine: {cpu_name()}, {os.cpu_count()} cores shared with other jobs (load average '
             f'{os.getloadavg()[0]:.1f} at the end), no GPU: the device path makes its batches on the CPU here. '
             f'Torch threads: {nt}; torch {torch.__version__}, fastai {fastai.__version__}, '
             f'Python {platform.python_version()}.', '',
             f'Training batches of {BS}, images per second, median (min to max) of {a.repeats} passes, all in one '
             'process, the paths on one data set taking their passes in turn (so that they share the machine\'s load). '
             f'Per-item path: {a.item_batches} batches per pass (shuffled, `num_workers=0` as '
             '`imageset_dls` sets for arrays); device path: one whole epoch per pass (shuffled, last partial batch '
             'dropped). The ratio columns divide by the per-item rows on the same data.', '',
             '| data | path | images/s | min to max | x per-item (none) | x per-item (+ tfms) |',
             '| --- | --- | --- | --- | --- | --- |']
    base = {}
    for d, what, med, lo, hi in rows:
        if what.startswith('per-item'): base[(d, 'tfms' if 'Flip' in what else 'none')] = med
    for d, what, med, lo, hi in rows:
        r = [f'{med / base[(d, k)]:.1f}' if (d, k) in base else '' for k in ('none', 'tfms')]
        lines.append(f'| {d} | {what} | {med:,.0f} | {lo:,.0f} to {hi:,.0f} | {r[0]} | {r[1]} |')
    lines += ['', 'The random data are uint8 arrays of shape (50000, 32, 32, 3) (+ 10000 held out) drawn with seed 0, '
              'standing in for CIFAR arrays: both paths cost the same on any uint8 content.',
              'fastai has no pad-and-crop batch transform; the per-item row with transforms uses its nearest '
              '(`RandomResizedCropGPU(32, min_scale=0.77, ratio=(1, 1))`) with `Flip` and `Normalize`.', ''] + notes
    Path(a.out).write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__': main()
