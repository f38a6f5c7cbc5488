"""Public-use behaviour shared by every fastamp mixing callback: training, restore paths, export, composition."""
import warnings
import pytest, torch, torch.nn as nn
from fastai.vision.all import (vision_learner, resnet18, accuracy, MixUp, CutMix, GradientAccumulation,
                               CancelFitException, Callback, load_learner, ClassificationInterpretation, set_seed)
from fastamp.mixup import MidpointMixup, FeatureMixup, ManifoldMixup, InputMixup, Remix, SynerMix, SynerMixIntra, INPUT
from conftest import hooks_on

CALLBACKS = {
    'midpoint': lambda: MidpointMixup(),
    'midpoint_variant': lambda: MidpointMixup(symmetric=False, partner='class', per_pair=True, module='pooled'),
    'feature': lambda: FeatureMixup(),
    'manifold': lambda: ManifoldMixup(),
    'input_remix': lambda: InputMixup(label_rule=Remix()),
    'synermix_intra': lambda: SynerMixIntra(),
    'synermix': lambda: SynerMix(),
}


def fit_quiet(learn, *args, method='fit_one_cycle', **kw):
    with learn.no_bar(), learn.no_logging(): getattr(learn, method)(*args, **kw)


@pytest.mark.parametrize('name', CALLBACKS)
def test_learns_and_restores(name, cnn_learner):
    cb = CALLBACKS[name]()
    learn = cnn_learner([cb])
    lf = learn.loss_func
    fit_quiet(learn, 4, 1e-2)
    acc = learn.validate()[1]
    assert acc > 0.8, f'{name} reached only {acc:.3f} on digits'
    assert learn.loss_func is lf and not hooks_on(learn.model)
    assert len(cb.history) == 4 * len(learn.dls.train)


def test_erm_and_midpoint_both_learn(cnn_learner):
    accs = {}
    for cbs in ([], [MidpointMixup()]):
        learn = cnn_learner(cbs)
        fit_quiet(learn, 4, 1e-2)
        accs[len(cbs)] = learn.validate()[1]
    assert min(accs.values()) > 0.8, accs


def test_schedule_reaches_its_end(cnn_learner):
    cb = MidpointMixup()  # lam(p) = 0.5 + 0.5 * 0.01**p
    learn = cnn_learner([cb])
    fit_quiet(learn, 3, 1e-2)
    lam = cb.history['lam']
    assert lam.iloc[0] == pytest.approx(1.0, abs=1e-6)
    assert lam.iloc[-1] == pytest.approx(0.5 + 0.5 * 0.01 ** cb.history['pct_train'].iloc[-1], rel=1e-6)
    assert lam.iloc[-1] < 0.51 and lam.is_monotonic_decreasing
    assert (cb.history['n_aug'] > 0).all()


@pytest.mark.parametrize('name', CALLBACKS)
def test_lr_find_restores(name, cnn_learner):
    learn = cnn_learner([CALLBACKS[name]()])
    lf = learn.loss_func
    with learn.no_bar(), learn.no_logging(): learn.lr_find(num_it=20, show_plot=False)
    assert learn.loss_func is lf and not hooks_on(learn.model)
    fit_quiet(learn, 1, 1e-2)


class RaiseAt(Callback):
    "Raise `exc` at training iteration `n`, from event `event`"
    order = 5
    def __init__(self, exc, n=3, event='after_batch'): self.exc, self.n, self.event = exc, n, event
    def __getattr__(self, k):
        if k == self.__dict__.get('event'): return self._maybe_raise
        return super().__getattr__(k)
    def _maybe_raise(self):
        if self.training and self.train_iter == self.n: raise self.exc


class RaiseInForward(nn.Module):
    "A body layer that raises at its `n`-th training call"
    def __init__(self, exc, n=3): super().__init__(); self.exc, self.n, self.calls = exc, n, 0
    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.n: raise self.exc
        return x


@pytest.mark.parametrize('name', ['midpoint', 'feature', 'manifold', 'synermix'])
@pytest.mark.parametrize('exc', [RuntimeError('boom'), KeyboardInterrupt(), CancelFitException()])
@pytest.mark.parametrize('where', ['callback', 'forward'])
def test_interruption_leaves_learner_clean(name, exc, where, cnn_learner):
    cb = CALLBACKS[name]()
    learn = cnn_learner([cb])
    if where == 'forward': learn.model.insert(1, RaiseInForward(exc))
    else: learn.add_cb(RaiseAt(exc, event='after_pred'))
    lf, dl_tfms = learn.loss_func, learn.dls.train.after_batch.fs
    try: fit_quiet(learn, 1, 1e-2)
    except (RuntimeError, KeyboardInterrupt): pass
    live = [h for _, h in hooks_on(learn.model)]
    assert learn.loss_func is lf and learn.dls.train.after_batch.fs == dl_tfms
    # a hook can survive only when the forward pass itself was interrupted, and it must be inert
    assert len(live) <= (1 if where == 'forward' else 0)
    learn.model.eval()
    with torch.no_grad(): learn.model(learn.dls.one_batch()[0][:4])
    assert not hooks_on(learn.model)
    if where == 'forward': learn.model[1].n = -1
    else: learn.remove_cb(RaiseAt)
    fit_quiet(learn, 1, 1e-2)  # fit works again
    assert not hooks_on(learn.model) and learn.loss_func is lf


