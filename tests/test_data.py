"""Data readers and recipes: real files where the environment points at them (Fashion-MNIST via $FASTAMP_DATA or the
Debian package, CIFAR-10 via $FASTAMP_CIFAR10), and the failure modes of archives, pickles, folders and exports."""
import os, pickle, re, tarfile, time
from pathlib import Path
import numpy as np, pytest
from PIL import Image
from fastamp.datasets import (load_digits, load_fashion_mnist, find_fashion_mnist, load_cifar, load_image_folder,
                              extract_archive, write_image_folder)
from fastamp.data import coarse_fine_dls, FASHION_MNIST_COARSE, long_tailed, long_tailed_counts, imageset_dls

REPO = Path(__file__).parents[1]
CIFAR10 = os.environ.get('FASTAMP_CIFAR10')
USER_CACHE = os.environ.get('FASTAMP_CACHE')


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    "Decoded-array caches and extractions go to this test's folder, never next to shared data"
    monkeypatch.setenv('FASTAMP_CACHE', str(tmp_path / 'cache'))


def png(p, value=0, shape=(8, 8, 3)):
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, np.uint8)).save(p)


def tiny_tree(root, classes, n=2):
    for split in ('train', 'test'):
        for k, c in enumerate(classes):
            for i in range(n): png(root / split / c / f'{i}.png', 30 * k + i)
    return root


def tgz(folder, archive):
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, 'w:gz') as t: t.add(folder, folder.name)
    return archive


# --- real data, where the environment has it --------------------------------------------------------------------

@pytest.mark.skipif(find_fashion_mnist() is None,
                    reason='Fashion-MNIST not found ($FASTAMP_DATA or apt-get install dataset-fashion-mnist)')
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


@pytest.mark.skipif(not CIFAR10, reason="FASTAMP_CIFAR10 is not set: point it at CIFAR-10's archive or folder")
def test_real_cifar10_decodes_once_then_loads_from_the_cache(monkeypatch):
    if USER_CACHE: monkeypatch.setenv('FASTAMP_CACHE', USER_CACHE)
    else: monkeypatch.delenv('FASTAMP_CACHE')                 # the default place, shared with the tutorials' runs
    t0 = time.time(); data = load_cifar(CIFAR10); first = time.time() - t0
    assert len(data) == 60_000 and len(data.valid_idx) == 10_000 and len(data.vocab) == 10
    assert data.name == 'cifar10' and data.items.shape == (60_000, 32, 32, 3) and data.items.dtype == np.uint8
    t0 = time.time(); again = load_cifar(CIFAR10); second = time.time() - t0
    assert np.array_equal(again.items, data.items) and again.vocab == data.vocab and second < max(3., first / 3)
    dls = imageset_dls(data, bs=32)
    xb, yb = dls.one_batch()
    assert xb.shape == (32, 3, 32, 32) and 0 <= float(xb.min()) and float(xb.max()) <= 1
    cdls, fdls = coarse_fine_dls(data, bs=32)                              # the built-in CIFAR-10 grouping
    assert cdls.vocab == ['animals', 'vehicles'] and fdls.c == 10


# --- what a user gives us, and what goes wrong with it ------------------------------------------------------------

def test_archive_cache_follows_the_archive_content_not_its_name(tmp_path):
    a = tgz(tiny_tree(tmp_path / 'src1' / 'mini', ['cat', 'dog']), tmp_path / 'one' / 'mini.tar.gz')
    b = tgz(tiny_tree(tmp_path / 'src2' / 'mini', ['ant', 'bee', 'fly']), tmp_path / 'two' / 'mini.tar.gz')
    assert load_cifar(a).vocab == ['cat', 'dog'] and load_cifar(b).vocab == ['ant', 'bee', 'fly']
    assert load_image_folder(a).vocab == ['cat', 'dog'] and load_image_folder(b).vocab == ['ant', 'bee', 'fly']
    tgz(tiny_tree(tmp_path / 'src3' / 'mini', ['elk', 'owl']), a)            # re-downloaded: same name, new content
    assert load_cifar(a).vocab == ['elk', 'owl'] and load_image_folder(a).vocab == ['elk', 'owl']
    assert extract_archive(a) != extract_archive(b)


def test_cifar_folder_cache_notices_changed_files(tmp_path):
    root = tiny_tree(tmp_path / 'mini', ['cat', 'dog'])
    assert load_cifar(root).vocab == ['cat', 'dog']
    tiny_tree(root, ['emu'])
    assert load_cifar(root).vocab == ['cat', 'dog', 'emu']


