"""Speed and memory of fastamp's work that grows with data (issues: metrics and data at scale).

Run: .venv/bin/python benchmarks/scale.py   (prints a Markdown table; medians over repeats)
"""
import resource, statistics, sys, time, tracemalloc
import numpy as np, torch

torch.set_num_threads(2)


def timed(f, repeats=3):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter(); out = f(); ts.append(time.perf_counter() - t)
    return statistics.median(ts), min(ts), max(ts), out


def peak_extra_mb(f):
    "Peak extra resident memory of `f`, in MB, measured by torch's CPU allocator through tracemalloc-free RSS sampling"
    import threading, psutil
    proc = psutil.Process(); base = proc.memory_info().rss; peak = [base]; stop = threading.Event()
    def watch():
        while not stop.is_set(): peak[0] = max(peak[0], proc.memory_info().rss); time.sleep(0.005)
    th = threading.Thread(target=watch); th.start()
    try: f()
    finally: stop.set(); th.join()
    return (peak[0] - base) / 2**20


def main():
    from fastamp.metrics import alignment, uniformity, uniformity_estimate
    rows = []
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20_000, 512, generator=g); y = torch.randint(0, 100, (20_000,), generator=g)
    for name, f in [('alignment, exact, 20,000 x 512, alpha=2', lambda: alignment(z, y)),
                    ('alignment, exact, 20,000 x 512, alpha=1', lambda: alignment(z, y, alpha=1)),
                    ('uniformity, exact, 20,000 x 512', lambda: uniformity(z))]:
        med, lo, hi, _ = timed(f)
        rows.append((name, med, lo, hi, peak_extra_mb(f)))
    zb = torch.randn(1_000_000, 512, generator=g); yb = torch.randint(0, 1000, (1_000_000,), generator=g)
    for name, f in [('uniformity, sampled (1e6 pairs), 1,000,000 x 512', lambda: uniformity_estimate(zb, generator=torch.Generator().manual_seed(1))),
                    ('alignment, exact (closed form), 1,000,000 x 512, alpha=2', lambda: alignment(zb, yb))]:
        med, lo, hi, _ = timed(f)
        rows.append((name, med, lo, hi, peak_extra_mb(f)))
    from fastamp.data import long_tailed_indices, CoarseMap, CIFAR100_COARSE, ImageSet, load_fashion_mnist, imageset_dls
    labels = np.random.default_rng(0).integers(0, 100, 1_000_000)
    fine_vocab = sorted(CIFAR100_COARSE)
    cmap = CoarseMap.create(CIFAR100_COARSE)
    big = ImageSet(np.zeros((1, 1, 1), np.uint8), labels, fine_vocab, np.arange(0))
    for name, f in [('long-tailed subset (exp, rho=100) of 1,000,000 labels', lambda: long_tailed_indices(labels, 100)),
                    ('coarse relabeling of 1,000,000 labels (CIFAR-100 map)', lambda: cmap.coarse_labels(big))]:
        med, lo, hi, _ = timed(f, repeats=5)
        rows.append((name, med, lo, hi, peak_extra_mb(f)))
    try:
        f = lambda: imageset_dls(load_fashion_mnist(), bs=256).one_batch()
        med, lo, hi, _ = timed(f)
        rows.append(('Fashion-MNIST files -> DataLoaders -> first batch', med, lo, hi, peak_extra_mb(f)))
    except FileNotFoundError as e: print(f'skipped Fashion-MNIST: {e}', file=sys.stderr)
    print('| work | median s | min s | max s | peak extra MB |\n| --- | --- | --- | --- | --- |')
    for r in rows: print(f'| {r[0]} | {r[1]:.2f} | {r[2]:.2f} | {r[3]:.2f} | {r[4]:.0f} |')


if __name__ == '__main__': main()
