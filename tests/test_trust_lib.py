"""Issue 22, the library side: inputs checked against the data before work starts (3), nothing untrained (2), the
classifier is the layer that produces the output (5), no state outlives its use on any exit path (6), the package's
own message first (7). Each test names what a user relies on; all run on the CPU in seconds."""
import contextlib, math, re, subprocess, sys, warnings
import pytest, torch, torch.nn as nn
from fastai.vision.all import Learner, Callback, CancelBatchException, set_seed, load_learner
from fastai.data.core import DataLoaders
from fastamp.core import find_classifier
from fastamp.models import small_cnn, NormedLinear
from fastamp.mixup import MidpointMixup, InputMixup, Remix
from fastamp.losses import LogitAdjustedLoss, BalancedSoftmaxLoss, LDAMLoss, DRW, posthoc_adjust, log_prior
from fastamp.metrics import DegenerateWarning, nc1, uniformity
from fastamp.accuracies import group_accuracies, knn_accuracy
from fastamp.evaluate import CollapseRecorder, FineProbeRecorder, ShotAccuracy
from fastamp.transfer import fine_learner
from conftest import CALLBACKS, hooks_on, fit_quiet

N_CLASSES = 10
MIXERS = {k: v for k, v in CALLBACKS.items() if k != 'erm'}


class Batches(Callback):
    "Count the training batches that reached the model"
    order = -20
    def __init__(self): self.n = 0
    def before_batch(self):
        if self.training: self.n += 1


def normed(model):
    model[1][-1] = NormedLinear(model[1][-1].in_features, N_CLASSES)
    return model


# ---- 3. counts of the wrong length: an error at `before_fit`, naming the argument and both lengths ----------------
COUNT_TAKERS = {  # name -> (learner kwargs for counts `c`, the argument named in the message)
    'LogitAdjustedLoss': (lambda c: dict(loss_func=LogitAdjustedLoss(counts=c)), 'LogitAdjustedLoss(counts=...)'),
    'BalancedSoftmaxLoss': (lambda c: dict(loss_func=BalancedSoftmaxLoss(counts=c)), 'BalancedSoftmaxLoss(counts=...)'),
    'LDAMLoss': (lambda c: dict(loss_func=LDAMLoss(counts=c)), 'LDAMLoss(counts=...)'),
    'DRW': (lambda c: dict(loss_func=LogitAdjustedLoss(), cbs=[DRW(counts=c)]), 'DRW(counts=...)'),
    'ShotAccuracy': (lambda c: dict(metrics=[ShotAccuracy('few', counts=c)]), 'ShotAccuracy(counts=...)'),
    'Remix': (lambda c: dict(cbs=[InputMixup(label_rule=Remix(counts=c))]), 'Remix(counts=...)'),
}


@pytest.mark.parametrize('length', [1, N_CLASSES - 1, N_CLASSES + 1, 2 * N_CLASSES])
@pytest.mark.parametrize('taker', COUNT_TAKERS)
def test_every_count_taker_refuses_every_wrong_length_before_training(taker, length, dls):
    make, name = COUNT_TAKERS[taker]
    kw = make([100 - 5 * k for k in range(length)])
    spy = Batches()
    set_seed(0)
    learn = Learner(dls, normed(small_cnn(N_CLASSES, head='one')), **{**kw, 'cbs': kw.get('cbs', []) + [spy]})
    msg = rf'{re.escape(name)} has {length} entries but the data has {N_CLASSES} classes'
    with pytest.raises(ValueError, match=msg):
        fit_quiet(learn, 1)
    assert spy.n == 0 and not hooks_on(learn.model)


def test_a_loss_called_on_logits_of_another_width_says_so():
    "Outside a learner too: one count on 10 classes is no longer a silent broadcast (no adjustment at all)"
    with pytest.raises(ValueError, match='has 1 entries but the logits have 10 classes'):
        LogitAdjustedLoss(counts=[100])(torch.randn(4, 10), torch.arange(4))
    with pytest.raises(ValueError, match='has 11 entries but the logits have 10 classes'):
        LDAMLoss(counts=list(range(1, 12)))(torch.randn(4, 10).tanh(), torch.arange(4))
    with pytest.raises(ValueError, match='counts has 3 entries but the logits have 10 classes'):
        posthoc_adjust(torch.randn(4, 10), [5, 4, 3])