def test_fashion_mnist_path_without_the_files_is_an_error_naming_them(tmp_path):
    (tmp_path / 'train-images-idx3-ubyte.gz').write_bytes(b'')
    with pytest.raises(FileNotFoundError, match=r'train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz'):
        load_fashion_mnist(tmp_path)                     # never a silent switch to the system's copy
    with pytest.raises(FileNotFoundError, match='t10k-labels-idx1-ubyte.gz'): load_fashion_mnist(tmp_path / 'empty')


def test_long_tailed_names_an_empty_class_and_what_to_do():
    data = load_digits()
    data.labels[data.labels == 9] = 8                    # the last class has no items
    with pytest.raises(ValueError, match=r"class 9 \('9'\) has no training items.*drop the class"):
        long_tailed(data, 10)
    data.labels[data.labels == 4] = 3                    # a middle class too: the first empty one is named
    with pytest.raises(ValueError, match=r"class 4 \('4'\) has no training items"): long_tailed(data, 10)


def test_truncated_cifar_archive_is_an_error_naming_the_file(tmp_path):
    good = tgz(tiny_tree(tmp_path / 'src' / 'mini', ['cat', 'dog'], n=20), tmp_path / 'good.tar.gz')
    bad = tmp_path / 'cut.tar.gz'; bad.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    with pytest.raises(ValueError, match=r'cut\.tar\.gz: cannot be read as a \.tar\.gz archive.*truncated or corrupt'):
        load_cifar(bad)
    with pytest.raises(ValueError, match=r'cut\.tar\.gz'): extract_archive(bad)


def test_corrupt_cifar_pickle_is_an_error_naming_the_file(tmp_path):
    d = tmp_path / 'cifar-10-batches-py'; d.mkdir()
    batch = {'data': np.zeros((2, 3072), np.uint8), 'labels': [0, 1]}
    for n in ('data_batch_1', 'test_batch'): pickle.dump(batch, open(d / n, 'wb'))
    pickle.dump({'label_names': ['a', 'b']}, open(d / 'batches.meta', 'wb'))
    assert load_cifar(tmp_path, cache=False).items.shape == (4, 32, 32, 3)
    (d / 'data_batch_1').write_bytes((d / 'data_batch_1').read_bytes()[:100])          # truncated
    with pytest.raises(ValueError, match=r'data_batch_1: cannot be read as a CIFAR pickle.*truncated or corrupt'):
        load_cifar(tmp_path, cache=False)
    pickle.dump(batch, open(d / 'data_batch_1', 'wb'))
    with tarfile.open(tmp_path / 'c10.tar.gz', 'w:gz') as t: t.add(d, d.name)
    (d / 'test_batch').write_bytes(b'garbage')
    with pytest.raises(ValueError, match=r'test_batch: cannot be read as a CIFAR pickle'): load_cifar(tmp_path)
    assert load_cifar(tmp_path / 'c10.tar.gz').vocab == ['a', 'b']


def test_nested_tree_with_repeated_leaf_names_keeps_fine_classes_apart(tmp_path):
    tree = {'Greek': ['character01', 'character02'], 'Latin': ['character01', 'character02', 'character03']}
    for split in ('train', 'test'):
        for a, chars in tree.items():
            for c in chars:
                for i in range(2): png(tmp_path / split / a / c / f'{i}.png', i * 50)
    data = load_image_folder(tmp_path)
    assert len(data.vocab) == 5 and data.coarse_vocab == ['Greek', 'Latin']
    assert {data.vocab[f]: data.coarse_vocab[c] for f, c in zip(data.labels, data.coarse_labels)} == \
        {f'{a}/{c}': a for a, cs in tree.items() for c in cs}
    cdls, fdls = coarse_fine_dls(data, bs=4, size=8, shuffle=False)
    assert cdls.train_ds.items == fdls.train_ds.items and cdls.valid_ds.items == fdls.valid_ds.items
    for (_, c), (_, f) in zip(cdls.train_ds, fdls.train_ds):
        assert cdls.vocab[int(c)] == fdls.vocab[int(f)].split('/')[0]


def test_mixed_depths_name_one_file_of_each_kind(tmp_path):
    png(tmp_path / 'train' / 'cat' / 'a.png'); png(tmp_path / 'train' / 'animal' / 'dog' / 'b.png')
    png(tmp_path / 'test' / 'cat' / 'c.png')
    with pytest.raises(ValueError, match=r'train/cat/a\.png.*train/animal/dog/b\.png'): load_image_folder(tmp_path)


def test_classes_missing_from_one_split_are_reported_in_one_line(tmp_path):
    for split, cs in (('train', ['cat', 'dog', 'emu']), ('test', ['cat', 'dog', 'yak'])):
        for c in cs: png(tmp_path / split / c / '0.png')
    with pytest.warns(UserWarning) as w: load_image_folder(tmp_path)
    msgs = [str(x.message) for x in w]
    assert msgs == ["classes in train/ but not test/: ['emu']; in test/ but not train/: ['yak']"]


