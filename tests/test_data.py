"""Data recipes on the real files (Fashion-MNIST from the Debian package, CIFAR-10 from the shared folder)."""
import os
from pathlib import Path
import numpy as np, pytest
from fastamp.data import (load_fashion_mnist, DEBIAN_FASHION_MNIST, coarse_fine_dls, FASHION_MNIST_COARSE, long_tailed,
                          long_tailed_counts, imageset_dls, load_cifar)

FMNIST = Path(os.environ.get('FASTAMP_DATA', DEBIAN_FASHION_MNIST))
has_fmnist = (FMNIST / 'train-images-idx3-ubyte.gz').exists() or (DEBIAN_FASHION_MNIST / 'train-images-idx3-ubyte.gz').exists()
CIFAR_ARCHIVE = Path(__file__).parents[2] / 'shared' / 'data' / 'cifar10-jpg.tar.gz'


@pytest.mark.skipif(not has_fmnist, reason='Fashion-MNIST files absent: apt-get install dataset-fashion-mnist (CI does)')
def test_real_fashion_mnist_coarse_fine_and_long_tail():
    data = load_fashion_mnist()
    assert data.items.shape == (70_000, 28, 28) and len(data.valid_idx) == 10_000
    assert np.bincount(data.labels[data.valid_idx]).tolist() == [1000] * 10
    cdls, fdls = coarse_fine_dls(data, FASHION_MNIST_COARSE, bs=128)
    assert cdls.c == 3 and fdls.c == 10
    assert cdls.train_ds.items == fdls.train_ds.items and cdls.valid_ds.items == fdls.valid_ds.items
    xb, yb = cdls.one_batch()
    assert xb.shape == (128, 3, 28, 28)
    lt = long_tailed(data, 100)
    assert np.bincount(data.labels[lt]).tolist() == long_tailed_counts(6000, 10, 100).tolist()
    ldls = imageset_dls(data, train_idx=lt, bs=64)
    assert len(ldls.train_ds) == len(lt) and len(ldls.valid_ds) == 10_000


@pytest.mark.skipif(not CIFAR_ARCHIVE.exists(), reason=f'{CIFAR_ARCHIVE} absent')
def test_cifar10_image_folder_archive(tmp_path, monkeypatch):
    monkeypatch.setenv('FASTAMP_DATA', str(tmp_path))
    data = load_cifar(CIFAR_ARCHIVE)
    assert len(data) == 60_000 and len(data.valid_idx) == 10_000 and len(data.vocab) == 10
    dls = imageset_dls(data, bs=32)
    xb, yb = dls.one_batch()
    assert xb.shape == (32, 3, 32, 32) and 0 <= float(xb.min()) and float(xb.max()) <= 1


def test_progressive_sampling_moves_from_instance_to_class_balanced():
    from fastai.vision.all import Learner, accuracy
    from fastamp.data import load_digits, ProgressiveSampling, sampler_weights
    from conftest import small_cnn
    d = load_digits()
    lt = long_tailed(d, 10)
    dls = imageset_dls(d, train_idx=lt, sampler='progressive', bs=64, size=8)
    seen = []
    from fastai.callback.core import Callback
    class Watch(Callback):
        order = 1
        def before_train(self): seen.append(self.dls.train.wgts.copy())
    learn = Learner(dls, small_cnn(), cbs=[ProgressiveSampling(), Watch()])
    with learn.no_bar(), learn.no_logging(): learn.fit(3, 1e-3)
    lab = d.labels[lt]
    assert np.allclose(seen[0], sampler_weights(lab, 'instance')) and np.allclose(seen[-1], sampler_weights(lab, 'class'))
    assert seen[1][lab == 9].sum() > seen[0][lab == 9].sum()


def test_progressive_sampling_needs_weighted_loaders():
    from fastai.vision.all import Learner
    from fastamp.data import load_digits, ProgressiveSampling
    from conftest import small_cnn
    learn = Learner(imageset_dls(load_digits(), bs=64, size=8), small_cnn(), cbs=ProgressiveSampling())
    with pytest.raises(TypeError, match="sampler='progressive'"):
        with learn.no_bar(), learn.no_logging(): learn.fit(1)
