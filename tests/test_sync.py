"""No host-device synchronisation in a training step of any fastamp mixing callback.

On a GPU, an op that needs a value or a size computed by the GPU (`.item()`, `nonzero`, `unique`, boolean-mask
indexing, ...) makes the CPU wait for the GPU at every batch. On the CPU nothing waits, but the same ATen ops are
dispatched, so a `TorchDispatchMode` that records them during training steps proves, on any machine, that the callbacks
call none of them. A CUDA test with `torch.cuda.set_sync_debug_mode('error')` checks the same on a GPU.
"""
import traceback
import pytest, torch
from torch.utils._python_dispatch import TorchDispatchMode
from fastai.vision.all import Callback, CancelFitException, Learner, accuracy, set_seed
from fastamp.data import digits_dls
from fastamp.models import small_cnn
from fastamp.mixup import MidpointMixup, FeatureMixup, InputMixup, Remix, SynerMix, SynerMixIntra
from fastamp.losses import LogitAdjustedLoss, LDAMLoss, DRW
from fastamp.datasets import load_digits
from fastamp.devicedata import device_dls
from fastamp.bench import MixValuesLogger
from conftest import CALLBACKS

ALWAYS_SYNC = {'_local_scalar_dense', 'nonzero', 'argwhere', 'masked_select', 'bincount', 'multinomial', 'equal',
               'is_nonzero', 'allclose', '_unique', '_unique2', 'unique_dim', 'unique_consecutive',
               'unique_dim_consecutive'}


def _has_bool_index(indices):
    return any(isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8) for t in indices or ())


def sync_reason(func, args, kwargs):
    "Why `func(*args, **kwargs)` would make the host wait for a CUDA device, or None"
    name = func._schema.name.split('::')[-1]
    if name in ALWAYS_SYNC: return name           # (CUDA's bincount reads the largest value even with a minlength)
    if name == 'repeat_interleave' and kwargs.get('output_size') is None: return 'repeat_interleave without output_size'
    if name == 'index' and _has_bool_index(args[1]): return 'boolean-mask indexing'
    if name in ('index_put', 'index_put_', '_index_put_impl_') and _has_bool_index(args[1]):
        return 'boolean-mask assignment'
    return None