def test_exported_array_learner_predicts_an_array_a_pil_image_and_a_file(tmp_path):
    from fastai.vision.all import Learner, load_learner
    from fastamp.models import small_cnn
    data = load_digits()
    learn = Learner(imageset_dls(data, bs=64, size=16), small_cnn(10, head='one'))
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    learn.export(tmp_path / 'digits.pkl')
    loaded = load_learner(tmp_path / 'digits.pkl')
    x = data.items[data.valid_idx[0]]
    png_file = tmp_path / 'x.png'; Image.fromarray(x).save(png_file)
    preds = [loaded.predict(item) for item in (x, Image.fromarray(x), png_file, str(png_file),
                                                np.stack([x] * 3, -1), x.astype(np.float32) / 255)]
    assert all(p[0] == preds[0][0] and np.allclose(p[2], preds[0][2], atol=1e-5) for p in preds)
    assert preds[0][0] == learn.predict(x)[0]
    with pytest.raises(IndexError, match='pass the image itself'): loaded.predict(3)


def test_digits_image_folder_matches_the_arrays(tmp_path):
    folder = load_image_folder(write_image_folder(load_digits(), tmp_path / 'digits'))
    assert len(folder) == 1797 and folder.vocab == [str(c) for c in range(10)]
    arrays = load_cifar(tmp_path / 'digits')                                     # the same tree, decoded
    assert arrays.items.shape == (1797, 8, 8, 3) and sorted(arrays.labels.tolist()) == sorted(folder.labels.tolist())


# --- the repository stands alone ------------------------------------------------------------------------------------

def test_tutorials_cite_results_pages_that_exist():
    cited = {m for nb in (REPO / 'nbs').rglob('*.ipynb') for m in re.findall(r'results/[\w.-]+\.md', nb.read_text())}
    assert cited and [c for c in sorted(cited) if not (REPO / c).exists()] == []


# --- samplers -------------------------------------------------------------------------------------------------------

def test_progressive_sampling_moves_from_instance_to_class_balanced():
    from fastai.vision.all import Learner
    from fastai.callback.core import Callback
    from fastamp.data import ProgressiveSampling, sampler_weights
    from fastamp.models import small_cnn
    d = load_digits()
    lt = long_tailed(d, 10)
    dls = imageset_dls(d, train_idx=lt, sampler='progressive', bs=64, size=8)
    seen = []
    class Watch(Callback):
        order = 1
        def before_train(self): seen.append(self.dls.train.wgts.copy())
    learn = Learner(dls, small_cnn(10, head='one'), cbs=[ProgressiveSampling(), Watch()])
    with learn.no_bar(), learn.no_logging(): learn.fit(3, 1e-3)
    lab = d.labels[lt]
    assert np.allclose(seen[0], sampler_weights(lab, 'instance'))
    assert np.allclose(seen[-1], sampler_weights(lab, 'class'))
    assert seen[1][lab == 9].sum() > seen[0][lab == 9].sum()


def test_progressive_sampling_needs_weighted_loaders():
    from fastai.vision.all import Learner
    from fastamp.data import ProgressiveSampling
    from fastamp.models import small_cnn
    learn = Learner(imageset_dls(load_digits(), bs=64, size=8), small_cnn(10, head='one'), cbs=ProgressiveSampling())
    with pytest.raises(TypeError, match="sampler='progressive'"):
        with learn.no_bar(), learn.no_logging(): learn.fit(1)


# --- offline stand-ins ------------------------------------------------------------------------------------------------

def test_without_cifar10_the_folder_stand_in_is_digits_said_in_one_line(monkeypatch, capsys):
    from fastamp.datasets import cifar10_or_digits_folder
    monkeypatch.delenv('FASTAMP_CIFAR10', raising=False)
    path = cifar10_or_digits_folder()
    out = capsys.readouterr().out
    assert out.count('\n') == 1 and 'FASTAMP_CIFAR10 is not set' in out and "digits" in out
    assert load_image_folder(path).vocab == [str(c) for c in range(10)]


def test_without_fashion_mnist_the_stand_in_is_digits_said_in_one_line(monkeypatch, capsys, tmp_path):
    import fastamp.datasets as D
    monkeypatch.delenv('FASTAMP_DATA', raising=False)
    monkeypatch.setattr(D, 'DEBIAN_FASHION_MNIST', tmp_path / 'absent')
    data = D.fashion_mnist_or_digits()
    out = capsys.readouterr().out
    assert data.name == 'digits' and out.count('\n') == 1 and 'Fashion-MNIST not found' in out

