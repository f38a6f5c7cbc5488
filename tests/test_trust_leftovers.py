"""Reliability round 4 (#39), the items left: shards that disagree (7), what killed runs and full disks leave behind
(14), late errors on sizes, caches and folders of one name (16), the Hub's retries offline (17), decode workers of a
killed process (13)."""
import json
from pathlib import Path
import pytest
from fastamp import bench
from fastamp.cli import main

ARGV = ['bench', '--task', 'lt', '--methods', 'erm', '--seeds', '0,1', '--rhos', '10', '--epochs', '1']


def _bench(out, *more):
    return main([*ARGV, '--out', str(out), *more])


def test_a_shard_with_other_settings_than_the_sweep_on_out_is_refused_naming_the_option(tmp_path, capsys):
    out = tmp_path / 'out'
    assert _bench(out, '--shard', '0/2') == 0
    capsys.readouterr()
    assert _bench(out, '--shard', '1/2', '--epochs', '2', '--lr', '0.02') == 2          # before any run
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('fastamp: error: --shard 1/2: --epochs 2 (that sweep\'s: 1); ')
    assert "--lr 0.02 (that sweep's: 0.005)" in err and '(1 of its 2 runs finished)' in err
    assert 'give every shard the same options but --shard, or another --out' in err
    assert _bench(out, '--shard', '1/3') == 2 and "--shard 1/3 (that sweep's: i/2)" in capsys.readouterr().err
    assert len(list(out.glob('lt/runs/*.json'))) == 1
    assert _bench(out, '--shard', '1/2') == 0                                               # the same sweep: its half
    assert len(list(out.glob('lt/runs/*.json'))) == 2
    assert _bench(out, '--shard', '0/2', '--epochs', '2') == 0  # that sweep is finished: a new one may start


def test_a_killed_run_abandoned_for_other_options_is_named_and_cleaned(tmp_path, capsys):
    "Item 14: a run killed (checkpoint, lock of a dead process), then other options: bench names it, clean removes it"
    out = tmp_path / 'out'
    old = bench.run_key(bench.task_configs(dict(tasks=['lt'], methods=['erm'], seeds=[0], rhos=[10], epochs=3))[0],
                        'erm', 0, 10)
    bench.write_plan(out, {'lt': [old]})
    runs = out / 'lt' / 'runs'; runs.mkdir(parents=True)
    (runs / f'{old}.ckpt').write_bytes(b'epochs'); (runs / f'{old}.lock').write_text('999999999')
    (runs / f'.{old}.ckpt.x1y2.tmp').write_bytes(b'half')               # a checkpoint write killed midway
    assert _bench(out) == 0                                                 # other options: --epochs 1
    said = capsys.readouterr().out
    assert f'note: 3 file(s) of abandoned runs in {out}/' in said and f'fastamp clean --out {out} removes them' in said
    assert main(['clean', '--out', str(out)]) == 0
    assert f'3 file(s) of abandoned runs removed from {out}/' in capsys.readouterr().out
    assert sorted(p.suffix for p in runs.iterdir()) == ['.json', '.json']  # the two finished runs only
    assert main(['report', '--out', str(out), '--no-plots']) == 0 and 'note:' not in capsys.readouterr().out


@pytest.fixture
def tree(tmp_path, monkeypatch):
    "A folder of 100 digits (8x8 PNGs), the cache in a folder of this test"
    import numpy as np
    from fastamp.datasets import ImageSet, load_digits, write_image_folder
    monkeypatch.setenv('FASTAMP_CACHE', str(tmp_path / 'cache'))
    d = load_digits()
    return write_image_folder(ImageSet(d.items[:100], d.labels[:100], d.vocab, np.arange(70, 100), name='digits'),
                              tmp_path / 'a' / 'images')


def test_a_full_cache_disk_is_a_warning_naming_the_cache_and_leaves_no_tmp(tree, tmp_path, monkeypatch):
    "Items 14 and 16: the decoded array is used, the cache named (not --out), no `*.tmp` left"
    import errno, numpy as np
    from fastamp.datasets import load_image_folder
    from fastamp.devicedata import decode_images
    def full(*a, **k): raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(np, 'savez', full)
    with pytest.warns(UserWarning, match=f"{tmp_path / 'cache'}: cannot write the cache there .No space left"):
        x = decode_images(load_image_folder(tree), 8)
    assert x.items.shape == (100, 8, 8, 3) and list((tmp_path / 'cache').iterdir()) == []


def test_a_read_only_cache_is_said_before_decoding(tree, tmp_path, monkeypatch):
    import fastamp.devicedata
    from fastamp.datasets import load_image_folder
    (tmp_path / 'cache').mkdir(mode=0o555)                                   # marked read-only: so for root too
    said = []
    real = fastamp.devicedata._decode
    monkeypatch.setattr(fastamp.devicedata, '_decode', lambda *a, **k: said.append('decode') or real(*a, **k))
    import warnings
    warn = warnings.warn
    monkeypatch.setattr(warnings, 'warn', lambda *a, **k: said.append('warned') or warn(*a, **k))
    files = load_image_folder(tree)
    with pytest.warns(UserWarning, match='is read-only here, so the decoded images are not kept') as w:
        fastamp.devicedata.decode_images(files, 8)
    assert said[0] == 'warned' and set(said[1:]) == {'decode'} and len(w) == 1   # said before any decode
    assert list((tmp_path / 'cache').iterdir()) == []


