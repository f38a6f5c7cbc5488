"""A policy written on the contract alone trains, exports and restores, with no change to `fastamp.mixing`."""
import inspect, re, torch
from fastai.vision.all import load_learner
from fastamp import mixing
from fastamp.mixup import FeatureMixHandler, per_sample_loss
from conftest import hooks_on


class NoiseAppend(FeatureMixHandler):
    "Append a noisy copy of each feature, scored with its own label: a 25-line policy on the contract"
    order = 1
    def __init__(self, sigma=0.1, module=None): super().__init__(module); self.sigma = sigma
    def scalar(self): return self.sigma * (1 - self.progress)          # a schedule, reaching `mix` as a tensor
    def mix(self, h, y, s):
        hb = h[:len(y)]
        h, rows = self.append(h, hb + s * torch.randn_like(hb))
        return h, dict(y=y, rows=rows)
    def batch_loss(self, state):
        aug = per_sample_loss(self._lf, self.appended_preds(state['rows']), state['y']).mean()
        self.record(loss_noise=aug.detach())
        return self.learn.loss_grad + aug


def test_a_new_policy_trains_exports_and_restores(cnn_learner, tmp_path):
    cb = NoiseAppend()
    learn = cnn_learner([cb], path=tmp_path)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(2, 1e-2)
    assert learn.validate()[1] > 0.8 and not hooks_on(learn.model)
    assert len(cb.history) == 2 * len(learn.dls.train) and cb.history['loss_noise'].notna().all()
    learn.export('noise.pkl')
    loaded = load_learner(tmp_path / 'noise.pkl')
    assert not hooks_on(loaded.model) and loaded.cbs.filter(lambda c: isinstance(c, NoiseAppend))[0].batch_state is None


def test_the_base_class_names_no_policy_field():
    src = inspect.getsource(mixing)
    base = src[src.index('class FeatureMixHandler'):src.index('_COMPOSE = ')]
    policy_fields = {'clean', 'label_rule', 'symmetric', 'partner', 'per_pair', 'beta', 'alpha', '_pairs', '_perm',
                     '_lam', '_present', '_aug_w', 'schedule', 'modules'}
    used = set(re.findall(r'\.(\w+)', base))
    assert not used & policy_fields, used & policy_fields