@pytest.mark.parametrize('name', ['midpoint', 'manifold'])
def test_eval_paths_ignore_callback(name, dls, tmp_path):
    set_seed(1)
    learn = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy, cbs=CALLBACKS[name](), path=tmp_path)
    fit_quiet(learn, 1, 1e-3, method='fine_tune')
    preds, targs, losses = learn.get_preds(with_loss=True)
    with learn.removed_cbs(learn.cbs.filter(lambda c: isinstance(c, (MidpointMixup, ManifoldMixup)))):
        preds2, _, losses2 = learn.get_preds(with_loss=True)
    assert torch.allclose(preds, preds2) and torch.allclose(losses, losses2)
    interp = ClassificationInterpretation.from_learner(learn)
    assert interp.confusion_matrix().sum() == len(dls.valid_ds)
    learn.export('model.pkl')
    loaded = load_learner(tmp_path / 'model.pkl')
    assert not hooks_on(loaded.model)
    x = dls.valid_ds[0][0]  # a TensorImage: what `predict` takes for in-memory datasets
    p_loaded = loaded.predict(x)[2]
    p = learn.predict(x)[2]
    assert torch.allclose(p, p_loaded, atol=1e-5)


def test_timm_arch_and_bn_final_warning(dls):
    learn = vision_learner(dls, 'resnet18', pretrained=False, cbs=MidpointMixup())
    fit_quiet(learn, 1, 1e-3)
    assert not hooks_on(learn.model)
    with pytest.warns(UserWarning, match='layers follow'):
        learn = vision_learner(dls, resnet18, pretrained=False, bn_final=True, cbs=MidpointMixup())
        fit_quiet(learn, 1, 1e-3)


@pytest.mark.parametrize('other', [lambda: MixUp(), lambda: CutMix(), lambda: GradientAccumulation(128)])
def test_composes_with_fastai_callbacks(other, cnn_learner):
    cb = MidpointMixup()
    learn = cnn_learner([cb, other()])
    lf = learn.loss_func
    fit_quiet(learn, 3, 1e-2)
    assert learn.validate()[1] > 0.6
    assert learn.loss_func is lf and not hooks_on(learn.model)
    assert (cb.history['n_aug'] > 0).all()


class WithUnused(nn.Module):
    "A model holding a layer that its forward never calls"
    def __init__(self, body): super().__init__(); self.body, self.unused = body, nn.Linear(64, 64)
    def forward(self, x): return self.body(x)


def test_module_errors(cnn_learner):
    learn = cnn_learner([MidpointMixup(module=nn.Linear(3, 3))])
    with pytest.raises(ValueError, match='not part of'): fit_quiet(learn, 1)
    learn = cnn_learner()
    learn.model = WithUnused(learn.model)
    learn.add_cb(MidpointMixup(module=learn.model.unused))
    with pytest.raises(RuntimeError, match='never called'): fit_quiet(learn, 1)
    assert not hooks_on(learn.model)


class TwiceHead(nn.Module):
    def __init__(self): super().__init__(); self.fc = nn.Linear(64, 64); self.out = nn.Linear(64, 10)
    def forward(self, x): return self.out(self.fc(self.fc(x)))


def test_linear_called_twice_is_an_error(cnn_learner):
    learn = cnn_learner([MidpointMixup(module=lambda m: m[5].fc)])
    learn.model[5] = TwiceHead()
    with pytest.raises(RuntimeError, match='ran 2 times'): fit_quiet(learn, 1)
    assert not hooks_on(learn.model)


class HookSpy(Callback):
    "Count the hooks on the model while the forward pass runs, and after the batch"
    order = 2
    run_valid = False
    def before_fit(self): self.during, self.after = [], []
    def before_batch(self): self.during.append(len(hooks_on(self.learn.model)))
    def after_batch(self): self.after.append(len(hooks_on(self.learn.model)))


@pytest.mark.parametrize('arch', [resnet18, 'resnet18'])
def test_manifold_default_places_are_stage_outputs(arch, dls):
    cb, spy = ManifoldMixup(), HookSpy()
    set_seed(0)
    learn = vision_learner(dls, arch, pretrained=False, cbs=[cb, spy])
    body = learn.model[0]
    stages = [body[k] for k in range(4, 8)] if arch is resnet18 else [getattr(body.model, f'layer{k}') for k in range(1, 5)]
    targets = cb.targets(learn.model)
    assert targets[0] == (learn.model, 'input')
    assert [m for m, _ in targets[1:]] == stages and all(w == 'output' for _, w in targets[1:])
    fit_quiet(learn, 1, 1e-3, method='fit')
    assert set(spy.during) == {1} and set(spy.after) == {0}   # one place hooked per batch, none left after it
    assert cb.history['place'].nunique() == 5                 # every place gets drawn
    assert not hooks_on(learn.model)


def test_synermix_intra_composes_with_manifold(cnn_learner):
    intra = SynerMixIntra(w=1.)
    learn = cnn_learner([ManifoldMixup(modules=[INPUT]), intra])
    fit_quiet(learn, 3, 1e-2)
    assert learn.validate()[1] > 0.7
    assert (intra.history['n_synth'] == 10).mean() > 0.5 and not hooks_on(learn.model)
