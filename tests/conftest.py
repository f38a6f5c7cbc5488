import os, sys, warnings
from pathlib import Path
import pytest, torch
from fastai.vision.all import Learner, accuracy, set_seed
from fastamp.data import digits_dls
from fastamp.models import small_cnn

warnings.filterwarnings('ignore', category=FutureWarning)
torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', 2)))

FASTAMP = str(Path(sys.executable).parent / 'fastamp')  # the console script of this environment


@pytest.fixture(scope='session')
def dls():
    return digits_dls(bs=64, size=16, seed=0)


@pytest.fixture
def cnn_learner(dls):
    def make(cbs=(), **kw):
        set_seed(0)
        return Learner(dls, small_cnn(10, head='one'), metrics=accuracy, cbs=list(cbs), **kw)
    return make


def hooks_on(model):
    "Every forward (pre-)hook left on `model`'s modules"
    return [(name, h) for name, m in model.named_modules()
            for h in list(m._forward_hooks.values()) + list(m._forward_pre_hooks.values())]
