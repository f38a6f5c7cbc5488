"""Public-use behaviour shared by every fastamp mixing callback: training, restore paths, export, composition."""
import pytest, torch, torch.nn as nn
from fastai.vision.all import (vision_learner, resnet18, accuracy, MixUp, CutMix, GradientAccumulation,
                               CancelFitException, Callback, load_learner, ClassificationInterpretation, set_seed)
from fastamp.mixup import MidpointMixup, FeatureMixup, ManifoldMixup, InputMixup, Remix, SynerMix, SynerMixIntra, INPUT
from conftest import hooks_on, fit_quiet, RaiseAt, RaiseInForward, digits_subset

CALLBACKS = {
    'midpoint': lambda: MidpointMixup(),
    'midpoint_variant': lambda: MidpointMixup(symmetric=False, partner='class', per_pair=True, module='pooled'),
    'feature': lambda: FeatureMixup(),
    'manifold': lambda: ManifoldMixup(),
    'input_remix': lambda: InputMixup(label_rule=Remix()),
    'synermix_intra': lambda: SynerMixIntra(),
    'synermix': lambda: SynerMix(),
}


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


@pytest.mark.parametrize('name', ['midpoint', 'feature', 'manifold', 'synermix'])
@pytest.mark.parametrize('exc', [RuntimeError('boom'), KeyboardInterrupt(), CancelFitException()])
@pytest.mark.parametrize('where', ['callback', 'forward', 'before_batch'])
def test_interruption_leaves_learner_clean(name, exc, where, cnn_learner, small_dls):
    cb = CALLBACKS[name]()
    learn = cnn_learner([cb], data=small_dls)                 # 5 batches: it raises at the third
    if where == 'forward': learn.model.insert(1, RaiseInForward(exc))
    else: learn.add_cb(RaiseAt(exc, event='after_pred' if where == 'callback' else 'before_batch'))
    lf, dl_tfms = learn.loss_func, learn.dls.train.after_batch.fs
    try: fit_quiet(learn, 1, 1e-2)
    except (RuntimeError, KeyboardInterrupt): pass
    live = [h for _, h in hooks_on(learn.model)]
    assert learn.loss_func is lf and learn.dls.train.after_batch.fs == dl_tfms
    # Nothing survives an exception in the forward pass (PyTorch runs `always_call` hooks for an `Exception`) or after
    # it. Before it (a later callback's `before_batch`) only the inert gate can stay; PyTorch skips `always_call` hooks
    # for a KeyboardInterrupt, which is no `Exception`, so inert hooks can stay then too.
    allowed = {'callback': 0, 'before_batch': 1, 'forward': 3 if isinstance(exc, KeyboardInterrupt) else 0}[where]
    if isinstance(exc, CancelFitException): allowed = 0   # fastai runs `after_cancel_fit`
    assert len(live) <= allowed, live
    learn.model.eval()
    with torch.no_grad(): learn.model(learn.dls.one_batch()[0][:4])
    assert not hooks_on(learn.model)
    if where == 'forward': learn.model[1].n = -1
    else: learn.remove_cb(RaiseAt)
    fit_quiet(learn, 1, 1e-2)  # fit works again
    assert not hooks_on(learn.model) and learn.loss_func is lf


@pytest.mark.parametrize('name', ['midpoint', 'manifold'])
def test_eval_paths_ignore_callback(name, small_dls, tmp_path):
    set_seed(1)
    learn = vision_learner(small_dls, resnet18, pretrained=False, metrics=accuracy, cbs=CALLBACKS[name](),
                           path=tmp_path)
    fit_quiet(learn, 1, 1e-3, method='fine_tune')
    preds, targs, losses = learn.get_preds(with_loss=True)
    with learn.removed_cbs(learn.cbs.filter(lambda c: isinstance(c, (MidpointMixup, ManifoldMixup)))):
        preds2, _, losses2 = learn.get_preds(with_loss=True)
    assert torch.allclose(preds, preds2) and torch.allclose(losses, losses2)
    interp = ClassificationInterpretation.from_learner(learn)
    assert interp.confusion_matrix().sum() == len(small_dls.valid_ds)
    learn.export('model.pkl')
    loaded = load_learner(tmp_path / 'model.pkl')
    assert not hooks_on(loaded.model)
    x = small_dls.valid_ds[0][0]  # a TensorImage: what `predict` takes for in-memory datasets
    p_loaded = loaded.predict(x)[2]
    p = learn.predict(x)[2]
    assert torch.allclose(p, p_loaded, atol=1e-5)