def test_functions_check_counts_at_call_time(cnn_learner):
    learn = cnn_learner()
    with pytest.raises(ValueError, match=r'collapse_report\(counts=...\) has 3 entries but the data has 10'):
        learn.collapse_report(counts=[10, 5, 1])
    with pytest.raises(ValueError, match=r'get_adjusted_preds\(counts=...\) has 11 entries but the data has 10'):
        learn.get_adjusted_preds(counts=[10] * 11)
    with pytest.raises(ValueError, match='counts has 5 entries but the predictions or labels hold class 9'):
        group_accuracies(torch.arange(10), torch.arange(10), [100] * 5)


@pytest.mark.parametrize('make, match', [
    (lambda: LogitAdjustedLoss(tau=math.nan), 'tau=nan'),
    (lambda: LogitAdjustedLoss(counts=[10., math.inf]), 'finite'),
    (lambda: log_prior([1, 2], tau=math.inf), 'tau=inf'),
    (lambda: LDAMLoss(s=math.inf), 's=inf'),
    (lambda: LDAMLoss(max_m=math.inf), 'max_m=inf'),
    (lambda: DRW(counts=[1, math.inf]), 'finite'),
    (lambda: ShotAccuracy(counts=[1, math.inf]), 'finite'),
    (lambda: CollapseRecorder(n=-60), 'n=-60'),
    (lambda: FineProbeRecorder([0], [0], n_train=-10), 'n_train=-10'),
    (lambda: FineProbeRecorder([0], [0], k=0), 'k=0'),
    (lambda: knn_accuracy(torch.randn(6, 2), torch.arange(6) % 2, torch.randn(3, 2), torch.arange(3) % 2, k=0), 'k=0'),
    (lambda: DRW(switch_epoch=-1), 'switch_epoch=-1'),
    (lambda: DRW(switch_epoch=1.5), 'switch_epoch=1.5'),
])
def test_non_finite_parameters_and_negative_sizes_are_errors(make, match):
    with pytest.raises(ValueError, match=match): make()


def test_fine_probe_refuses_negative_sizes(cnn_learner):
    learn, fine = cnn_learner(), list(range(10))
    with pytest.raises(ValueError, match='n_train=-10'): learn.fine_probe(fine, fine, n_train=-10)
    with pytest.raises(ValueError, match='k=0'): learn.fine_probe(fine, fine, k=0)


def test_recorder_labels_checked_before_training(cnn_learner, dls):
    spy = Batches()
    learn = cnn_learner([FineProbeRecorder([0] * 5, [0] * len(dls.valid_ds)), spy])
    with pytest.raises(ValueError, match='train_fine has 5 labels'): fit_quiet(learn, 1)
    assert spy.n == 0


# ---- 2. nothing untrained: an empty training loader, a switch epoch beyond the fit -----------------------------
@pytest.mark.parametrize('name', MIXERS)
def test_mixing_callback_on_an_empty_training_loader_says_so(name, dls):
    empty = DataLoaders(dls.train.new(bs=len(dls.train_ds) + 1), dls.valid)   # drop_last: no batch
    set_seed(0)
    learn = Learner(empty, small_cnn(N_CLASSES, head='one'), cbs=MIXERS[name]())
    with pytest.raises(ValueError, match=rf'no batch \({len(dls.train_ds)} training items, bs={len(dls.train_ds) + 1}'):
        fit_quiet(learn, 1)
    assert not hooks_on(learn.model)


def test_drw_switch_epoch_beyond_the_fit_is_refused_before_training(cnn_learner):
    spy = Batches()
    learn = cnn_learner([DRW(switch_epoch=5), spy], loss_func=LogitAdjustedLoss())
    with pytest.raises(ValueError, match=r'DRW\(switch_epoch=5\) but the fit has 2 epochs'): fit_quiet(learn, 2)
    assert spy.n == 0


# ---- 5. the classifier is the layer that produces the output ----------------------------------------------------
class FcFirst(nn.Module):
    "A model that registers its classifier `fc` before the `embed` layer that feeds it"
    def __init__(self, normed=False):
        super().__init__()
        self.fc = (NormedLinear if normed else nn.Linear)(16, N_CLASSES)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.embed = nn.Linear(32, 16)
    def forward(self, x): return self.fc(self.embed(self.body(x)).relu())


