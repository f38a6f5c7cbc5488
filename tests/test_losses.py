"""Long-tail losses and DRW in fits: each loss with each mixing callback; each exit path leaves the learner clean."""
import math
import pytest, torch, torch.nn.functional as F
from fastai.learner import Learner, load_learner
from fastai.losses import CrossEntropyLossFlat
from fastai.callback.core import Callback, CancelFitException
from fastai.torch_core import set_seed
from fastamp.core import train_class_counts
from fastamp.data import load_digits, long_tailed, imageset_dls
from fastamp.models import small_cnn, NormedLinear
from fastamp.mixup import MidpointMixup, FeatureMixup, InputMixup, Remix, SynerMix, SynerMixIntra
from fastamp.losses import LogitAdjustedLoss, LDAMLoss, DRW, LossSetup, class_balanced_weights
from conftest import hooks_on, fit_quiet, RaiseAt, RaiseInForward

LOSSES = {'ce': CrossEntropyLossFlat, 'la': LogitAdjustedLoss, 'ldam': LDAMLoss}
MIXES = {
    'none': lambda: [],
    'midpoint': lambda: [MidpointMixup()],
    'midpoint_classmean': lambda: [MidpointMixup(partner='class_mean')],
    'feature': lambda: [FeatureMixup()],
    'input_remix': lambda: [InputMixup(label_rule=Remix())],
    'synermix': lambda: [SynerMix()],
}


@pytest.fixture(scope='module')
def lt_dls():
    "Digits 8x8 with imbalance ratio 10: 539 training images, 133 of class 0 down to 13 of class 9"
    d = load_digits()
    return imageset_dls(d, train_idx=long_tailed(d, 10), bs=64, size=8)


def model_for(loss):
    model = small_cnn(10, width=8, head='one')
    if loss == 'ldam': model[1][-1] = NormedLinear(model[1][-1].in_features, 10)
    return model


def make(dls, loss, mix='none', cbs=()):
    set_seed(0)
    return Learner(dls, model_for(loss), loss_func=LOSSES[loss](), cbs=MIXES[mix]() + list(cbs))


def weight_of(lf): return (lf.func if hasattr(lf, 'func') else lf).weight


class WeightSpy(Callback):
    "Record the loss's weight after the mixing callbacks computed their losses, before DRW puts it back"
    order = 20
    def __init__(self): self.seen = []
    def after_loss(self):
        if self.training: self.seen.append(weight_of(self.learn.loss_func))


def assert_clean(learn, lf, n_cbs):
    assert learn.loss_func is lf and lf.reduction == 'mean' and weight_of(lf) is None
    assert len(learn.cbs) == n_cbs and not hooks_on(learn.model)


@pytest.mark.parametrize('drw', [False, True])
@pytest.mark.parametrize('mix', MIXES)
@pytest.mark.parametrize('loss', LOSSES)
def test_one_epoch_trains_and_restores(loss, mix, drw, lt_dls):
    learn = make(lt_dls, loss, mix, [DRW(switch_epoch=0)] if drw else [])
    lf, n_cbs, spy = learn.loss_func, len(learn.cbs), WeightSpy()
    fit_quiet(learn, 1, 1e-2, cbs=spy)
    train_loss, valid_loss = learn.recorder.values[-1][:2]
    assert math.isfinite(train_loss) and math.isfinite(valid_loss)
    assert len(spy.seen) == len(lt_dls.train)
    expected = class_balanced_weights(train_class_counts(lt_dls)) if drw else None
    for w in spy.seen:
        if drw: torch.testing.assert_close(w, expected)
        else: assert w is None
    assert_clean(learn, lf, n_cbs)


@pytest.mark.parametrize('loss', ['la', 'ldam', 'ce'])
def test_lr_find_restores(loss, lt_dls):
    learn = make(lt_dls, loss, 'midpoint', [DRW(switch_pct=0.)])
    lf, n_cbs = learn.loss_func, len(learn.cbs)
    with learn.no_bar(), learn.no_logging(): learn.lr_find(num_it=20, show_plot=False)
    assert_clean(learn, lf, n_cbs)
    fit_quiet(learn, 1, 1e-2)
    assert_clean(learn, lf, n_cbs)