def test_timm_arch_and_bn_final_warning(small_dls):
    learn = vision_learner(small_dls, 'resnet18', pretrained=False, cbs=MidpointMixup())
    fit_quiet(learn, 1, 1e-3)
    assert not hooks_on(learn.model)
    with pytest.warns(UserWarning, match='layers follow'):
        learn = vision_learner(small_dls, resnet18, pretrained=False, bn_final=True, cbs=MidpointMixup())
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
    learn = cnn_learner([MidpointMixup(module=lambda m: m[1][2].fc)])
    learn.model[1][2] = TwiceHead()
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
def test_manifold_default_places_are_stage_outputs(arch):
    cb, spy = ManifoldMixup(), HookSpy()
    dls = digits_subset(640, bs=16)                        # 40 batches of 16: every one of the 5 places gets drawn
    set_seed(0)
    learn = vision_learner(dls, arch, pretrained=False, cbs=[cb, spy])
    body = learn.model[0]
    stages = ([body[k] for k in range(4, 8)] if arch is resnet18 else
              [getattr(body.model, f'layer{k}') for k in range(1, 5)])
    places = cb.places(learn.model)
    assert places[0] == (learn.model, 'input')
    assert [m for m, _ in places[1:]] == stages and all(w == 'output' for _, w in places[1:])
    fit_quiet(learn, 1, 1e-3, method='fit')
    # registered once for the fit (a gate, the 5 places, the end hook), unchanged from step to step
    assert set(spy.during) == {7} and set(spy.after) == {7}
    assert cb.history['place'].nunique() == 5                 # every place gets drawn
    assert not hooks_on(learn.model)


def test_synermix_intra_composes_with_manifold(cnn_learner):
    intra = SynerMixIntra(w=1.)
    learn = cnn_learner([ManifoldMixup(modules=[INPUT]), intra])
    fit_quiet(learn, 3, 1e-2)
    assert learn.validate()[1] > 0.7
    assert (intra.history['n_synth'] == 10).mean() > 0.5 and not hooks_on(learn.model)


@pytest.mark.parametrize('name', ['midpoint', 'feature', 'manifold', 'synermix', 'synermix_intra'])
@pytest.mark.parametrize('where', ['forward', 'before_batch'])
def test_after_an_exception_the_next_call_of_the_model_is_untouched(name, where, cnn_learner):
    "An exception inside the forward pass or in a later callback's `before_batch`: the next train-mode call is plain"
    learn = cnn_learner([CALLBACKS[name]()])
    if where == 'forward': learn.model.insert(1, RaiseInForward(RuntimeError('out of memory (injected)')))
    else: learn.add_cb(RaiseAt(RuntimeError('injected'), event='before_batch'))
    with pytest.raises(RuntimeError, match='injected'): fit_quiet(learn, 1, 1e-2)
    if where == 'forward': assert not hooks_on(learn.model)
    x = learn.dls.one_batch()[0][:5]
    learn.model.train()
    out = learn.model(x)                                 # the next call, in training mode
    assert out.shape == (5, 10) and not hooks_on(learn.model)
    assert torch.allclose(out, learn.model(x), atol=1e-6)   # the same as a call with no hook at all


def test_in_place_mixer_and_appending_callbacks_compose(cnn_learner):
    "MidpointMixup composes with SynerMixIntra and with FeatureMixup; each records its own rows"
    for cbs in ([MidpointMixup(), SynerMixIntra()], [FeatureMixup(), MidpointMixup()],
                [FeatureMixup(), MidpointMixup(), SynerMixIntra(w=0.5)]):
        learn = cnn_learner(cbs)
        fit_quiet(learn, 2, 1e-2)
        assert learn.validate()[1] > 0.7, cbs
        assert not hooks_on(learn.model)
        for cb in cbs:
            h = cb.history
            assert len(h) == 2 * len(learn.dls.train)
            if isinstance(cb, MidpointMixup): assert (h['n_aug'] > 0).all() and h['loss_aug'].notna().all()
            if isinstance(cb, SynerMixIntra): assert (h['n_synth'] > 1).all() and h['loss_intra'].notna().all()


