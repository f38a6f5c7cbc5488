"""Issue 22 on the data side: images mean the same on every path, sizes and weights are checked before work, a written
folder belongs to its data, a bad file is named, and the cache in the shared temp folder cannot be planted."""
import os, stat, tarfile, tempfile
from pathlib import Path
import numpy as np, pytest
from PIL import Image
import fastamp.datasets
from fastamp.cache import cache_dir, extract_archive, source_checksum
from fastamp.datasets import ImageSet, load_digits, seeded_subset, load_image_folder, load_cifar, write_image_folder
from fastamp.data import imageset_dls, long_tailed_indices, sampler_weights, train_weights
from fastamp.devicedata import device_dls


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv('FASTAMP_CACHE', str(tmp_path / 'cache'))


@pytest.fixture(scope='module')
def digits(): return load_digits()


def _as(d:ImageSet, items)->ImageSet: return ImageSet(items, d.labels, d.vocab, d.valid_idx, name=d.name)


def _valid_batch(dls): return dls.valid.one_batch()[0].cpu()


def _per_item(d): return _valid_batch(imageset_dls(d, bs=16, n_ch=1))
def _device(d): return _valid_batch(device_dls(d, bs=16, n_ch=1, normalize=False, augment=False, device='cpu'))


# --- 4. images mean the same on every path ------------------------------------------------------------------------

def test_uint16_and_float_arrays_mean_what_uint8_means_on_both_loaders(digits):
    ref = _per_item(digits)
    assert float(ref.max()) == 1.
    for items in (digits.items.astype(np.uint16) * 257, digits.items / 255., (digits.items / 255.).astype(np.float32)):
        for batch in (_per_item, _device):
            np.testing.assert_allclose(batch(_as(digits, items)).numpy(), ref.numpy(), atol=1 / 255 + 1e-6)


@pytest.mark.parametrize('items, fix', [
    (lambda x: x.astype(np.int64), r'astype\(np.uint8\)'),      # 0..255 in int64: not silently 0..255 floats
    (lambda x: x.astype(np.float64), '255'),                     # 0..255 in floats: not silently 0..255 floats
    (lambda x: np.where(x > 100, np.nan, x / 255.), 'nan'),
])
def test_arrays_of_another_range_are_refused_by_both_loaders_with_the_fix(digits, items, fix):
    d = _as(digits, items(digits.items))
    for batch in (_per_item, _device):
        with pytest.raises((TypeError, ValueError), match=fix): batch(d)


def test_two_channel_arrays_are_refused_naming_n_ch(digits):
    d = _as(digits, np.stack([digits.items] * 2, -1))
    with pytest.raises(ValueError, match=r'2-channel images.*n_ch=2'): imageset_dls(d, bs=16)
    with pytest.raises(ValueError, match=r'2-channel images.*n_ch=2'): device_dls(d, bs=16, device='cpu')
    for dls in (imageset_dls(d, bs=16, n_ch=2), device_dls(d, bs=16, n_ch=2, device='cpu')):   # documented way
        assert _valid_batch(dls).shape[1] == 2


def _png16(p:Path, a:np.ndarray):
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a.astype(np.uint16)).save(p)


def test_16bit_pngs_read_their_full_range(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 8).round(), (8, 1))
    for split in ('train', 'test'):
        for c in ('a', 'b'): _png16(tmp_path / 'r' / split / c / '0.png', ramp)
    files = load_image_folder(tmp_path / 'r')
    xb = _valid_batch(imageset_dls(files, bs=2, num_workers=0))
    np.testing.assert_allclose(xb[0, 0, 0].numpy(), ramp[0] / 65535, atol=1 / 255)    # not 98 % white
    arrays = load_cifar(tmp_path / 'r')
    np.testing.assert_allclose(arrays.items[0, 0, :, 0] / 255, ramp[0] / 65535, atol=1 / 255)


def test_a_training_subset_overlapping_the_held_out_items_is_an_error(digits):
    lt = long_tailed_indices(digits.labels, 10)                  # on the whole set: it holds held-out digits
    n = len(np.intersect1d(lt, digits.valid_idx))
    assert n > 0
    with pytest.raises(ValueError, match=rf'{n} of the {len(lt)} training items are held-out items'):
        imageset_dls(digits, train_idx=lt)
    with pytest.raises(ValueError, match=rf'{n} of the {len(lt)} training items'): device_dls(digits, train_idx=lt)


# --- 3. sizes and weights ----------------------------------------------------------------------------------------

def test_negative_sizes_are_refused():
    with pytest.raises(ValueError, match='k=-3'): seeded_subset(10, -3)
    with pytest.raises(ValueError, match='n=-1'): seeded_subset(-1, 3)


@pytest.mark.parametrize('w', [np.zeros(5), np.array([1., -1, 1, 1, 1]), np.array([1., np.nan, 1, 1, 1]),
                               np.array([1., np.inf, 1, 1, 1])])
def test_sampler_weights_that_draw_nothing_or_nonsense_are_refused(w):
    with pytest.raises(ValueError, match='sampler'): train_weights(w, np.array([0, 1, 0, 1, 0]))


def test_progressive_weights_outside_training_are_refused():
    with pytest.raises(ValueError, match=r't=2'): sampler_weights(np.array([0, 1, 1]), 'progressive', t=2)