@pytest.mark.parametrize('attach', ['learner', 'fit'])
@pytest.mark.parametrize('exc', [RuntimeError('boom'), KeyboardInterrupt(), CancelFitException()])
@pytest.mark.parametrize('where', ['after_loss', 'forward'])
@pytest.mark.parametrize('loss', ['la', 'ldam'])
def test_interruption_leaves_learner_clean(loss, where, exc, attach, lt_dls):
    drw = DRW(switch_epoch=0)
    learn = make(lt_dls, loss, 'midpoint', [drw] if attach == 'learner' else [])
    lf, n_cbs = learn.loss_func, len(learn.cbs)
    # `after_loss` at order 5 raises while DRW's weights are on the loss (it puts them back at order 50)
    if where == 'forward': learn.model.insert(1, RaiseInForward(exc))
    else: learn.add_cb(RaiseAt(exc, event='after_loss'))
    try: fit_quiet(learn, 1, 1e-2, cbs=[drw] if attach == 'fit' else None)
    except (RuntimeError, KeyboardInterrupt): pass
    if where == 'forward': learn.model[1].n = -1
    else: learn.remove_cb(RaiseAt)
    live = hooks_on(learn.model)
    # a forward interrupted by an Exception leaves at most the inert model pre-hook; PyTorch skips `always_call` hooks on
    # KeyboardInterrupt, which may leave the batch's three inert hooks: the next model call or fit removes them
    assert len(live) <= (0 if where != 'forward' else 3 if isinstance(exc, KeyboardInterrupt) else 1)
    if attach == 'fit' or isinstance(exc, CancelFitException) or where == 'forward': assert weight_of(lf) is None
    # what an escaped exception may leave, the next validate / get_preds / fit clears before computing any loss
    logits, targs = learn.get_preds(act=lambda o: o)
    with learn.no_bar(), learn.no_logging(): valid_loss = learn.validate()[0]
    assert valid_loss == pytest.approx(float(lf(logits, targs)), rel=1e-4)
    assert_clean(learn, lf, n_cbs)
    fit_quiet(learn, 1, 1e-2, cbs=[drw] if attach == 'fit' else None)
    assert_clean(learn, lf, n_cbs)


def test_restore_after_escaped_exception(lt_dls):
    "An exception that skips fastai's after_* events still gives the loss its weight back (the fit's `release`)"
    learn = make(lt_dls, 'la', 'midpoint', [DRW(switch_epoch=0), RaiseAt(RuntimeError('boom'), event='after_loss')])
    with pytest.raises(RuntimeError): fit_quiet(learn, 1, 1e-2)
    assert weight_of(learn.loss_func) is None
    learn.drw.restore(); learn.remove_cb(DRW)   # still harmless
    assert weight_of(learn.loss_func) is None


def test_drw_weighs_a_callbacks_own_loss(lt_dls):
    counts = train_class_counts(lt_dls)
    own = LogitAdjustedLoss(counts=counts)
    class OwnSpy(Callback):
        order, seen = 20, []
        def after_loss(self):
            if self.training: self.seen.append(own.weight)
    learn = make(lt_dls, 'ce', cbs=[MidpointMixup(loss_func=own), DRW(switch_epoch=0), OwnSpy()])
    fit_quiet(learn, 1, 1e-2)
    assert len(OwnSpy.seen) == len(lt_dls.train)
    for w in OwnSpy.seen: torch.testing.assert_close(w, class_balanced_weights(counts))
    assert own.weight is None and weight_of(learn.loss_func) is None


def test_drw_needs_a_weighted_loss(lt_dls):
    set_seed(0)
    learn = Learner(lt_dls, model_for('la'), loss_func=F.cross_entropy, cbs=DRW())
    with pytest.raises(TypeError, match='per-class `weight`'): fit_quiet(learn, 1, 1e-2)