def test_mixing_margins_and_transfer_use_the_layer_that_produces_the_output(dls):
    set_seed(0)
    model, cb = FcFirst(), MidpointMixup()
    learn = Learner(dls, model, cbs=cb)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')   # `embed` is registered after `fc`: the layers-after warning
        fit_quiet(learn, 1)
    assert cb._places[0][0] is model.fc                       # mixed at the classifier's input, not `embed`'s
    assert learn.get_features(n=8)[0].shape[1] == 16 and 'geometric_margin' in learn.collapse_report().index
    fl = fine_learner(learn, dls)
    assert fl.model.fc is not model.fc and fl.model.embed.out_features == 16


def test_ldam_checks_the_classifier_not_the_last_registered_linear(dls):
    set_seed(0)
    learn = Learner(dls, FcFirst(normed=True), loss_func=LDAMLoss())
    fit_quiet(learn, 1)   # before: "the model's last Linear is Linear", refused


def test_no_linear_with_one_output_per_class_names_every_linear():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Linear(8, 4))
    with pytest.raises(ValueError, match=r'no nn.Linear with 10 outputs .*`1` \(Linear 12->8\), `2` \(Linear 8->4\)'):
        find_classifier(model, 10)


# ---- 6. no state outlives its use, on any exit path --------------------------------------------------------------
EVENTS = ['before_batch', 'after_pred', 'after_loss', 'before_backward', 'after_backward', 'before_step',
          'after_step', 'after_batch']


class Raise(Callback):
    "Raise `exc` at the second training batch, from `event`, after every fastamp callback (DRW included)"
    order = 55
    def __init__(self, event, exc): self.event, self.exc = event, exc
    def __getattr__(self, k):
        if k == self.__dict__.get('event'): return self._raise
        return super().__getattr__(k)
    def _raise(self):
        if self.training and self.train_iter == 1: raise self.exc


def _assert_clean(learn, dls):
    assert not hooks_on(learn.model)
    lf = learn.loss_func
    assert getattr(lf, 'weight', None) is None and getattr(getattr(lf, 'func', None), 'weight', None) is None
    xb = dls.one_batch()[0]
    learn.model.train()
    assert learn.model(xb).shape[0] == len(xb)                 # the next train-mode call: B rows, not 2B


@pytest.mark.parametrize('exc', [KeyboardInterrupt(),   # any exception but fastai's `Cancel*`: no after_* event
                                 pytest.param(RuntimeError('boom'), marks=pytest.mark.slow),
                                 pytest.param(CancelBatchException(), marks=pytest.mark.slow)],
                         ids=['interrupt', 'error', 'cancel'])
@pytest.mark.parametrize('event', EVENTS)
@pytest.mark.parametrize('name', list(MIXERS) + ['drw'])
def test_every_exit_event_leaves_no_hook_and_no_weight(name, event, exc, small_dls):
    cbs = [DRW(switch_epoch=0)] if name == 'drw' else MIXERS[name]() + [DRW(switch_epoch=0)]
    set_seed(0)
    learn = Learner(small_dls, small_cnn(N_CLASSES, head='one'), loss_func=LogitAdjustedLoss(),
                    cbs=cbs + [Raise(event, exc)])
    with contextlib.suppress(type(exc)): fit_quiet(learn, 1, method='fit')
    _assert_clean(learn, small_dls)


def test_an_interrupted_drw_step_is_not_exported(cnn_learner, dls, tmp_path):
    learn = cnn_learner([DRW(switch_epoch=0), Raise('after_pred', KeyboardInterrupt())],
                        loss_func=LogitAdjustedLoss(), path=tmp_path)
    with pytest.raises(KeyboardInterrupt): fit_quiet(learn, 1, method='fit')
    learn.remove_cbs(learn.cbs.filter(lambda c: isinstance(c, Raise)))
    learn.export('drw.pkl')
    assert load_learner(tmp_path / 'drw.pkl').loss_func.weight is None


def _modes(model): return [m.training for m in model.modules()]


def test_features_and_report_give_each_module_its_own_mode_back(cnn_learner):
    learn = cnn_learner()
    learn.model.train()
    for m in learn.model.modules():
        if isinstance(m, nn.BatchNorm2d): m.eval()          # frozen BatchNorms, as `BnFreeze` leaves them
    before = _modes(learn.model)
    assert not all(before)
    learn.get_features(n=64)
    assert _modes(learn.model) == before
    learn.collapse_report()
    assert _modes(learn.model) == before


def test_estimated_uniformity_leaves_torch_global_random_numbers_alone():
    z = torch.randn(300, 8)
    state = torch.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        u1, u2 = uniformity(z, exact_max=100), uniformity(z, exact_max=100)
    assert torch.equal(torch.get_rng_state(), state) and u1 == u2


