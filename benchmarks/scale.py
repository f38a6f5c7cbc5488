"""Speed and memory of fastamp's work that grows with data: collapse metrics at up to 1e6 x 512, label recipes at 1e6.

Run: .venv/bin/python benchmarks/scale.py   (one thread; prints a Markdown table; about two minutes on a 2-core CPU)
"""
import statistics, sys, threading, time
import numpy as np, torch

torch.set_num_threads(1)


def measure(f, repeats=1):
    "Median, min and max seconds of `f` over `repeats` calls, and the peak extra resident memory (MB) during them"
    import psutil
    proc = psutil.Process(); base = proc.memory_info().rss; peak = [base]; stop = threading.Event()
    def watch():
        while not stop.is_set(): peak[0] = max(peak[0], proc.memory_info().rss); time.sleep(0.005)
    th = threading.Thread(target=watch); th.start(); ts = []
    try:
        for _ in range(repeats):
            t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    finally: stop.set(); th.join()
    return statistics.median(ts), min(ts), max(ts), (peak[0] - base) / 2**20


def main():
    import warnings
    from fastamp.metrics import alignment, alignment_estimate, uniformity, uniformity_estimate, UNIFORMITY_EXACT_MAX
    rows = []
    def row(name, f, repeats=1): rows.append((name, repeats, *measure(f, repeats)))
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20_000, 512, generator=g); y = torch.randint(0, 100, (20_000,), generator=g)
    row('alignment, 20,000 x 512, 100 classes, alpha=2 (closed form)', lambda: alignment(z, y), 3)
    row('alignment, 20,000 x 512, 100 classes, alpha=1 (exact)', lambda: alignment(z, y, alpha=1), 3)
    row(f'uniformity, exact, 20,000 x 512 (exact_max={UNIFORMITY_EXACT_MAX:,})', lambda: uniformity(z))
    zb = torch.randn(1_000_000, 512, generator=g); yb = torch.randint(0, 1000, (1_000_000,), generator=g)
    row('alignment, 1,000,000 x 512, 1000 classes, alpha=2 (closed form)', lambda: alignment(zb, yb))
    row('alignment, 1,000,000 x 512, 1000 classes, alpha=1 (exact)', lambda: alignment(zb, yb, alpha=1))
    row('alignment, sampled (1e6 pairs), 1,000,000 x 512, 1000 classes, alpha=1',
        lambda: alignment_estimate(zb, yb, alpha=1, generator=torch.Generator().manual_seed(1)))
    row('uniformity, sampled (1e6 pairs), 1,000,000 x 512',
        lambda: uniformity_estimate(zb, generator=torch.Generator().manual_seed(1)))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always'); uniformity(zb[:30_000])
    print(f'uniformity(30,000 rows): {w[0].message}' if w else 'uniformity(30,000 rows): no warning', file=sys.stderr)
    del zb, yb
    from fastamp.datasets import ImageSet, load_fashion_mnist
    from fastamp.data import long_tailed_indices, CoarseMap, CIFAR100_COARSE, imageset_dls
    labels = np.random.default_rng(0).integers(0, 100, 1_000_000)
    cmap = CoarseMap.create(CIFAR100_COARSE)
    big = ImageSet(np.zeros((1, 1, 1), np.uint8), labels, sorted(CIFAR100_COARSE), np.arange(0))
    row('long-tailed subset (exp, rho=100) of 1,000,000 labels', lambda: long_tailed_indices(labels, 100), 5)
    row('coarse relabeling of 1,000,000 labels (CIFAR-100 map)', lambda: cmap.coarse_labels(big), 5)
    try: row('Fashion-MNIST files -> DataLoaders -> first batch',
             lambda: imageset_dls(load_fashion_mnist(), bs=256).one_batch(), 3)
    except FileNotFoundError as e: print(f'skipped Fashion-MNIST: {e}', file=sys.stderr)
    print('| work | runs | median s | min s | max s | peak extra MB |\n| --- | --- | --- | --- | --- | --- |')
    for r in rows: print(f'| {r[0]} | {r[1]} | {r[2]:.2f} | {r[3]:.2f} | {r[4]:.2f} | {r[5]:.0f} |')


if __name__ == '__main__': main()