def test_drw_resumed_fit_switches_at_the_right_epoch(lt_dls):
    spy = WeightSpy()
    learn = make(lt_dls, 'la', cbs=[DRW(), spy])  # 3 epochs: switch at round(0.8 * 3) = 2
    fit_quiet(learn, 3, 1e-2, method='fit', start_epoch=2)
    assert len(spy.seen) == len(lt_dls.train) and all(w is not None for w in spy.seen)


def test_counts_without_default_callbacks(lt_dls):
    "fastamp's losses are set up on every learner (fastai's `defaults.callbacks` untouched), `LossSetup` or not"
    for cbs in ([], [LossSetup()]):
        set_seed(0)
        learn = Learner(lt_dls, model_for('la'), loss_func=LogitAdjustedLoss(), default_cbs=False, cbs=cbs)
        learn.fit(1, 1e-2)
        torch.testing.assert_close(learn.loss_func.class_counts, train_class_counts(lt_dls).float())
    with pytest.raises(RuntimeError, match='pass `counts=`'): LogitAdjustedLoss()(torch.randn(2, 10), torch.arange(2))


def test_counts_follow_the_training_set(lt_dls):
    learn = make(lt_dls, 'la')
    fit_quiet(learn, 1, 1e-2)
    d = load_digits()
    learn.dls = imageset_dls(d, train_idx=long_tailed(d, 2), bs=64, size=8)
    fit_quiet(learn, 1, 1e-2)
    torch.testing.assert_close(learn.loss_func.class_counts, train_class_counts(learn.dls).float())


def test_export_keeps_counts(lt_dls, tmp_path):
    learn = make(lt_dls, 'la', 'midpoint', [DRW()])
    learn.loss_func.posterior = 'train'
    fit_quiet(learn, 1, 1e-2)
    probs, _ = learn.get_preds()
    learn.export(tmp_path / 'la.pkl')
    loaded = load_learner(tmp_path / 'la.pkl')
    probs2, _ = loaded.get_preds(dl=lt_dls.valid)  # its own dls are empty: the exported counts are kept
    torch.testing.assert_close(probs2, probs)
    torch.testing.assert_close(loaded.loss_func.class_counts, train_class_counts(lt_dls).float())
    assert not hooks_on(loaded.model) and weight_of(loaded.loss_func) is None


@pytest.mark.parametrize('loss', ['la', 'ldam'])
def test_interpretation_and_per_item_losses(loss, lt_dls):
    from fastai.interpret import ClassificationInterpretation
    learn = make(lt_dls, loss, cbs=[DRW(switch_epoch=0)])
    fit_quiet(learn, 1, 1e-2)
    logits, targs = learn.get_preds(act=lambda o: o)
    _, _, losses = learn.get_preds(with_loss=True)
    torch.testing.assert_close(losses, LOSSES[loss](counts=train_class_counts(lt_dls), reduction='none')(logits, targs))
    interp = ClassificationInterpretation.from_learner(learn)
    assert interp.confusion_matrix().sum() == len(lt_dls.valid_ds)
    assert weight_of(learn.loss_func) is None and learn.loss_func.reduction == 'mean'


def test_drw_midpoint_at_lam_one_scores_augmented_rows_like_clean_ones(lt_dls):
    "lam = 1: the augmented features are the clean ones, so under DRW the augmented loss is the clean weighted mean"
    learn = make(lt_dls, 'la', cbs=[DRW(switch_epoch=0)])
    mix = MidpointMixup(schedule=1., symmetric=False)   # one-way partners: every sample of a mixed batch has one
    learn.add_cb(mix)
    fit_quiet(learn, 1, 1e-2, method='fit')
    h = mix.history
    assert len(h) == len(lt_dls.train) and (h.n_aug == lt_dls.train.bs).sum() >= len(h) - 1
    full = h[h.n_aug == lt_dls.train.bs]
    torch.testing.assert_close(torch.tensor(full.loss_aug.values), torch.tensor(full.loss_clean.values),
                               rtol=1e-4, atol=1e-5)


