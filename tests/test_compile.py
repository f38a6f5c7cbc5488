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
