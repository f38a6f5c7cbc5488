"Your own data (#24): any image folder through `fastamp bench`, pretrained backbones offline-safe, fastai's `fine_tune`"
import json, shutil, types, urllib.error
from pathlib import Path
import numpy as np, pytest, torch
from fastai.learner import Learner
from fastai.callback.core import Callback
from fastamp.cli import main
from fastamp.datasets import load_digits, write_image_folder
from fastamp.data import digits_dls
from fastamp.mixup import MidpointMixup
from fastamp.bench import BenchConfig, run_key, load_folder, load_dataset, make_learner, SettingsError
from fastamp.bench.training import _fit

@pytest.fixture(scope='module')
def flat(tmp_path_factory):
    "digits written as `train/<class>/`, `test/<class>/`"
    return write_image_folder(load_digits(), tmp_path_factory.mktemp('own')/'digits')

@pytest.fixture(scope='module')
def nested(flat, tmp_path_factory):
    "digits as `<coarse>/<fine>/` with no `test/`: the class folders alone"
    out = tmp_path_factory.mktemp('own')/'nested'
    for c in (flat/'train').iterdir(): shutil.copytree(c, out/('small' if int(c.name) < 5 else 'big')/c.name)
    return out

def _records(out, task): return [json.loads(p.read_text()) for p in sorted((Path(out)/task/'runs').glob('*.json'))]

def test_flat_folder_end_to_end(flat, tmp_path):
    "`--data` alone: the folder's own counts (rho 1) in the long-tailed task, and the overhead task; no c2f (flat)"
    out = tmp_path/'out'
    assert main(['bench', '--data', str(flat), '--methods', 'erm,midpoint', '--epochs', '1', '--seeds', '0',
                 '--out', str(out)]) == 0
    recs = _records(out, 'lt')
    assert [(r['dataset'], r['rho']) for r in recs] == [('folder', 1.0)] * 2
    assert recs[0]['config']['split'] == "the folder's test/"
    n_train = len(load_folder(flat).train_idx)
    assert recs[0]['metrics']['accuracy'] > 0.5 and sum(np.bincount(load_folder(flat).labels)) > n_train
    assert (out/'overhead'/'overhead.csv').exists() and not (out/'c2f').exists()

def test_nested_folder_without_test_end_to_end(nested, tmp_path, capsys):
    "A nested tree also runs coarse-to-fine (its folders the coarse map); without test/ a stratified split, recorded"
    out = tmp_path/'out'
    assert main(['bench', '--dataset', 'folder', '--data', str(nested), '--task', 'c2f,lt', '--methods', 'erm',
                 '--epochs', '1', '--seeds', '0', '--out', str(out)]) == 0
    for task in ('c2f', 'lt'):
        (rec,) = _records(out, task)
        assert rec['config']['split'].startswith('stratified: 0.2 of each class') and rec['config']['valid_pct'] == 0.2
    assert 'coarse_accuracy' in _records(out, 'c2f')[0]['metrics']

def test_stratified_split(nested):
    "Each class holds out its share, the same items every time, and the coarse labels come from the folders"
    d = load_folder(nested)
    assert d.vocab[:2] == ['big/5', 'big/6'] and d.coarse_vocab == ['big', 'small']
    counts, held = np.bincount(d.labels), np.bincount(d.labels[d.valid_idx], minlength=10)
    assert (np.abs(held - 0.2 * counts) <= 1).all()
    np.testing.assert_array_equal(d.valid_idx, load_folder(nested).valid_idx)
    assert not np.array_equal(load_folder(nested, valid_pct=0.3).valid_idx, d.valid_idx)