class MixFormula(Callback):
    "After an in-place mixer's `after_loss`, before DRW restores the weights: (expected, actual) batch losses"
    order = 5
    def __init__(self, mix): self.mix, self.pairs = mix, []
    def after_loss(self):
        if not self.training: return
        y, lf, mix = self.yb[0], self.learn.loss_func, self.mix
        w, p, lam = lf.weight, mix.batch_state.partner, mix.batch_state.lam
        a = mix.label_rule(lam, y, y[p]) if mix.label_rule is not None else lam
        z = lf.adjusted(self.learn.pred.detach())
        ce = lambda t: w[t] * F.cross_entropy(z, t, reduction='none')
        expected = (a * ce(y) + (1 - a) * ce(y[p])).sum() / (a * w[y] + (1 - a) * w[y[p]]).sum()
        self.pairs.append((expected, self.learn.loss.clone()))


@pytest.mark.parametrize('rule', ['lam', 'remix', 'own_label'])
def test_drw_two_label_mixup_is_the_weighted_mean(rule, lt_dls):
    "FeatureMixup under DRW: sum of per-sample values over the sum of the label weights (PyTorch's weighted mean)"
    label_rule = {'lam': None, 'remix': Remix(), 'own_label': lambda lam, y, y_j: torch.ones_like(lam)}[rule]
    mix = FeatureMixup(label_rule=label_rule)
    check = MixFormula(mix)
    learn = make(lt_dls, 'la', cbs=[mix, DRW(switch_epoch=0), check])
    fit_quiet(learn, 1, 1e-2, method='fit')
    assert len(check.pairs) == len(lt_dls.train)
    for exp, act in check.pairs: torch.testing.assert_close(act, exp, rtol=1e-4, atol=1e-6)


class CleanLoss(Callback):
    "The learner's own loss of the (mixed) predictions, before the in-place mixer replaces it"
    order = -1
    def __init__(self): self.seen = []
    def after_loss(self):
        if self.training: self.seen.append(self.learn.loss_grad.detach().clone())


def test_drw_one_label_mixup_equals_the_learners_loss(lt_dls):
    "A label rule giving all weight to `y`: the mixing loss is exactly the learner's weighted loss of the same logits"
    mix, clean = FeatureMixup(label_rule=lambda lam, y, y_j: torch.ones_like(lam)), CleanLoss()
    learn = make(lt_dls, 'la', cbs=[mix, DRW(switch_epoch=0), clean])
    fit_quiet(learn, 1, 1e-2, method='fit')
    torch.testing.assert_close(torch.tensor(mix.history.loss_mix.values, dtype=torch.float32),
                               torch.stack(clean.seen).cpu(), rtol=1e-5, atol=1e-6)


def test_synermix_intra_under_drw_is_the_weighted_mean(lt_dls):
    "SynerMixIntra under DRW: the intra loss is the weighted mean over the classes present"
    mix = SynerMixIntra()
    class Check(Callback):
        order, seen = 5, []
        def after_loss(self):
            if not self.training: return
            lf = self.learn.loss_func
            st = mix.batch_state
            n = len(st.present)
            t = torch.arange(n)
            z = lf.adjusted(mix.appended_preds(st.rows).detach())
            per = lf.weight[t] * F.cross_entropy(z, t, reduction='none')
            pr = st.present.float()
            self.seen.append(((per * pr).sum() / (lf.weight * pr).sum(), mix.hist[-1]['loss_intra']))
    learn = make(lt_dls, 'la', cbs=[mix, DRW(switch_epoch=0), Check()])
    fit_quiet(learn, 1, 1e-2, method='fit')
    assert len(Check.seen) == len(lt_dls.train)
    for exp, act in Check.seen: torch.testing.assert_close(act, exp, rtol=1e-4, atol=1e-6)


def test_train_class_counts_of_the_device_resident_loader():
    "One `bincount` of the labels' tensor, equal to the count item by item"
    from fastamp.devicedata import device_dls
    dls = device_dls(load_digits(), size=16, bs=64)
    ds = dls.train_ds
    per_item = torch.bincount(torch.tensor([int(ds[k][-1]) for k in range(len(ds))]), minlength=10)
    assert torch.equal(train_class_counts(dls), per_item) and int(per_item.sum()) == len(ds)
