import os, sys, warnings
from pathlib import Path
import pytest, torch, torch.nn as nn
from fastai.vision.all import Learner, Callback, accuracy, set_seed
from fastamp.data import digits_dls, imageset_dls, load_digits
from fastamp.models import small_cnn
from fastamp.mixup import MidpointMixup, FeatureMixup, ManifoldMixup, InputMixup, Remix, SynerMix, SynerMixIntra, INPUT

warnings.filterwarnings('ignore', category=FutureWarning)
# one thread per pytest-xdist worker (the README's command runs two on two cores), two without xdist
torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS') or (1 if os.environ.get('PYTEST_XDIST_WORKER') else 2)))

FASTAMP = str(Path(sys.executable).parent / 'fastamp')  # the console script of this environment


# every mixing callback (and two compositions) in the settings the sync, CUDA and compile tests run
CALLBACKS = {
    'erm': lambda: [],
    'midpoint': lambda: [MidpointMixup()],
    'midpoint_oneway': lambda: [MidpointMixup(symmetric=False)],
    'midpoint_class': lambda: [MidpointMixup(symmetric=False, partner='class', per_pair=True)],
    'midpoint_class_mean': lambda: [MidpointMixup(partner='class_mean')],
    'midpoint_per_pair': lambda: [MidpointMixup(per_pair=True)],
    'midpoint_augonly': lambda: [MidpointMixup(clean=False, w=0.5)],
    'midpoint_pooled': lambda: [MidpointMixup(module='pooled')],
    'feature': lambda: [FeatureMixup()],
    'manifold': lambda: [ManifoldMixup(modules=[INPUT, lambda m: m[0][1], lambda m: m[0][3]])],
    'input_remix': lambda: [InputMixup(label_rule=Remix())],
    'synermix': lambda: [SynerMix()],
    'synermix_intra': lambda: [SynerMixIntra()],
    'manifold+intra': lambda: [ManifoldMixup(modules=[INPUT]), SynerMixIntra()],
    'midpoint+intra': lambda: [MidpointMixup(), SynerMixIntra()],
}


@pytest.fixture(scope='session')
def dls():
    return digits_dls(bs=64, size=16, seed=0)


def digits_subset(n_train:int, n_valid:int=160, bs:int=64):
    "`DataLoaders` of the first `n_train` training and `n_valid` held-out digits, 16 px"
    data = load_digits(seed=0)
    return imageset_dls(data, train_idx=data.train_idx[:n_train], valid_idx=data.valid_idx[:n_valid], bs=bs, size=16)


def load_script(path):
    "A script of the repository (`benchmarks/`, `tools/`) as a module, to call its functions in-process"
    import importlib.util
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope='session')
def small_dls():
    "A fifth of digits (320 training, 160 held-out items): for the tests that train a ResNet only to check a path"
    return digits_subset(320)


@pytest.fixture
def cnn_learner(dls):
    def make(cbs=(), data=None, **kw):
        set_seed(0)
        return Learner(data or dls, small_cnn(10, head='one'), metrics=accuracy, cbs=list(cbs), **kw)
    return make


def hooks_on(model):
    "Every forward (pre-)hook left on `model`'s modules"
    return [(name, h) for name, m in model.named_modules()
            for h in list(m._forward_hooks.values()) + list(m._forward_pre_hooks.values())]


def fit_quiet(learn, *args, method='fit_one_cycle', **kw):
    "`learn.<method>(*args, **kw)` without progress bar or logging"
    with learn.no_bar(), learn.no_logging(): getattr(learn, method)(*args, **kw)


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
