"Folders on the fast path (#24, item 4): `--loader device` decodes a folder once, keeps it, refuses what cannot fit"
import json, os
import numpy as np, pytest
from PIL import Image
import fastamp.cache, fastamp.devicedata
from fastamp.bench import runner
from fastamp.cli import main
from fastamp.datasets import ImageSet, load_digits, load_image_folder, write_image_folder
from fastamp.devicedata import decode_images


@pytest.fixture
def tree(tmp_path, monkeypatch):
    "300 digits written as `train/<class>/`, `test/<class>/` (8x8 PNGs); the cache in a folder of this test"
    monkeypatch.setenv('FASTAMP_CACHE', str(tmp_path/'cache'))
    d = load_digits()
    small = ImageSet(d.items[:300], d.labels[:300], d.vocab, np.arange(240, 300), name='digits')
    return write_image_folder(small, tmp_path/'digits')


@pytest.fixture
def decodes(monkeypatch):
    "The images decoded, counted (a set under 1,000 files is decoded in this process)"
    calls, real = [], fastamp.devicedata._decode
    monkeypatch.setattr(fastamp.devicedata, '_decode', lambda f, *a, **k: calls.append(f) or real(f, *a, **k))
    return calls


def test_decoded_once_then_reused(tree, decodes, capsys):
    "The second decoding of an unchanged folder reads the kept array and decodes nothing"
    files = load_image_folder(tree)
    first = decode_images(files, 16)
    assert len(decodes) == len(files) == 300 and first.items.shape == (300, 16, 16, 3)
    assert 'decoded 300 images at 16x16' in capsys.readouterr().err
    decodes.clear()
    again = decode_images(load_image_folder(tree), 16)
    assert decodes == [] and 'nothing decoded' in capsys.readouterr().err
    np.testing.assert_array_equal(again.items, first.items)
    assert len(list((tree.parent/'cache').glob('digits.fastamp16px-*.npz'))) == 1


def test_a_changed_file_is_decoded_again(tree, decodes):
    "A file that changes changes the key: the folder is decoded again (the new pixels) and the old array removed"
    files = load_image_folder(tree)
    before = decode_images(files, 8)
    f = files.items[0]
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(f)
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))  # a later mtime even on a coarse clock
    decodes.clear()
    after = decode_images(load_image_folder(tree), 8)
    assert len(decodes) == 300 and (after.items[0] == 255).all() and not (before.items[0] == 255).all()
    assert len(list((tree.parent/'cache').glob('digits.fastamp8px-*.npz'))) == 1


def test_too_large_is_refused_with_the_arithmetic(tree, decodes, monkeypatch):
    "A folder that does not fit in memory is refused before decoding, with N x size^2 x 3 and the two fixes"
    monkeypatch.setattr(fastamp.cache, 'available_memory', lambda: 10**6)
    with pytest.raises(ValueError) as e: decode_images(load_image_folder(tree), 64)
    msg = str(e.value)
    assert '300 images x 64x64 x 3 bytes = 3.52 MiB' in msg and 'than the 976.6 KiB of memory' in msg
    assert '(at 64x64, 40 images fit)' in msg
    assert '--size 32' in msg and '--loader item' in msg and decodes == []


def test_bench_device_loader_on_a_folder(tree, tmp_path, capsys):
    "`fastamp bench --loader device` on a folder: trains on the decoded array; a second run decodes nothing"
    args = ['bench', '--dataset', 'folder', '--data', str(tree), '--loader', 'device', '--size', '16', '--task', 'lt',
            '--methods', 'erm', '--epochs', '1', '--seeds', '0', '--bs', '32']
    assert main(args + ['--out', str(tmp_path/'a')]) == 0
    assert 'decoded 300 images at 16x16' in capsys.readouterr().err
    (rec,) = [json.loads(p.read_text()) for p in (tmp_path/'a'/'lt'/'runs').glob('*.json')]
    assert rec['config']['loader'] == 'device' and rec['metrics']['accuracy'] > 0.2
    for text in (json.dumps(rec), (tmp_path/'a'/'runs.csv').read_text()):
        assert str(tree) not in text and str(tmp_path) not in text  # the data by name and checksum: records travel
    assert rec['config']['data'] == tree.name
    runner._DATASET_CACHE.clear()  # as a new process: the second run reads the kept array
    assert main(args + ['--out', str(tmp_path/'b')]) == 0
    err = capsys.readouterr().err
    assert 'nothing decoded' in err and 'decoded 300' not in err


def test_bench_refuses_a_folder_too_large(tree, tmp_path, capsys, monkeypatch):
    "The refusal is one line before any run, naming --size and --loader item"
    monkeypatch.setattr(fastamp.cache, 'available_memory', lambda: 10**6)
    # --bs 16: one batch (768 KiB of float32 inputs) fits the 1 MB; the decoded folder (3.7 MB, held twice) does not
    assert main(['bench', '--data', str(tree), '--loader', 'device', '--size', '64', '--task', 'lt', '--methods', 'erm',
                 '--epochs', '1', '--bs', '16', '--out', str(tmp_path/'o')]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert 'x 64x64 x 3 bytes' in err and '--loader item' in err and not (tmp_path/'o'/'lt'/'runs').exists()
