"""What only a GPU can check: every mixing callback under fp16 and bf16 mixed precision, and a compiled training step.

Every test here needs a CUDA device and skips on the CPU (fastai runs the CPU in full precision, and inductor's CUDA
graphs need a GPU). Their names hold `cuda`, as `test_sync.py`'s `set_sync_debug_mode` test does: `pytest -k cuda
tests` selects the lot, which `benchmarks/gpu_check.sh` runs on a lent GPU.
"""
import pytest, torch
from torch._dynamo.utils import counters
from fastai.vision.all import Learner, Callback, CancelFitException, accuracy, set_seed
from fastamp.data import digits_dls
from fastamp.models import small_cnn
from fastamp.losses import LogitAdjustedLoss, LDAMLoss, DRW
from fastamp.bench import CompileModel
from conftest import CALLBACKS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
LOSSES = {'midpoint_la_drw': lambda: dict(loss_func=LogitAdjustedLoss()),
          'midpoint_ldam_drw': lambda: dict(loss_func=LDAMLoss(), model=small_cnn(10, normed=True))}


class Steps(Callback):
    "Each training loss, the classifier input's dtype and dynamo's graph count per step; stop after `n` steps"
    order = 90
    def __init__(self, n=4): self.n, self.losses, self.frames = n, [], []
    def after_batch(self):
        if not self.training: return
        self.losses.append(float(self.learn.loss)); self.frames.append(counters['stats']['unique_graphs'])
        if len(self.losses) == self.n: raise CancelFitException()


def fit_cuda(cbs, precision=None, compiled=False, n=4, **kw):
    set_seed(0)
    dls = digits_dls(bs=32, size=16, seed=0, num_workers=0, device=torch.device('cuda'))
    model = (kw.pop('model', None) or small_cnn(10, head='two')).cuda()
    steps = Steps(n)
    learn = Learner(dls, model, metrics=accuracy, cbs=cbs + [steps] + ([CompileModel()] if compiled else []), **kw)
    if precision == 'fp16': learn.to_fp16()
    if precision == 'bf16': learn.to_bf16()
    torch._dynamo.reset(); counters.clear()
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    return learn, steps


@pytest.mark.parametrize('precision', ['fp16', 'bf16'])
@pytest.mark.parametrize('name', list(CALLBACKS) + list(LOSSES))
def test_cuda_mixed_precision_trains_every_callback(name, precision):
    cbs = CALLBACKS[name]() if name in CALLBACKS else [CALLBACKS['midpoint']()[0], DRW(switch_epoch=0)]
    learn, steps = fit_cuda(cbs, precision, **(LOSSES[name]() if name in LOSSES else {}))
    assert len(steps.losses) == steps.n and all(torch.isfinite(torch.tensor(steps.losses))), steps.losses
    preds, _ = learn.get_preds()
    assert torch.isfinite(preds).all()


@pytest.mark.parametrize('name', ['erm', 'midpoint'])   # inductor takes tens of seconds per model
def test_cuda_compiled_step_compiles_once(name):
    "inductor on the GPU, bf16: no recompile after the second step, the plain module back after the fit"
    learn, steps = fit_cuda(CALLBACKS[name](), 'bf16', compiled=True, n=6)
    assert steps.frames[-1] == steps.frames[1] > 0, f'{name}: graphs per step {steps.frames}'
    assert type(learn.model).__name__ != 'OptimizedModule'