def test_mixed_sizes_ask_for_size(flat, tmp_path, capsys):
    "Images of several sizes: one line asking for --size; with --size they load"
    mixed = tmp_path/'mixed'; shutil.copytree(flat, mixed)
    from PIL import Image
    Image.new('L', (12, 12)).save(next((mixed/'train'/'3').iterdir()))
    assert main(['bench', '--data', str(mixed), '--epochs', '1', '--out', str(tmp_path/'o')]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and '--size' in err and '2 sizes' in err
    assert load_dataset('folder', mixed, size=8)[2] == 8

def test_new_settings_keep_old_run_keys():
    "A run key of fastamp's own model is the one from before --pretrained, --size, --valid-pct, --freeze-epochs"
    # (the key of the long-tailed split of issue 36, which holds a validation split out of training)
    assert run_key(BenchConfig(task='lt'), 'erm', 0, 100) == 'lt_digits_erm_s0_rho100_7e3026fe'
    assert BenchConfig().pretrained is False and BenchConfig(arch='resnet18').pretrained is True
    with pytest.raises(SettingsError, match="--pretrained with --arch cnn"): BenchConfig(pretrained=True)
    with pytest.raises(SettingsError, match="--schedule fine_tune with --arch cnn"): BenchConfig(schedule='fine_tune')

def _trained_resnet18()->torch.nn.Module:
    from torchvision import models
    torch.manual_seed(0); m = models.resnet18()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m(torch.randn(4, 3, 32, 32)).logsumexp(1).mean().backward(); opt.step()  # one step: not the initial weights
    return m

def test_weights_load_a_saved_state_dict(tmp_path):
    "`weights=`: a torchvision state dict and a fastai learner's own both land in the body, tensor for tensor"
    m = _trained_resnet18(); f = tmp_path/'r18.pth'; torch.save(m.state_dict(), f)
    learn = make_learner('resnet18', digits_dls(bs=32), [], weights=f)
    body = torch.nn.Sequential(*list(m.children())[:-2]).state_dict()
    got = learn.model[0].state_dict()
    assert got.keys() == body.keys() and all(torch.equal(got[k], body[k]) for k in body)
    assert learn.opt.frozen_idx == 2 and 'Normalize' in str(learn.dls.after_batch)  # as fastai's pretrained learner
    g = tmp_path/'fastai.pth'; torch.save(learn.model.state_dict(), g)
    again = make_learner('resnet18', digits_dls(bs=32), [], weights=g).model[0].state_dict()
    assert all(torch.equal(again[k], body[k]) for k in body)
    torch.save({'conv1.weight': torch.zeros(1)}, g)
    with pytest.raises(ValueError, match='not weights of resnet18'):
        make_learner('resnet18', digits_dls(), [], weights=g)

@pytest.fixture
def offline(monkeypatch, tmp_path):
    "No internet and an empty torch hub cache"
    def no_net(*a, **k): raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')
    monkeypatch.setenv('TORCH_HOME', str(tmp_path/'torch'))
    monkeypatch.setattr(torch.hub, 'urlopen', no_net)
    return tmp_path/'torch'/'hub'/'checkpoints'

def test_offline_pretrained_is_one_line(flat, offline, tmp_path, capsys):
    "An unreachable download: one line naming --weights and the cache folder, no traceback, before any run"
    assert main(['bench', '--data', str(flat), '--arch', 'resnet18', '--out', str(tmp_path/'o')]) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if not l.startswith('Downloading')]
    assert len(err) == 1 and '--weights' in err[0] and str(offline) in err[0] and 'huggingface' not in err[0]
    assert 'URLError' in err[0] and not (tmp_path/'o'/'lt'/'runs').exists()

def test_fine_tune_with_weights_through_the_cli(flat, offline, tmp_path, monkeypatch):
    "`--schedule fine_tune --freeze-epochs K` calls fastai's `fine_tune` with K frozen epochs; --weights needs no net"
    calls, plain = [], Learner.fine_tune
    def spy(self, epochs, base_lr=2e-3, freeze_epochs=1, *a, **k):
        calls.append((epochs, freeze_epochs)); return plain(self, epochs, base_lr, freeze_epochs, *a, **k)
    monkeypatch.setattr(Learner, 'fine_tune', spy)
    f = tmp_path/'r18.pth'; torch.save(_trained_resnet18().state_dict(), f)
    assert main(['bench', '--data', str(flat), '--task', 'lt', '--arch', 'resnet18', '--weights', str(f),
                 '--schedule', 'fine_tune', '--freeze-epochs', '2', '--epochs', '1', '--methods', 'midpoint',
                 '--seeds', '0', '--out', str(tmp_path/'o')]) == 0
    assert calls == [(1, 2)]
    (rec,) = _records(tmp_path/'o', 'lt')
    assert rec['config']['schedule'] == 'fine_tune' and rec['config']['weights_sha'] and rec['config']['pretrained']

class _Seen(Callback):
    "As each epoch trains: the mixing callback's progress and whether the body is frozen"
    order = 50
    def before_fit(self): self.rows = getattr(self, 'rows', [])
    def before_train(self):
        mix = next(cb for cb in self.learn.cbs if isinstance(cb, MidpointMixup))
        self.rows.append((round(mix.progress, 4), self.learn.opt.frozen_idx))