def test_loaders_refuse_zero_weights(digits):
    w = np.zeros(len(digits.train_idx))
    with pytest.raises(ValueError, match='sampler'): imageset_dls(digits, sampler=w)
    with pytest.raises(ValueError, match='sampler'): device_dls(digits, sampler=w, device='cpu')
    dls = device_dls(digits, sampler='class', device='cpu')
    dls.train.wgts = np.r_[-1., np.ones(len(w) - 1)]                       # weights set later, as a callback does
    with pytest.raises(ValueError, match='wgts: weight -1.0 of item 0'): dls.train.one_batch()


# --- 1. a written folder belongs to its data ---------------------------------------------------------------------

def test_an_image_folder_written_for_other_data_is_rewritten(digits, tmp_path):
    p = write_image_folder(digits, tmp_path / 'f')
    marker = (p / '.complete').stat().st_mtime_ns
    assert write_image_folder(digits, p) == p and (p / '.complete').stat().st_mtime_ns == marker   # same data: reused
    other = ImageSet(np.full((4, 8, 8), 7, np.uint8), np.array([0, 1, 0, 1]), ['x', 'y'], np.array([2, 3]))
    write_image_folder(other, p)
    back = load_image_folder(p)
    assert back.vocab == ['x', 'y'] and len(back) == 4


# --- 7. a bad file is named --------------------------------------------------------------------------------------

def test_a_truncated_image_in_a_folder_is_named_with_the_fix(tmp_path):
    for split in ('train', 'test'):
        for c in ('a', 'b'):
            p = tmp_path / 'r' / split / c / '0.png'; p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(p)
    bad = tmp_path / 'r' / 'train' / 'b' / '0.png'
    bad.write_bytes(bad.read_bytes()[:300])
    dls = imageset_dls(load_image_folder(tmp_path / 'r'), bs=2, num_workers=0)
    with pytest.raises(OSError, match=r'r/train/b/0\.png.*(replace|delete)'):
        for _ in dls.train: pass


# --- 9. the cache is not an attack surface -----------------------------------------------------------------------

def test_the_cache_functions_are_still_reachable_from_datasets():
    "Run identity (the benchmark) reads the data's checksum and cache folder through `fastamp.datasets` too"
    assert fastamp.datasets.source_checksum is source_checksum and fastamp.datasets.cache_dir is cache_dir


def _read_only_source(tmp_path):
    src = tmp_path / 'ro'; src.mkdir(); (src / 'data.tgz').touch(); src.chmod(0o555)
    return src / 'data.tgz'


def test_the_temp_cache_is_a_private_folder_of_this_user(tmp_path, monkeypatch):
    monkeypatch.delenv('FASTAMP_CACHE'); monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path / 'tmp'))
    (tmp_path / 'tmp').mkdir()
    d = cache_dir(_read_only_source(tmp_path))
    st = d.stat()
    assert d.parent == tmp_path / 'tmp' and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700


def test_a_temp_cache_folder_of_another_user_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv('FASTAMP_CACHE'); monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path / 'tmp'))
    (tmp_path / 'tmp').mkdir()
    src = _read_only_source(tmp_path)
    them = os.getuid() + 1                                      # "their" folder, planted under their uid's name
    (tmp_path / 'tmp' / f'fastamp-{them}').mkdir(mode=0o700)
    monkeypatch.setattr(os, 'getuid', lambda: them)             # ... which this process, as uid `them`, does not own
    with pytest.raises(PermissionError, match='another user.*FASTAMP_CACHE'): cache_dir(src)


def test_a_cached_array_file_of_another_user_is_not_loaded(tmp_path, monkeypatch):
    root = tmp_path / 'mini'
    for split in ('train', 'test'):
        for k, c in enumerate(('cat', 'dog')):
            p = root / split / c / '0.png'; p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8, 3), 30 * k, np.uint8)).save(p)
    real = load_cifar(root)
    cached = next((tmp_path / 'cache').glob('*.npz'))
    np.savez(cached, items=np.zeros((1, 8, 8, 3), np.uint8), labels=np.zeros(1, np.int64), valid_idx=np.zeros(0, int),
             vocab=np.array(['planted']), name='x')
    monkeypatch.setattr(os, 'getuid', lambda: cached.stat().st_uid + 1)
    with pytest.warns(UserWarning, match='another user'): again = load_cifar(root)
    assert again.vocab == real.vocab == ['cat', 'dog']


def test_an_extraction_of_another_user_is_refused(tmp_path, monkeypatch):
    (tmp_path / 'mini').mkdir(); (tmp_path / 'mini' / 'a.txt').write_text('a')
    with tarfile.open(tmp_path / 'mini.tgz', 'w:gz') as t: t.add(tmp_path / 'mini', 'mini')
    out = extract_archive(tmp_path / 'mini.tgz', tmp_path / 'x')              # "theirs", with its marker
    monkeypatch.setattr(os, 'getuid', lambda: out.stat().st_uid + 1)
    with pytest.raises(PermissionError, match='another user'): extract_archive(tmp_path / 'mini.tgz', tmp_path / 'x')


def test_a_refused_archive_member_is_named_not_called_corrupt(tmp_path):
    (tmp_path / 'evil.txt').write_text('x')
    a = tmp_path / 'evil.tar.gz'
    with tarfile.open(a, 'w:gz') as t: t.add(tmp_path / 'evil.txt', '../evil.txt')
    with pytest.raises(ValueError, match=r"'\.\./evil\.txt'") as e: extract_archive(a, tmp_path / 'out')
    assert 'download it again' not in str(e.value)