@pytest.mark.parametrize('cbs, msg', [
    (lambda: [FeatureMixup(), ManifoldMixup()], 'several in-place mixers'),
    (lambda: [SynerMix(), InputMixup()], 'several in-place mixers'),
    (lambda: [MidpointMixup(clean=False), SynerMixIntra()], 'clean=False'),
])
def test_callbacks_that_do_not_compose_are_refused_at_fit_start(cbs, msg, cnn_learner):
    learn = cnn_learner(cbs())
    w0 = [p.detach().clone() for p in learn.model.parameters()]
    with pytest.raises(ValueError, match=msg) as e: fit_quiet(learn, 1, 1e-2)
    assert 'compose as' in str(e.value) and 'SynerMixIntra' in str(e.value)
    assert all(torch.equal(a, b) for a, b in zip(w0, learn.model.parameters())) and not hooks_on(learn.model)


def test_one_callback_object_in_two_learners_is_refused(cnn_learner):
    cb = MidpointMixup()
    learn = cnn_learner([cb])
    with pytest.raises(ValueError, match='already a callback of another Learner'): cnn_learner([cb])
    learn.remove_cb(cb)                                # once the first learner lets it go, another may take it
    learn2 = cnn_learner([cb])
    fit_quiet(learn2, 1, 1e-2)
    assert cb.learn is learn2 and len(cb.history) == len(learn2.dls.train)


def test_remix_counts_of_the_wrong_length_name_the_argument(cnn_learner):
    learn = cnn_learner([InputMixup(label_rule=Remix(counts=[10, 20, 30]))])
    with pytest.raises(ValueError, match=r'counts=.*3 entries.*10 classes'): fit_quiet(learn, 1, 1e-2)


def test_fine_tune_schedule_spans_both_fits_and_history_keeps_them(cnn_learner):
    cb = MidpointMixup()
    learn = cnn_learner([cb])
    fit_quiet(learn, 2, 1e-3, method='fine_tune', freeze_epochs=1)
    h, n = cb.history, len(learn.dls.train)
    assert h['fit'].tolist() == [0] * n + [1] * 2 * n                      # every fit kept
    assert h['progress'].is_monotonic_increasing and h['lam'].is_monotonic_decreasing
    assert h['progress'].iloc[n] == pytest.approx(1 / 3)                  # the unfrozen fit starts a third in
    assert h['lam'].iloc[-1] < 0.51
    fit_quiet(learn, 1, 1e-3, method='fit')                                # a plain fit: its own schedule
    h = cb.history
    assert h['fit'].iloc[-1] == 2 and h.loc[h['fit'] == 2, 'progress'].iloc[0] == 0


def test_repr_lists_the_hyper_parameters():
    assert repr(MidpointMixup(per_pair=True, partner='class_mean')).endswith(
        "MidpointMixup(schedule=fastamp.core.AsymptoticLam(lam0=1.0, gamma=0.01), symmetric=True, per_pair=True, "
        "w=1.0, clean=True, partner='class_mean', module=None)")
    assert 'Remix(kappa=3.0, tau=0.5, counts=None)' in repr(InputMixup(label_rule=Remix()))
    assert repr(SynerMix(beta=0.3)).endswith("SynerMix(beta=0.3, alpha=1.0, label_rule=None, module=None)")


def test_remix_gives_its_weights_on_the_batch_device():
    "On another device than its counts, Remix weighs there (its counts moved once: `fastamp.core.DeviceCache`)"
    rule, meta = Remix(counts=[500, 50, 10]), torch.device('meta')
    y, lam = torch.tensor([0, 2]), torch.full((2,), 0.3)
    torch.testing.assert_close(rule(lam, y, y.flip(0)), torch.tensor([0., 0.3]))
    for _ in range(2): assert rule(lam.to(meta), y.to(meta), y.flip(0).to(meta)).device == meta
    torch.testing.assert_close(rule(lam, y, y.flip(0)), torch.tensor([0., 0.3]))