def test_fine_tune_ratio_schedule_spans_the_whole_fine_tune(small_dls):
    "MidpointMixup's progress runs once from 0 over the frozen and the unfrozen epochs together"
    learn = make_learner('resnet18', small_dls, [MidpointMixup()])
    seen = _Seen()
    _fit(learn, types.SimpleNamespace(schedule='fine_tune', lr=1e-3, freeze_epochs=1), 2, cbs=[seen])
    assert seen.rows == [(0.0, 2), (round(1/3, 4), 0), (round(2/3, 4), 0)]

def test_archive_and_flat_c2f(flat, nested, tmp_path, capsys):
    "An archive reads as its folder; coarse-to-fine on a flat tree is refused in one line, before any run"
    import tarfile
    with tarfile.open(tmp_path/'nested.tar.gz', 'w:gz') as t: t.add(nested, arcname='mine')
    a, d = load_folder(tmp_path/'nested.tar.gz'), load_folder(nested)
    assert a.vocab == d.vocab and a.coarse_vocab == d.coarse_vocab and np.array_equal(a.valid_idx, d.valid_idx)
    assert main(['bench', '--data', str(flat), '--task', 'c2f', '--out', str(tmp_path/'o')]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'a flat folder has no coarse classes' in err

def test_timm_weights_file(tmp_path):
    "`timm:<name>` with `weights=` reads the file through timm (`pretrained_cfg_overlay`), no download"
    import timm
    torch.manual_seed(0); t = timm.create_model('test_resnet'); f = tmp_path/'t.pth'; torch.save(t.state_dict(), f)
    body = make_learner('timm:test_resnet', digits_dls(bs=32), [], weights=f).model[0].model.state_dict()
    sd = t.state_dict()
    assert body and all(torch.equal(body[k], sd[k]) for k in body)

def test_device_loader_gets_imagenet_stats_once(tmp_path):
    "On the device loader a pretrained body's inputs are normalised there with ImageNet's statistics, not twice"
    from fastamp.bench.training import _dls, _learner
    f = tmp_path/'r18.pth'; torch.save(_trained_resnet18().state_dict(), f)
    cfg = BenchConfig(task='lt', arch='resnet18', weights=str(f), loader='device', methods=['erm'])
    data, _, size = load_dataset('digits')
    dls = _dls(cfg, data, size)
    learn = _learner(cfg, dls, 'erm')
    from fastai.vision.core import imagenet_stats
    assert torch.allclose(dls.train.mean.flatten().cpu(), torch.tensor(imagenet_stats[0]))  # on the device, once
    assert learn.opt.frozen_idx == 2 and learn.dls is dls

@pytest.mark.parametrize('held', ['test', 'valid'])
def test_a_folder_of_held_out_images_alone_is_refused(flat, held, tmp_path, capsys):
    "#39 item 1: `test/<class>/` with no `train/` is not an unsplit tree: fastamp would train on the held-out images"
    d = tmp_path/'only'; shutil.copytree(flat/'test', d/held)
    with pytest.raises(FileNotFoundError, match=f'no train/ folder beside its {held}/ folder'): load_folder(d)
    import tarfile
    with tarfile.open(tmp_path/'only.tar.gz', 'w:gz') as t: t.add(d/held, arcname=held)  # an archive of it alone
    with pytest.raises(FileNotFoundError, match='no train/ folder'): load_folder(tmp_path/'only.tar.gz')
    assert main(['bench', '--data', str(d), '--out', str(tmp_path/'o')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'add train/<class>/ folders' in err[0] and not (tmp_path/'o').exists()

def test_valid_pct_with_the_folders_own_test_is_refused(flat):
    "#39 item 17: --valid-pct is unused when the folder has test/; it only changed the run keys"
    with pytest.raises(SettingsError, match='--valid-pct 0.3: .* holds its own held-out folder'):
        BenchConfig(task='lt', dataset='folder', data=str(flat), valid_pct=0.3)
    BenchConfig(task='lt', dataset='folder', data=str(flat))

def test_out_inside_data_is_refused_before_any_work(flat, tmp_path, monkeypatch, capsys):
    "#39 item 2: `cd images && fastamp bench --data .`: each run's output changed the data's checksum, so its run keys"
    monkeypatch.chdir(flat)
    assert main(['bench', '--data', '.', '--epochs', '1']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and '--out bench_out: inside --data .' in err[0] and not (flat/'bench_out').exists()

def test_weights_of_another_architecture_are_refused_before_any_run(flat, tmp_path, capsys):
    "#39 item 3: resnet34's file with --arch resnet18 loaded its first blocks and ignored 96 tensors, without a word"
    from torchvision import models
    f = tmp_path/'resnet34.pth'; torch.save(models.resnet34().state_dict(), f)
    assert main(['bench', '--data', str(flat), '--arch', 'resnet18', '--weights', str(f), '--epochs', '1',
                 '--out', str(tmp_path/'o')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not weights of resnet18" in err[0] and '--arch resnet34' in err[0], err
    assert not (tmp_path/'o').exists()

def test_a_bad_data_path_or_file_is_one_line_before_any_work(flat, tmp_path, capsys):
    "#39 item 16: a one-class folder, an empty, non-image or cut .png, random bytes, a .zip or a .png as --data"
    one = tmp_path/'one'
    for split in ('train', 'test'): shutil.copytree(flat/split/'0', one/split/'0')
    bad = tmp_path/'bad'; shutil.copytree(flat, bad)
    (bad/'train'/'3'/'empty.png').write_bytes(b''); (bad/'test'/'4'/'text.png').write_text('not an image')
    (tmp_path/'rnd.bin').write_bytes(bytes(range(256)) * 8)
    import zipfile
    with zipfile.ZipFile(tmp_path/'a.zip', 'w') as z: z.write(next((flat/'train'/'0').iterdir()), 'train/0/x.png')
    png = next((flat/'train'/'0').iterdir())
    cut = tmp_path/'cut'; shutil.copytree(flat, cut)  # a whole header, its image data cut: only reading it through tells
    whole = next((cut/'train'/'5').iterdir()).read_bytes(); (cut/'train'/'5'/'cut.png').write_bytes(whole[:-20])
    cases = [([one], 'one class (0); a classifier needs two or more class folders'),
             ([bad, '--size', '8'], 'empty.png: cannot be read as an image'), ([bad], 'empty.png: cannot be read'),
             ([tmp_path/'rnd.bin'], 'neither a folder nor a .tar.gz archive; give a folder'),
             ([tmp_path/'a.zip'], 'unzip it and give its folder'), ([png], 'it is one image'),
             ([cut, '--loader', 'item'], 'cut.png: cannot be read as an image')]
    for (data, *more), msg in cases:
        assert main(['bench', '--data', str(data), *more, '--epochs', '1', '--out', str(tmp_path/'o')]) == 2, data
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], (data, err)
        assert not (tmp_path/'o').exists()

def test_options_that_change_only_the_run_keys_are_one_line(flat, tmp_path, capsys):
    "#39 item 17: --valid-pct with the folder's test/ and --no-pretrained with --weights were ignored but keyed"
    f = tmp_path/'r18.pth'; torch.save(_trained_resnet18().state_dict(), f)
    for more, msg in ((['--valid-pct', '0.3'], '--valid-pct 0.3: --data'),
                      (['--arch', 'resnet18', '--no-pretrained', '--weights', str(f)], '--no-pretrained with --weights')):
        assert main(['bench', '--data', str(flat), *more, '--epochs', '1', '--out', str(tmp_path/'o')]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err
        assert not (tmp_path/'o').exists()

def test_timm_weights_of_another_model_are_refused_before_timm_reads_them(tmp_path):
    "#39 item 3: timm printed 'Unexpected keys' (3,000 characters) and went on with a half-loaded body"
    import timm
    f = tmp_path/'t.pth'; torch.save(timm.create_model('test_resnet').state_dict(), f)
    with pytest.raises(ValueError, match='not weights of timm:resnet18: .* missing'):
        make_learner('timm:resnet18', digits_dls(bs=32), [], weights=f)

def test_a_symlink_loop_in_the_folder_is_one_line_not_a_hang(flat, tmp_path, capsys):
    "#39 item 15: a link back up the tree kept get_image_files walking for minutes, with no output"
    d = tmp_path/'loop'; shutil.copytree(flat, d); (d/'train'/'3'/'again').symlink_to(d/'train')
    assert main(['bench', '--data', str(d), '--epochs', '1', '--out', str(tmp_path/'o')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'again links back to' in err[0] and 'remove that link' in err[0], err
