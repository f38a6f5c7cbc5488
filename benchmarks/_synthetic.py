"""The synthetic data the benchmark scripts share: nothing to download, the same arrays for a seed."""
import numpy as np
from fastamp.datasets import ImageSet


def random_cifar(n:int, n_valid:int, seed:int=0) -> ImageSet:
    "`n` random uint8 32x32 RGB images in 10 classes, CIFAR's shape; the last `n_valid` held out"
    rng = np.random.default_rng(seed)
    return ImageSet(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n),
                    [str(c) for c in range(10)], np.arange(n - n_valid, n), name='random')