def test_importing_fastamp_leaves_fastai_defaults_alone():
    code = ("import fastamp.all; from fastcore.basics import defaults; "
            "print([c.__name__ for c in defaults.callbacks])")
    out = subprocess.run([sys.executable, '-W', 'ignore', '-c', code], capture_output=True, text=True, check=True)
    assert 'LossSetup' not in out.stdout


class SetupLoss(nn.Module):
    "A loss of another package, with a `setup(self)` method of its own"
    def setup(self): self.ready = True
    def forward(self, x, y): return nn.functional.cross_entropy(x, y)


def test_other_losses_with_setup_and_learners_without_default_callbacks(cnn_learner, dls):
    fit_quiet(cnn_learner(loss_func=SetupLoss()), 1)           # before: LossSetup called `setup(learn)`: TypeError
    set_seed(0)
    lf = LogitAdjustedLoss()
    learn = Learner(dls, small_cnn(N_CLASSES, head='one'), loss_func=lf, default_cbs=False)
    learn.fit(1)                                                # fastamp's losses are still set up
    assert lf.class_counts is not None and len(lf.class_counts) == N_CLASSES


# ---- 7. the package's own message first ---------------------------------------------------------------------------
def test_a_fastamp_callback_given_twice_is_an_error_before_fastai_adds_it(dls):
    "fastamp's own callbacks refuse a second listing; a fastai callback given twice is left to fastai, as without us"
    for cb in (MidpointMixup(), DRW(switch_epoch=0)):
        learn = Learner(dls, small_cnn(N_CLASSES, head='one'), cbs=cb)
        with pytest.raises(ValueError, match='added twice'): fit_quiet(learn, 1, cbs=cb)
        assert not hooks_on(learn.model) and sum(c is cb for c in learn.cbs) == 1 and cb.learn is learn
    m = MidpointMixup()
    with pytest.raises(ValueError, match='added twice'): Learner(dls, small_cnn(N_CLASSES), cbs=[m, m])
    b = Batches()
    learn = Learner(dls, small_cnn(N_CLASSES, head='one'), cbs=b)
    learn.add_cb(b)
    assert sum(c is b for c in learn.cbs) == 2


def test_importing_fastamp_leaves_fastai_as_it_was_found():
    "`Learner.fit` and `Learner.fine_tune` are fastai's own functions in a process that imported all of fastamp"
    out = subprocess.run([sys.executable, '-c', 'import fastai.learner as fl, fastai.callback.schedule as fs; '
                          'fit, ft = fl.Learner.fit, fl.Learner.fine_tune; import fastamp.all; '
                          'print(fl.Learner.fit is fit, fl.Learner.fine_tune is ft, fit.__module__, ft.__module__)'],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ['True', 'True', 'fastai.learner', 'fastai.callback.schedule'], out


class Pair(nn.Module):
    def __init__(self): super().__init__(); self.m = small_cnn(N_CLASSES, head='one')
    def forward(self, x): return self.m(x), x


def test_a_model_returning_a_tuple_gets_the_package_message(dls):
    learn = Learner(dls, Pair(), loss_func=lambda out, y: nn.functional.cross_entropy(out[0], y), cbs=MidpointMixup())
    learn.loss_func.y_int = True
    with pytest.raises(TypeError, match='returned tuple, not one tensor of logits'): fit_quiet(learn, 1)
    with pytest.raises(TypeError, match='returned tuple, not one tensor of logits'): learn.get_features(n=8)


class ResidualTwice(nn.Module):
    "Calls `fc` twice, with a residual that fails on any extra row: a shape error would come first"
    def __init__(self): super().__init__(); self.fc, self.out = nn.Linear(64, 64), nn.Linear(64, N_CLASSES)
    def forward(self, x): h = self.fc(x); return self.out(self.fc(h) + x)


def test_a_module_called_twice_is_named_before_a_shape_error(cnn_learner):
    learn = cnn_learner([MidpointMixup(module=lambda m: m[1][2].fc)])
    learn.model[1][2] = ResidualTwice()
    with pytest.raises(RuntimeError, match='MidpointMixup: Linear ran 2 times'): fit_quiet(learn, 1)
    assert not hooks_on(learn.model)


def test_nc1_of_non_finite_features_is_nan_with_a_warning():
    h, y = torch.randn(40, 4), torch.arange(40) % 4
    h[3, 1] = math.inf
    with pytest.warns(DegenerateWarning, match='NaN or inf'): assert math.isnan(nc1(h, y))
