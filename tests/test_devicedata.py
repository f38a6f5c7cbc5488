"""The device-resident loader (`fastamp.devicedata`) against the per-item path, and with fastai/fastamp machinery."""
import numpy as np, pytest, torch
import torch.nn.functional as F
from fastai.learner import Learner, load_learner
from fastai.metrics import accuracy
from fastai.torch_core import set_seed
from fastai.callback.schedule import fit_one_cycle, lr_find  # noqa: F401 (patches Learner)
from fastai.distributed import DistributedDL
from fastamp.datasets import load_digits, ImageSet
from fastamp.data import imageset_dls, long_tailed
from fastamp.devicedata import device_dls, DeviceDL, DeviceImages
from fastamp.mixup import MidpointMixup, FeatureMixup, ManifoldMixup, InputMixup, SynerMix, SynerMixIntra, Remix
from fastamp.models import small_cnn


@pytest.fixture(scope='module')
def digits(): return load_digits()


def _rows(xb, yb, vocab=None):
    "Each sample as (label or class name, image bytes), to compare epochs up to order"
    x = (xb * 255).round().to(torch.uint8).flatten(1).numpy()
    return sorted((int(y) if vocab is None else str(vocab[y]), r.tobytes()) for y, r in zip(yb.tolist(), x))


def _epoch(dl):
    xs, ys = zip(*list(dl))
    return torch.cat(xs), torch.cat(ys)


def test_same_items_and_labels_per_epoch_as_the_per_item_path(digits):
    "Coarse labels and a long-tailed subset, as `imageset_dls` takes them: the same (image, label) pairs in each epoch"
    coarse = (digits.labels >= 5).astype(np.int64)
    kw = dict(labels=coarse, vocab=['low', 'high'], train_idx=long_tailed(digits, 10), bs=32)
    ref = imageset_dls(digits, **kw)
    dev = device_dls(digits, augment=False, normalize=False, seed=0, **kw)
    # fastai's `Categorize` sorts the per-item path's vocab; the device path keeps the ImageSet's: compare names
    assert dev.c == ref.c == 2 and list(dev.vocab) == ['low', 'high']
    for dl_ref, dl_dev in ((ref.train.new(shuffle=False, drop_last=False), dev.train.new(drop_last=False)),
                           (ref.valid, dev.valid)):
        for _ in range(2):  # two epochs: the shuffled one changes order only
            assert _rows(*_epoch(dl_dev), dev.vocab) == _rows(*_epoch(dl_ref), ref.vocab)
    # the shuffled training epoch visits each item once, and drops only the last partial batch
    x, y = _epoch(dev.train)
    assert len(y) == len(dev.train_ds) // 32 * 32
    assert set(_rows(x, y)) <= set(_rows(*_epoch(dev.train.new(shuffle=False, drop_last=False))))
    # validation: in order, no augmentation, nothing dropped
    xv, yv = _epoch(dev.valid)
    assert yv.tolist() == coarse[digits.valid_idx].tolist()
    assert torch.equal(xv, torch.cat([x for x, _ in ref.valid]))


def test_crops_are_shifts_within_pad_and_flips_of_a_known_image():
    img = np.random.default_rng(1).integers(1, 256, (12, 12, 3), dtype=np.uint8)  # no zeros: the padding shows
    data = ImageSet(np.repeat(img[None], 1000, 0), np.zeros(1000, np.int64), ["a"], np.arange(990, 1000))
    dl = device_dls(data, bs=99, normalize=False, pad=4, seed=0, device='cpu').train
    x, _ = _epoch(dl)
    padded = F.pad(torch.from_numpy(img).permute(2, 0, 1), (4,) * 4)
    wins = {(dy, dx, f): (padded[:, 4+dy:16+dy, 4+dx:16+dx].flip(-1) if f else padded[:, 4+dy:16+dy, 4+dx:16+dx])
            for dy in range(-4, 5) for dx in range(-4, 5) for f in (False, True)}
    got = (x * 255).round().to(torch.uint8)
    found = [next((k for k, w in wins.items() if torch.equal(w, o)), None) for o in got]
    assert None not in found, 'an augmented sample is not a shifted (and possibly flipped) window of the padded image'
    assert {k[:2] for k in found} == {(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)}
    flips = np.mean([k[2] for k in found])
    assert 0.35 < flips < 0.65
    # validation images are untouched
    assert torch.equal((dl.new(augment=False).one_batch()[0] * 255).round().to(torch.uint8)[0], padded[:, 4:16, 4:16])


