import os, warnings
import pytest, torch, torch.nn as nn
from fastai.vision.all import ConvLayer, Flatten, Learner, accuracy, set_seed
from fastamp.data import digits_dls

warnings.filterwarnings('ignore', category=FutureWarning)
torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', 2)))


def small_cnn(n_out=10):
    "A small CNN for 16x16 digits: conv body, pooled features, linear classifier"
    return nn.Sequential(ConvLayer(3, 16, stride=2), ConvLayer(16, 32, stride=2), ConvLayer(32, 64, stride=2),
                         nn.AdaptiveAvgPool2d(1), Flatten(), nn.Linear(64, n_out))


@pytest.fixture(scope='session')
def dls():
    return digits_dls(bs=64, size=16, seed=0)


@pytest.fixture
def cnn_learner(dls):
    def make(cbs=(), **kw):
        set_seed(0)
        return Learner(dls, small_cnn(), metrics=accuracy, cbs=list(cbs), **kw)
    return make


def hooks_on(model):
    "Every forward (pre-)hook left on `model`'s modules"
    return [(name, h) for name, m in model.named_modules()
            for h in list(m._forward_hooks.values()) + list(m._forward_pre_hooks.values())]
