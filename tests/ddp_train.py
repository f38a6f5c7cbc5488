"""Launched by tests/test_distributed.py with torchrun: 2 CPU processes (gloo) train with MidpointMixup through
fastai's own distributed path (`learn.distrib_ctx()`), then each rank saves its weights and recorded schedule."""
import sys, warnings
from pathlib import Path
import torch
import torch.distributed as dist
from fastai.vision.all import Learner, accuracy, set_seed, rank_distrib
import fastai.distributed
from fastamp.data import digits_dls
from fastamp.mixup import MidpointMixup
from fastamp.models import small_cnn

warnings.filterwarnings('ignore')
torch.set_num_threads(1)


def _broadcast_cpu(self, t, rank):
    "fastai's DistributedDL broadcasts its indices as CUDA tensors (nccl only); on CPU (gloo) they stay on the CPU"
    t = torch.LongTensor(t)
    dist.broadcast(t, rank)
    return t.tolist()


fastai.distributed.DistributedDL._broadcast = _broadcast_cpu

out = Path(sys.argv[1])
one_class_rank1 = len(sys.argv) > 2 and sys.argv[2] == 'one-class'
set_seed(0)
dls = digits_dls(bs=16, size=16, seed=0, num_workers=0)
model = small_cnn(10, head='one')
cb = MidpointMixup()
learn = Learner(dls, model, metrics=accuracy, cbs=cb)
if one_class_rank1:
    class OneClassOnRank1(fastai.callback.core.Callback):
        "Rank 1 sees batches of a single class: no inter-class pair there, while rank 0 has pairs"
        order = -1
        def before_batch(self):
            if rank_distrib() == 1 and self.training: self.learn.yb = (torch.zeros_like(self.yb[0]),)
    learn.add_cb(OneClassOnRank1())
with learn.distrib_ctx(sync_bn=False, cpu=True):
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
rank = rank_distrib()
torch.save({k: v.detach().cpu() for k, v in learn.model.state_dict().items()}, out / f'rank{rank}.pt')
cb.history.to_csv(out / f'history{rank}.csv', index=False)