def test_batches_are_gathered_never_item_by_item(digits, monkeypatch):
    "No Python loop over items: the dataset is never indexed one item at a time, and one gather makes each batch"
    dls = device_dls(digits, size=16, bs=64, seed=0)
    def per_item(self, i): raise AssertionError('a DeviceDL batch indexed its dataset item by item')
    monkeypatch.setattr(DeviceImages, '__getitem__', per_item)
    calls = []
    gather = DeviceDL.gather
    monkeypatch.setattr(DeviceDL, 'gather', lambda self, idx: calls.append(len(idx)) or gather(self, idx))
    n_train, n_valid = len(list(dls.train)), len(list(dls.valid))
    assert calls == [64] * n_train + [64] * (n_valid - 1) + [len(digits.valid_idx) % 64]


def test_a_seeded_epoch_is_reproducible(digits):
    a, b, c = (_epoch(device_dls(digits, size=16, bs=64, seed=s).train) for s in (7, 7, 8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    d1, d2 = (_epoch(device_dls(digits, size=16, bs=64).train) for _ in range(2))
    set_seed(5); e1 = _epoch(device_dls(digits, size=16, bs=64).train)
    set_seed(5); e2 = _epoch(device_dls(digits, size=16, bs=64).train)
    assert torch.equal(e1[0], e2[0]) and not torch.equal(d1[1], d2[1])  # unseeded: fastai's set_seed governs


def _learner(dls, cbs=()):
    set_seed(0)
    return Learner(dls, small_cnn(dls.c), metrics=accuracy, cbs=list(cbs))


@pytest.fixture(scope='module')
def ddls(digits): return device_dls(digits, size=16, bs=64, pad=2, seed=0)


@pytest.mark.parametrize('cb', [MidpointMixup, lambda: MidpointMixup(partner='class_mean'), FeatureMixup, ManifoldMixup,
                                InputMixup, SynerMix, SynerMixIntra, lambda: FeatureMixup(label_rule=Remix())],
                         ids=['midpoint', 'midpoint_class_mean', 'feature', 'manifold', 'input', 'synermix',
                              'synermix_intra', 'remix'])
def test_every_mixing_callback_trains_an_epoch(ddls, cb):
    cb = cb()
    learn = _learner(ddls, [cb])
    learn.fit_one_cycle(1, 1e-2)
    assert len(cb.hist) == len(ddls.train) and np.isfinite(learn.recorder.values[-1]).all()
    assert learn.recorder.values[-1][2] > 0.3  # accuracy well above chance (0.1) after one epoch


def test_get_preds_follow_the_validation_items(digits, ddls):
    learn = _learner(ddls)
    learn.fit(1, 1e-2)
    preds, targs = learn.get_preds()
    assert targs.tolist() == digits.labels[digits.valid_idx].tolist()
    dl = ddls.test_dl(digits.items[digits.valid_idx], bs=1000)  # raw uint8 images, in the validation order
    learn.model.eval()
    with torch.no_grad(): ref = torch.softmax(learn.model(dl.one_batch()[0]), 1)
    torch.testing.assert_close(preds, ref, atol=1e-5, rtol=1e-4)
    # labelled test loaders and fastai's lr_find run too
    assert learn.validate(dl=ddls.test_dl(digits.items[:100], labels=digits.labels[:100]))[0] > 0
    learn.lr_find(num_it=12, show_plot=False)


def test_export_load_learner_predict_round_trip(digits, ddls, tmp_path):
    learn = _learner(ddls)
    learn.fit(1, 1e-2)
    learn.path = tmp_path
    learn.export('dev.pkl')
    assert (tmp_path/'dev.pkl').stat().st_size < 2_000_000  # the exported learner carries no data
    new = load_learner(tmp_path/'dev.pkl', cpu=True)
    assert len(new.dls.train_ds) == 0 and len(learn.dls.train_ds) == len(digits.train_idx)
    for i in digits.valid_idx[:5]:
        img = digits.items[i]  # a raw 8x8 uint8 image: resized and normalised as the training set was
        (lbl, k, p), (lbl2, k2, p2) = learn.predict(img), new.predict(img)
        assert lbl == lbl2 == digits.vocab[int(k)] and int(k) == int(k2)
        torch.testing.assert_close(p, p2)


def test_weighted_sampler_draws_classes_in_proportion(digits):
    lt = long_tailed(digits, 10)
    counts = np.bincount(digits.labels[lt])
    assert counts.max() / counts.min() >= 9
    dls = device_dls(digits, train_idx=lt, sampler='class', bs=32, augment=False, seed=0)
    ys = torch.cat([_epoch(dls.train)[1] for _ in range(20)])
    freq = np.bincount(ys.numpy(), minlength=10) / len(ys)
    np.testing.assert_allclose(freq, 0.1, atol=0.02)
    # explicit per-item weights: class 0 drawn twice as often as each other class, and any weight may be set later
    w = np.where(digits.labels[lt] == 0, 2., 1.) / counts[digits.labels[lt]]
    dls = device_dls(digits, train_idx=lt, sampler=w, bs=32, augment=False, seed=0)
    freq = np.bincount(torch.cat([_epoch(dls.train)[1] for _ in range(20)]).numpy(), minlength=10)
    assert 1.6 < freq[0] / freq[1:].mean() < 2.4
    dls.train.wgts = np.where(digits.labels[lt] == 3, 1., 0.)
    assert set(_epoch(dls.train)[1].tolist()) == {3}
    with pytest.raises(ValueError, match='one weight per item'): device_dls(digits, sampler=np.ones(3))


def test_distributed_dl_splits_batches_by_rank(digits, ddls, monkeypatch):
    "fastai's `DistributedDL` wraps a `DeviceDL` by `get_idxs`/`create_batches`: ranks see disjoint shares of an epoch"
    monkeypatch.setattr(DistributedDL, '_broadcast', lambda self, t, rank: list(t))  # one process: nothing to broadcast
    valid = [DistributedDL(ddls.valid, rank=r, world_size=2) for r in range(2)]
    ys = [_epoch(dl)[1] for dl in valid]
    n = len(digits.valid_idx)
    assert [len(y) for y in ys] == [(n + 1) // 2] * 2
    assert torch.cat(ys).tolist()[:n] == digits.labels[digits.valid_idx].tolist()  # rank 0 then rank 1, in order
    torch.manual_seed(0); xa, ya = _epoch(DistributedDL(ddls.train, rank=0, world_size=2))
    assert xa.shape[1:] == (3, 16, 16) and len(ya) <= len(ddls.train_ds) // 2 + 64
    dls = device_dls(digits, size=16, bs=64, pad=2, seed=0)
    dls.loaders = [DistributedDL(dl, rank=0, world_size=2) for dl in dls.loaders]
    learn = _learner(dls)
    learn.fit(1, 1e-2)  # one rank's training on its half of each epoch
    assert len(learn.recorder.losses) == len(ddls.train) // 2  # half of the epoch's batches on this rank
    assert learn.recorder.values[-1][0] < 2.2  # and it learns (chance: ln 10 = 2.3)
