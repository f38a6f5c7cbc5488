"""`torch.compile`d models train with every mixing callback: no recompile after the first steps, eager losses."""
import pytest, torch
from torch._dynamo.utils import counters
from fastai.vision.all import Learner, Callback, accuracy, set_seed
from fastamp.models import small_cnn
from fastamp.data import digits_dls
from fastamp.mixup import MidpointMixup, FeatureMixup, ManifoldMixup, InputMixup, SynerMixIntra, SynerMix, INPUT
from fastamp.losses import LogitAdjustedLoss, DRW
from conftest import hooks_on

CASES = {
    'midpoint': lambda: ([MidpointMixup()], {}),
    'midpoint_per_pair': lambda: ([MidpointMixup(per_pair=True)], {}),
    'feature': lambda: ([FeatureMixup()], {}),
    'manifold': lambda: ([ManifoldMixup(modules=[INPUT])], {}),
    'input': lambda: ([InputMixup()], {}),
    'synermix_intra': lambda: ([SynerMixIntra()], {}),
    'synermix': lambda: ([SynerMix()], {}),
    'midpoint_la_drw': lambda: ([MidpointMixup(), DRW(switch_epoch=0)], dict(loss_func=LogitAdjustedLoss())),
}


class Steps(Callback):
    "Keep each training loss and the dynamo frame count after each step; stop after `n` steps"
    order = 90
    def __init__(self, n=6): self.n, self.losses, self.frames = n, [], []
    def after_batch(self):
        if not self.training: return
        self.losses.append(self.learn.loss.detach().clone())
        self.frames.append(counters['stats']['unique_graphs'])
        if len(self.losses) == self.n: raise __import__('fastai').callback.core.CancelFitException()


def run(name, compiled):
    cbs, kw = CASES[name]()
    set_seed(0)
    dls = digits_dls(bs=64, size=16, seed=0)   # fresh loaders: the same batches in both runs
    steps = Steps()
    learn = Learner(dls, small_cnn(10, head='two'), metrics=accuracy, cbs=cbs + [steps], **kw)
    if compiled:
        torch._dynamo.reset(); counters.clear()
        learn.model = torch.compile(learn.model, backend='aot_eager')
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    return learn, steps, dls


@pytest.mark.slow
@pytest.mark.parametrize('name', CASES)
def test_compiled_training_matches_eager_without_recompiling(name):
    _, eager, _ = run(name, False)
    learn, comp, dls = run(name, True)
    assert comp.frames[-1] == comp.frames[1], f'{name} recompiled after step 2: graphs per step {comp.frames}'
    torch.testing.assert_close(torch.stack(comp.losses), torch.stack(eager.losses), rtol=1e-4, atol=1e-5)
    assert not hooks_on(learn.model)
    preds, targs = learn.get_preds()
    assert preds.shape[0] == len(dls.valid_ds)


# ---- `CompileModel`, the benchmark's callback: the same checks, the plain module back after the fit ----
from fastai.learner import load_learner
from torch._dynamo.eval_frame import OptimizedModule
from fastamp.losses import LDAMLoss
from fastamp.bench import CompileModel

def _ldam(): return dict(loss_func=LDAMLoss(), model=lambda: small_cnn(10, normed=True))   # a cosine classifier
CB_CASES = {**CASES, 'midpoint_ldam_drw': lambda: ([MidpointMixup(), DRW(switch_epoch=0)], _ldam())}


def run_cb(name, compiled, n=6):
    cbs, kw = CB_CASES[name]()
    set_seed(0)
    model = kw.pop('model', lambda: small_cnn(10, head='two'))()
    dls = digits_dls(bs=64, size=16, seed=0)
    steps = Steps(n)
    extra = [CompileModel(backend='aot_eager')] if compiled else []
    learn = Learner(dls, model, metrics=accuracy, cbs=cbs + extra + [steps], **kw)
    torch._dynamo.reset(); counters.clear()
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    return learn, steps


@pytest.mark.slow
@pytest.mark.parametrize('name', CB_CASES)
def test_compile_model_callback_trains_as_eager_and_leaves_the_plain_module(name, tmp_path):
    _, eager = run_cb(name, False)
    learn, comp = run_cb(name, True)
    assert comp.frames[-1] == comp.frames[1] > 0, f'{name} recompiled after step 2: graphs per step {comp.frames}'
    torch.testing.assert_close(torch.stack(comp.losses), torch.stack(eager.losses), rtol=1e-4, atol=1e-5)
    assert not isinstance(learn.model, OptimizedModule) and not hooks_on(learn.model)
    again = Steps(4)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2, cbs=again)   # a second fit reuses the wrapper
    assert again.frames[-1] == comp.frames[-1], f'{name}: a second fit recompiled ({comp.frames} then {again.frames})'
    assert not isinstance(learn.model, OptimizedModule)
    learn.export(tmp_path/'learn.pkl')
    back = load_learner(tmp_path/'learn.pkl')
    assert type(back.model) is type(learn.model)
    preds, _ = learn.get_preds()
    assert preds.shape[0] == len(learn.dls.valid_ds) and torch.isfinite(preds).all()


@pytest.mark.slow
def test_compiled_learners_of_one_model_class_keep_their_own_graphs():
    "A plain learner compiled first must not lend its hook-free graph to a mixing learner of the same model class"
    dls = digits_dls(bs=64, size=16, seed=0)
    torch._dynamo.reset(); counters.clear()
    for cbs in ([], [MidpointMixup()], []):   # without hook guards, MidpointMixup's pass would never reach its hook
        learn = Learner(dls, small_cnn(10), cbs=cbs + [CompileModel(backend='aot_eager'), Steps(3)])
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
        assert not isinstance(learn.model, OptimizedModule)


@pytest.mark.slow
def test_compile_model_restores_the_plain_module_when_a_fit_fails():
    class Boom(Callback):
        def after_pred(self):
            if self.training: raise ZeroDivisionError('a failing step')
    learn = Learner(digits_dls(bs=64, size=16, seed=0), small_cnn(10),
                    cbs=[MidpointMixup(), cm := CompileModel(backend='aot_eager'), Boom()])
    with pytest.raises(ZeroDivisionError), learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    assert isinstance(learn.model, OptimizedModule)   # fastai calls no `after_fit` on other exceptions
    learn.validate()                                   # `before_validate` puts the plain module back
    assert not isinstance(learn.model, OptimizedModule)
    learn.model = cm.compiled(learn.model); cm.restore()
    assert not isinstance(learn.model, OptimizedModule)


@pytest.mark.slow
@pytest.mark.parametrize('name', CB_CASES)
def test_mixing_step_is_static_as_cuda_graphs_need(name):
    "`dynamic=False`: a per-step Python scalar or a data-dependent shape in the compiled region recompiles at step 2"
    cbs, kw = CB_CASES[name]()
    set_seed(0)
    model = kw.pop('model', lambda: small_cnn(10, head='two'))()
    steps = Steps(5)
    learn = Learner(digits_dls(bs=64, size=16, seed=0), model, cbs=cbs + [CompileModel('aot_eager', dynamic=False),
                                                                          steps], **kw)
    torch._dynamo.reset(); counters.clear()
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    assert steps.frames[0] == steps.frames[-1] > 0, f'{name}: graphs per step {steps.frames}'