class SyncRecorder(TorchDispatchMode):
    "Record the synchronising ops dispatched while `on`, with the line of Python that called each"
    def __init__(self):
        super().__init__()
        self.on, self.found = False, {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.on and (why := sync_reason(func, args, kwargs)) is not None and why not in self.found:
            frames = [f for f in traceback.extract_stack()[:-1] if 'torch/' not in f.filename]
            self.found[why] = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else '?'
        return func(*args, **kwargs)


class Window(Callback):
    "Turn `switch(True)` on at the very start of each training step after the first, off at its very end"
    def __init__(self, switch, on_event='before_batch', off_event='after_batch', n_steps=3, between=False):
        "`between`: stay on from the second step to the last, the making of the batches between them included"
        self.switch, self.n_steps, self.between = switch, n_steps, between
        self.first, self.last = _Edge(self, on_event, True, -1000), _Edge(self, off_event, False, 1000)


class _Edge(Callback):
    run_valid = False
    def __init__(self, window, event, value, order):
        self.window, self.event, self.value, self.order = window, event, value, order
    def __getattr__(self, k):
        if k == self.__dict__.get('event'): return self._flip
        return super().__getattr__(k)
    def _flip(self):
        if self.train_iter == 0: return                # the first step may initialise things: not like the others
        if not self.value and self.window.between and self.train_iter < self.window.n_steps: return
        self.window.switch(self.value)
        if not self.value and self.train_iter >= self.window.n_steps: raise CancelFitException()




class OneClassBatches(Callback):
    "Every other batch holds a single class: the path of a sample without a partner of another class"
    order = -50
    def before_batch(self):
        if self.training and self.train_iter % 2: self.learn.yb = (torch.zeros_like(self.yb[0]),)


def sync_ops_of_steps(dls, cbs, model=None, between=False, **kwargs):
    "The synchronising ops of a few training steps of a learner with callbacks `cbs` (and `Learner` `kwargs`)"
    rec = SyncRecorder()
    def switch(v): rec.on = v
    set_seed(0)
    w = Window(switch, between=between)
    learn = Learner(dls, model or small_cnn(10, head='two'), metrics=accuracy,
                    cbs=cbs + [w.first, w.last, OneClassBatches()], **kwargs)
    with learn.no_bar(), learn.no_logging(), rec: learn.fit(1, 1e-2)
    return rec.found


@pytest.fixture(scope='module')
def digits():
    return digits_dls(bs=32, size=16, seed=0, num_workers=0, device=torch.device('cpu'))


@pytest.fixture(scope='module')
def erm_ops(digits):
    return sync_ops_of_steps(digits, [])


def test_the_recorder_sees_synchronising_ops():
    "The test can fail: the ops the callbacks used to call are recorded"
    rec = SyncRecorder()
    rec.on = True
    y = torch.tensor([0, 2, 2, 1])
    with rec:
        int(torch.bincount(y).max()); (y > 0).nonzero(); torch.unique(y); y[y > 0]
        torch.multinomial(torch.ones(2, 3), 1)
        w = torch.zeros(4); w[y > 1] = 1.
    assert {'_local_scalar_dense', 'bincount', 'nonzero', '_unique2', 'boolean-mask indexing', 'multinomial',
            'boolean-mask assignment'} <= set(rec.found), rec.found


def test_plain_training_step_is_free_of_synchronising_ops(erm_ops):
    "fastai's own loop (no bar, no logging) has none either, so the callbacks' tests below compare with an empty set"
    assert erm_ops == {}, erm_ops


@pytest.mark.parametrize('name', [n for n in CALLBACKS if n != 'erm'])
def test_training_step_has_no_synchronising_op(name, digits, erm_ops):
    found = sync_ops_of_steps(digits, CALLBACKS[name]())
    added = {k: v for k, v in found.items() if k not in erm_ops}
    assert not added, f"{name} synchronises host and device in a training step: {added}"


@pytest.mark.parametrize('kind', ['csv', 'tensorboard'])
def test_step_values_logging_has_no_synchronising_op(kind, digits, erm_ops):
    "`--log csv|tensorboard` keeps each step's mixing values on the device and reads them once an epoch"
    found = sync_ops_of_steps(digits, [MidpointMixup(), SynerMixIntra(), MixValuesLogger(kind)])
    added = {k: v for k, v in found.items() if k not in erm_ops}
    assert not added, f"logging the mixing values ({kind}) synchronises in a training step: {added}"


LOSS_CASES = {
    'la': lambda: dict(loss_func=LogitAdjustedLoss()),
    'la_remix': lambda: dict(loss_func=LogitAdjustedLoss(), cbs=[InputMixup(label_rule=Remix())]),
    'ldam': lambda: dict(loss_func=LDAMLoss(), model=small_cnn(10, normed=True)),
    'ldam_drw_midpoint': lambda: dict(loss_func=LDAMLoss(), model=small_cnn(10, normed=True),
                                      cbs=[MidpointMixup(), DRW(switch_epoch=0)]),
    'drw_midpoint': lambda: dict(loss_func=LogitAdjustedLoss(), cbs=[MidpointMixup(), DRW(switch_epoch=0)]),
    'drw_feature_remix': lambda: dict(loss_func=LogitAdjustedLoss(),
                                      cbs=[FeatureMixup(label_rule=Remix()), DRW(switch_epoch=0)]),
    'drw_synermix': lambda: dict(loss_func=LogitAdjustedLoss(), cbs=[SynerMix(), DRW(switch_epoch=0)]),
    'drw_ce_midpoint': lambda: dict(cbs=[MidpointMixup(), DRW(switch_epoch=0)]),
}


def loss_case(name):
    kw = LOSS_CASES[name]()
    return kw.pop('cbs', []), kw


@pytest.mark.parametrize('name', LOSS_CASES)
def test_losses_and_drw_have_no_synchronising_op(name, digits, erm_ops):
    cbs, kw = loss_case(name)
    found = sync_ops_of_steps(digits, cbs, **kw)
    added = {k: v for k, v in found.items() if k not in erm_ops}
    assert not added, f"{name} synchronises host and device in a training step: {added}"


@pytest.fixture(scope='module')
def device_digits():
    return device_dls(load_digits(), size=16, bs=64, device=torch.device('cpu'), seed=0)


@pytest.mark.parametrize('name', ['erm', 'midpoint', 'input_remix', 'drw_midpoint'])
def test_device_resident_loader_step_has_no_synchronising_op(name, device_digits):
    "The device-resident loader with and without callbacks, the gathering and augmenting of its batches included"
    cbs, kw = loss_case(name) if name in LOSS_CASES else (CALLBACKS[name](), {})
    found = sync_ops_of_steps(device_digits, cbs, between=True, **kw)
    assert not found, f"{name} on device_dls synchronises host and device in a training step: {found}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('name', list(CALLBACKS) + [f'loss:{n}' for n in LOSS_CASES])
def test_cuda_training_step_never_waits(name):
    "On a GPU, `set_sync_debug_mode('error')` from `before_batch` to the end of `after_loss` of each step"
    dls = digits_dls(bs=32, size=16, seed=0, num_workers=0, device=torch.device('cuda'))
    def switch(v): torch.cuda.set_sync_debug_mode('error' if v else 'default')
    cbs, kw = loss_case(name[5:]) if name.startswith('loss:') else (CALLBACKS[name](), {})
    model = kw.pop('model', None) or small_cnn(10, head='two')
    set_seed(0)
    w = Window(switch, off_event='after_loss')
    learn = Learner(dls, model.cuda(), metrics=accuracy, cbs=cbs + [w.first, w.last, OneClassBatches()], **kw)
    try:
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    finally: torch.cuda.set_sync_debug_mode('default')
