"""A policy written on the contract alone trains, exports and restores, with no change to `fastamp.mixing`."""
import inspect, re, torch
from fastai.vision.all import load_learner
from fastamp import mixing, mixup
from fastamp.mixup import FeatureMixHandler, MixState
from conftest import hooks_on


class NoiseAppend(FeatureMixHandler):
    "Append a noisy copy of each feature, scored with its own label: a policy on the contract"
    order = 1
    def __init__(self, sigma=0.1, module=None): super().__init__(module); self.sigma = sigma
    def scalar(self): return self.sigma * (1 - self.progress)          # a schedule, reaching `mix` as a tensor
    def mix(self, h, y, s):
        hb = h[:len(y)]
        h, rows = self.append(h, hb + s * torch.randn_like(hb))
        return h, MixState(y, rows=rows)
    def batch_loss(self, state):
        aug = self.sample_loss(self.appended_preds(state.rows), state.y).mean()
        self.record(loss_noise=aug.detach())
        return self.learn.loss_grad + aug


def test_a_new_policy_trains_exports_and_restores(cnn_learner, tmp_path):
    cb = NoiseAppend()
    learn = cnn_learner([cb], path=tmp_path)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(2, 1e-2)
    assert learn.validate()[1] > 0.8 and not hooks_on(learn.model) and '_with_events' not in learn.__dict__
    assert len(cb.history) == 2 * len(learn.dls.train) and cb.history['loss_noise'].notna().all()
    learn.export('noise.pkl')
    loaded = load_learner(tmp_path / 'noise.pkl')
    x = learn.dls.valid.one_batch()[0]
    learn.model.eval(); loaded.model.eval()
    torch.testing.assert_close(loaded.model(x), learn.model(x))    # the exported model is the trained one, untouched
    new = loaded.cbs.filter(lambda c: isinstance(c, NoiseAppend))[0]
    assert new.sigma == 0.1 and len(new.history) == len(cb.history)  # settings and history travel
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)    # the original trains on: the export took nothing
    assert len(cb.history) == 3 * len(learn.dls.train) and not hooks_on(learn.model)


def _policy_fields()->set:
    "Every attribute a policy of `fastamp.mixup` sets on itself that the mechanism does not"
    base = set(vars(FeatureMixHandler()))
    policies = [c for c in vars(mixup).values() if isinstance(c, type) and issubclass(c, FeatureMixHandler)
                and c is not FeatureMixHandler]
    assert len(policies) >= 6, policies
    return {k for c in policies for k in vars(c())} - base


def test_the_base_module_names_no_policy_and_no_policy_field():
    fields = _policy_fields()
    names = {c.__name__ for c in vars(mixup).values() if isinstance(c, type) and c.__module__ == 'fastamp.mixup'}
    assert {'schedule', 'clean', 'alpha', 'label_rule', 'beta'} <= fields     # the check sees the policies' fields
    src = inspect.getsource(mixing)
    used = set(re.findall(r'\.(\w+)', src))
    assert not used & fields, used & fields
    assert not [n for n in names if re.search(rf'\b{n}\b', src)]