def test_two_folders_of_one_name_keep_a_cache_entry_each(tree, tmp_path):
    "Item 16: folders both named `images`, cached in one FASTAMP_CACHE, do not evict each other's entry"
    import shutil
    from fastamp.datasets import load_image_folder
    from fastamp.devicedata import decode_images
    other = shutil.copytree(tree, tmp_path / 'b' / 'images')
    (other / 'train' / '0' / sorted(p.name for p in (other / 'train' / '0').iterdir())[0]).unlink()  # other data
    for t in (tree, other, tree): decode_images(load_image_folder(t), 8)
    assert len(list((tmp_path / 'cache').glob('images.fastamp8px-*.npz'))) == 2


DECODE_AND_HANG = """
import os, sys, time, numpy as np
from pathlib import Path
import fastamp.devicedata as dd
from fastamp.datasets import ImageSet
out = Path(sys.argv[1])
def hang(f, *a, **k):
    (out / f'worker.{os.getpid()}').touch(); time.sleep(600); return np.zeros((8, 8, 3), np.uint8)
dd._decode = hang
files = []
for i in range(130): (out / f'{i}.png').write_bytes(b'x'); files.append(str(out / f'{i}.png'))
dd.decode_images(ImageSet(files, np.zeros(130, int), ['a'], np.arange(0)), size=8, cache=False, workers=2)
"""


def _alive(pid):
    try: state = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]
    except OSError: return False
    return state != 'Z'


def test_decode_workers_end_when_their_parent_is_killed(tmp_path):
    "Item 13: kill -9 of the process decoding with a pool leaves no worker behind"
    import os, signal, subprocess, sys, time
    if not Path('/proc/self/stat').exists(): pytest.skip('no /proc here')
    p = subprocess.Popen([sys.executable, '-c', DECODE_AND_HANG, str(tmp_path)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(workers := list(tmp_path.glob('worker.*'))) < 2 and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.2)
    if len(workers) < 2: p.kill(); p.wait(30)
    assert len(workers) == 2, p.stderr.read().decode()[-2000:]
    pids = [int(w.suffix[1:]) for w in workers]
    os.kill(p.pid, signal.SIGKILL); p.wait(30)
    deadline = time.monotonic() + 60
    while any(map(_alive, pids)) and time.monotonic() < deadline: time.sleep(0.2)
    left = [q for q in pids if _alive(q)]
    for q in left: os.kill(q, signal.SIGKILL)
    assert not left, f'decode workers {left} outlived their killed parent'


def test_an_unreasonable_size_is_refused_before_any_work(tmp_path, capsys):
    "Item 16: --size 100000 with the item loader failed each run with MemoryError"
    assert _bench(tmp_path / 'out', '--size', '100000') == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'fastamp: error: --size 100000: one batch of 64 images at 100000x100000' in err
    assert 'give --size' in err and not (tmp_path / 'out').exists()


def test_timm_weights_not_cached_offline_fail_at_once_without_the_hubs_retries(tmp_path, monkeypatch, capsys):
    "Item 17: the Hub's cache is looked in with the network off; an unreachable Hub is one line, not a minute's retries"
    pytest.importorskip('timm')
    import timm, huggingface_hub.constants as hub
    from fastamp.bench import training
    looks, create = [], timm.create_model
    monkeypatch.setattr(timm, 'create_model', lambda *a, **k: looks.append(hub.HF_HUB_OFFLINE) or create(*a, **k))
    monkeypatch.setattr(hub, 'HF_HUB_CACHE', str(tmp_path / 'hub'))                    # nothing cached
    monkeypatch.setattr(training, '_reachable', lambda url: False)
    monkeypatch.setattr(hub, 'HF_HUB_OFFLINE', False)                                   # as without the variable
    assert main(['bench', '--arch', 'timm:resnet18', '--task', 'lt', '--methods', 'erm', '--seeds', '0',
                 '--out', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and "--arch timm:resnet18: its pretrained weights are neither in timm's cache" in err
    assert 'cannot be reached from here' in err and looks == [True] and hub.HF_HUB_OFFLINE is False


def test_an_archive_with_a_read_only_cache_names_the_cache(tmp_path, monkeypatch):
    "Item 16: FASTAMP_CACHE read-only: one line naming it and the fix, not a traceback nor a corrupt archive"
    import os, tarfile
    from fastamp.cache import extract_archive
    (tmp_path / 'd').mkdir(); (tmp_path / 'd' / 'a.txt').write_text('a')
    with tarfile.open(tmp_path / 'd.tgz', 'w:gz') as t: t.add(tmp_path / 'd', 'd')
    (tmp_path / 'ro').mkdir(mode=0o555)
    if os.geteuid() == 0: monkeypatch.setattr(Path, 'mkdir', lambda *a, **k: (_ for _ in ()).throw(
        PermissionError(13, 'Permission denied')))                                       # root writes anywhere
    with pytest.raises(ValueError, match=r"ro/cache: cannot write the cache there \(Permission denied\): free space"):
        extract_archive(tmp_path / 'd.tgz', tmp_path / 'ro' / 'cache')
