"""MidpointMixup under DistributedDataParallel: two CPU processes (gloo) launched with torchrun, as a user would."""
import subprocess, sys
import pandas as pd, pytest, torch
from pathlib import Path

pytestmark = pytest.mark.slow  # starts torchrun processes: left out of the fast loop (-m 'not slow')

SCRIPT = Path(__file__).parent / 'ddp_train.py'
pytest.importorskip('accelerate', reason="fastai's distrib_ctx needs accelerate (installed by '.[dev]')")


def launch(out, *extra):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           str(SCRIPT), str(out), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.parametrize('extra', [(), ('one-class',)])
def test_two_process_training_ends_with_identical_weights(tmp_path, extra):
    launch(tmp_path, *extra)
    w0, w1 = torch.load(tmp_path / 'rank0.pt'), torch.load(tmp_path / 'rank1.pt')
    assert w0.keys() == w1.keys()
    for k in w0: assert torch.equal(w0[k], w1[k]), k
    h0, h1 = pd.read_csv(tmp_path / 'history0.csv'), pd.read_csv(tmp_path / 'history1.csv')
    assert len(h0) == len(h1) > 10
    assert (h0['lam'] == h1['lam']).all()            # the schedule is the same on every rank
    assert (h0['n_aug'] > 0).all()
    if extra: assert (h1['n_aug'] == 0).all()         # rank 1 had no pair, and nothing deadlocked
