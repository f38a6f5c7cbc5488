"""Properties of pairing and schedules (hypothesis), resume from a checkpoint, and bad input before training."""
import pytest, torch, torch.nn as nn
from hypothesis import given, settings, strategies as st
from fastai.vision.all import SaveModelCallback, MSELossFlat, BCEWithLogitsLossFlat, CrossEntropyLossFlat, SchedCos
from fastamp.core import inter_class_partners, as_lam_schedule, AsymptoticLam, LinearLam, pair_ratios
from fastamp.mixup import MidpointMixup, FeatureMixup, ManifoldMixup, SynerMixIntra
from conftest import hooks_on

labels = st.lists(st.integers(0, 5), min_size=0, max_size=64).map(lambda v: torch.tensor(v, dtype=torch.long))


@settings(max_examples=300, deadline=None)
@given(labels, st.booleans(), st.sampled_from(['sample', 'class', 'class_mean']))
def test_partners_are_always_of_another_class(y, symmetric, partner):
    if symmetric and partner == 'class': return
    j, valid = inter_class_partners(y, symmetric, partner)
    assert j.shape == valid.shape == y.shape                   # one slot per sample, whatever the labels
    assert (y[valid] != y[j[valid]]).all()
    assert (j[~valid] == torch.arange(len(y))[~valid]).all()   # a slot without a partner points at its own sample


@settings(max_examples=300, deadline=None)
@given(labels)
def test_symmetric_pairing_is_a_maximum_matching_and_an_involution(y):
    j, valid = inter_class_partners(y, symmetric=True)
    assert (j[j] == torch.arange(len(y))).all()                # an involution: each sample paired at most once
    assert (valid[j] == valid).all()
    unpaired = [k for k in range(len(y)) if not valid[k]]
    assert len({int(y[k]) for k in unpaired}) <= 1             # no two unpaired samples could still be paired
    if len(y): assert int(valid.sum()) == 2 * min(len(y) // 2, len(y) - int(torch.bincount(y).max()))


@settings(max_examples=200, deadline=None)
@given(labels, st.sampled_from(['sample', 'class']))
def test_every_sample_with_an_available_partner_gets_one(y, partner):
    _, valid = inter_class_partners(y, symmetric=False, partner=partner)
    has_other = [bool((y != y[k]).any()) for k in range(len(y))]
    assert valid.tolist() == has_other


@settings(max_examples=300, deadline=None)
@given(st.floats(-10, 10, allow_nan=False), st.floats(0.5, 1), st.floats(1e-4, 0.99), st.booleans())
def test_ratio_stays_in_range_for_any_schedule_input(p, lam0, gamma, per_pair):
    for sched in (AsymptoticLam(lam0, gamma), LinearLam(lam0), SchedCos(lam0, 0.5)):
        lam = float(as_lam_schedule(sched)(min(max(p, 0.), 1.)))
        r = pair_ratios(sched(p), 16, per_pair)                 # even outside [0, 1] the ratio is clamped
        assert 0.5 <= lam <= 1 and ((r >= 0.5) & (r <= 1)).all()


def test_resume_continues_the_schedule(cnn_learner, tmp_path):
    cb = MidpointMixup()
    learn = cnn_learner([cb], path=tmp_path)
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(4, 1e-2, cbs=SaveModelCallback(every_epoch=True, fname='ckpt'))
    full = cb.history.copy()
    learn2 = cnn_learner([cb2 := MidpointMixup()], path=tmp_path)
    learn2.load('ckpt_1')
    with learn2.no_bar(), learn2.no_logging(): learn2.fit_one_cycle(4, 1e-2, start_epoch=2)
    resumed = cb2.history
    n = len(learn.dls.train)
    assert len(resumed) == 2 * n
    assert resumed['pct_train'].iloc[0] == pytest.approx(0.5)
    assert resumed['lam'].tolist() == pytest.approx(full['lam'].iloc[2 * n:].tolist())


@pytest.mark.parametrize('make, msg', [
    (lambda: MidpointMixup(schedule=1.2), 'lam must stay in [0.5, 1]'),
    (lambda: MidpointMixup(schedule=lambda p: 1 - p), 'lam=0.49 at p=0.51'),
    (lambda: MidpointMixup(w=-0.1), 'must be a finite number >= 0'),
    (lambda: MidpointMixup(w=float('inf')), 'w=inf: the weight of the augmented loss must be a finite number'),
    (lambda: MidpointMixup(w=float('nan')), 'w=nan'),
    (lambda: MidpointMixup(partner='by_class'), "partner='by_class'"),
    (lambda: FeatureMixup(alpha=0), 'must be > 0'),
    (lambda: ManifoldMixup(alpha=-1), 'must be > 0'),
    (lambda: SynerMixIntra(w=-1), 'must be a finite number >= 0'),
])
def test_bad_parameters_fail_at_construction(make, msg):
    with pytest.raises(ValueError, match=msg.replace('[', r'\[').replace(']', r'\]')): make()


@pytest.mark.parametrize('schedule, msg', [(True, 'a bool is not a ratio'), (False, 'a bool is not a ratio'),
                                           (lambda p: None, 'returned None at p=0.00'),
                                           (lambda p: 'x', "returned 'x'")])
def test_a_schedule_that_is_not_a_ratio_is_refused_with_its_argument_named(schedule, msg):
    with pytest.raises(TypeError, match='schedule') as e: MidpointMixup(schedule=schedule)
    assert msg in str(e.value)


class Spy(nn.Module):
    "Counts forward passes, to prove that an error came before training"
    def __init__(self): super().__init__(); self.calls = 0
    def forward(self, x): self.calls += 1; return x


@pytest.mark.parametrize('loss, targets, msg', [
    (MSELossFlat(), None, 'loss_func='),
    (BCEWithLogitsLossFlat(), None, 'y_int=True'),
    (None, 'float', 'integer class per sample'),
    (None, 'multilabel', 'integer class per sample'),
])
def test_bad_targets_and_losses_fail_before_any_step(cnn_learner, loss, targets, msg):
    learn = cnn_learner([MidpointMixup(loss_func=CrossEntropyLossFlat() if targets else None)])
    if loss is not None: learn.loss_func = loss
    spy = Spy(); learn.model.insert(0, spy)
    if targets:
        from fastai.vision.all import Callback
        class BadTargets(Callback):
            order = -5
            def before_batch(self):
                y = self.yb[0]
                self.learn.yb = (y.float(),) if targets == 'float' else (torch.nn.functional.one_hot(y, 10).float(),)
        learn.add_cb(BadTargets())
    w0 = [p.detach().clone() for p in learn.model.parameters()]
    with pytest.raises((ValueError, TypeError), match=msg):
        with learn.no_bar(), learn.no_logging(): learn.fit(1)
    assert spy.calls == 0 and all(torch.equal(a, b) for a, b in zip(w0, learn.model.parameters()))
    assert not hooks_on(learn.model)
