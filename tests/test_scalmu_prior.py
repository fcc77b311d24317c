"""SCALMU's learned abundance prior (:class:`fusion_explorer.methods.scalmu.model.AbundancePrior`): the
layers' pull of ``H_m`` towards the colour-guided transfer of its own LR abundances."""

from __future__ import annotations

import pytest
import torch

from fusion_explorer.cli import main
from fusion_explorer.methods.scalmu import load_model
from fusion_explorer.methods.scalmu.model import LAYER_DOC, SCALMUNet, fused_loss
from fusion_explorer.methods.scalmu.start import batch_start
from fusion_explorer.methods.unmixing import coupled_step
from fusion_explorer.methods.unmixing.guided import transfer
from fusion_explorer.methods.unmixing.step import joint_abundance_terms, multiplicative
from fusion_explorer.synth import training_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def start():
    """Two synthetic 32x32 scenes of 31 bands at x4, CNMF-started, with colour neighbours and sensor features."""
    return batch_start(training_batch(3, 2, size=32, wavelength="cave", ratios=(4,)), init_iterations=20)


def _pair(layers: int = 3, seed: int = 1) -> tuple[SCALMUNet, SCALMUNet]:
    """The same random network without and with an abundance prior (every other weight equal)."""
    torch.manual_seed(seed)
    plain = SCALMUNet(layers, 8, noise_aware=True)
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(0.3 * torch.randn_like(p))
    with_prior = SCALMUNet(layers, 8, noise_aware=True, abundance_prior=True)
    missing = with_prior.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["prior.log_threshold", "prior.log_weight", "prior.noise"]
    return plain.eval(), with_prior.eval()


def test_prior_off_is_the_network_without_one(start):
    """Ablating the prior gives, bit for bit, the same network trained without it; on, it changes the result."""
    state, data, _ = start
    plain, with_prior = _pair()
    with torch.no_grad():
        z_plain = plain.finish(plain(state, data), data)
        off = with_prior.parts[:-1]
        assert with_prior.parts[-1] == "prior" and "prior" not in plain.parts
        z_off = with_prior.finish(with_prior(state, data, learned=frozenset(off)), data, frozenset(off))
        z_on = with_prior.finish(with_prior(state, data), data)
    torch.testing.assert_close(z_off, z_plain, rtol=0, atol=0)
    assert (z_on - z_plain).abs().max() > 1e-4


def test_prior_layer_is_the_mu_of_the_regularised_objective(start):
    """With the prior alone on, one layer's H_m update is the MU of the joint objective plus
    ½ Σ μ (H_m - A)², A the guided transfer of S(H_m), μ = s (μ_all + μ_above · sigmoid(4 log(H_m / (τ A))))."""
    state, data, _ = start
    _, net = _pair(1)
    with torch.no_grad():
        net.prior.log_weight.copy_(torch.tensor([[0.5, 1.0]]).log())
        net.prior.log_threshold.fill_(torch.tensor(1.5).log())
        net.prior.noise.zero_()
        hook, weight, parts = net.layer(0, data, frozenset({"prior"}))
        assert weight == 0.0  # the LR-HSI weights are another part: off
        got = coupled_step(state, data, hook, hsi_weight=weight)
        # by hand: the same coupled step up to the abundance update, then the regularised MU
        plain_step = coupled_step(state, data)
        mid = plain_step.__class__(plain_step.endmembers, plain_step.abundances_lr, state.abundances,
                                   plain_step.msi_endmembers)
        num, den = joint_abundance_terms(mid, data, 0.0)
        a = transfer(mid.abundances_lr, data.neighbours).clamp_min(0)
        s = mid.msi_endmembers.square().sum(dim=-2).mean(dim=-1)[:, None, None]
        t = torch.finfo(a.dtype).tiny
        above = torch.sigmoid(4 * ((state.abundances + t).log() - (a + t).log() - torch.tensor(1.5).log()))
        mu = s * (0.5 + 1.0 * above)
        expected = multiplicative(state.abundances, num + mu * a, den + mu * state.abundances)
    torch.testing.assert_close(got.abundances, expected, rtol=1e-5, atol=1e-7)
    assert (got.abundances >= 0).all()
    record = parts()
    torch.testing.assert_close(torch.as_tensor(record["learned"]["prior_weight"]), torch.tensor([0.5, 1.0]))
    assert record["plain"]["prior_weight"].tolist() == [0.0, 0.0]
    assert record["learned_doc"]["prior_weight"] == LAYER_DOC["prior_weight"]
    assert float(record["learned"]["prior_threshold"]) == pytest.approx(1.5)


def test_prior_pulls_abundances_towards_the_colour_guided_target(start):
    """A strong prior moves H_m towards A in one layer (the MSI leaves most abundance directions free at 3
    bands); a negligible one hardly does."""
    state, data, _ = start
    _, net = _pair(1)
    with torch.no_grad():
        net.prior.noise.zero_()
        a = transfer(data.degrade(state.abundances).clamp_min(0), data.neighbours).clamp_min(0)
        before = (state.abundances - a).abs().mean()
        distances = {}
        for mu in (1e-3, 10.0):
            net.prior.log_weight.fill_(torch.tensor(mu).log())
            hook, _, _ = net.layer(0, data, frozenset({"prior"}))
            out = coupled_step(state, data, hook)
            distances[mu] = float((out.abundances - a).abs().mean())
    print(f"\nmean |H_m - A|: start {float(before):.5f}, one layer with mu 1e-3 {distances[1e-3]:.5f}, "
          f"with mu 10 {distances[10.0]:.5f}")
    assert distances[10.0] < 0.7 * float(before)
    assert distances[10.0] < 0.7 * distances[1e-3]


def test_prior_weights_get_a_gradient_and_read_the_noise(start):
    """Training can move every learned number of the prior; noise-aware, its weights depend on the sensor features."""
    state, data, truth = start
    _, net = _pair(2)
    net.train()
    loss = fused_loss(net.finish(net(state, data), data), truth)
    loss.backward()
    for name in ("log_weight", "log_threshold", "noise"):
        grad = getattr(net.prior, name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    with torch.no_grad():
        net.prior.noise.fill_(0.5)
        w1, _ = net.prior.weights(0, data)
        noisy = type(data)(**{**data.__dict__, "sensor_features": data.sensor_features + 1.0})
        w2, _ = net.prior.weights(0, noisy)
    assert (w2 > w1).all()


def test_cli_trains_and_loads_a_network_with_the_prior(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "scalmu", "--out", str(out), "--abundance-prior", "--fixed-steps", "--epochs", "1",
                 "--layers", "2", "--train-batches", "2", "--val-batches", "1", "--size", "32",
                 "--init-iterations", "10", "--quiet"]) == 0
    net, ckpt = load_model(out / "scalmu.pt")
    assert net.prior is not None and ckpt["config"]["model"]["abundance_prior"] is True
    assert net.parts[-1] == "prior"


def test_ratio_aware_prior_reads_the_ratio(start):
    """A ratio-aware prior's weights move with log2(ratio) / 5 (0 at initialisation: the same as without)."""
    state, data, _ = start
    net = SCALMUNet(2, 8, noise_aware=True, abundance_prior=True, prior_ratio=True)
    plain = SCALMUNet(2, 8, noise_aware=True, abundance_prior=True)
    with torch.no_grad():
        torch.testing.assert_close(net.prior.weights(0, data)[0], plain.prior.weights(0, data)[0])
        net.prior.ratio.fill_(1.0)
        at4 = net.prior.weights(0, data)[0]  # the fixture is at x4
        coarse = type(data)(**{**data.__dict__, "lr_hsi": data.lr_hsi[..., :16]})  # 4x fewer LR pixels: x8
        at8 = net.prior.weights(0, coarse)[0]
    base = plain.prior.weights(0, data)[0]
    torch.testing.assert_close(at4, base * torch.exp(torch.tensor(2 / 5)))
    torch.testing.assert_close(at8, base * torch.exp(torch.tensor(3 / 5)))


def test_large_training_items_hold_the_x32_protocol():
    """``large_every``: every N-th zoo item is a 128-px scene at x32 (4x4 LR pixels), the others 64-px at 4-16."""
    from fusion_explorer.methods.scalmu.train import TrainConfig, zoo_item

    cfg = TrainConfig(large_every=2, init_iterations=5)
    _, small_data, small_truth = zoo_item(0, 0, cfg)
    _, large_data, large_truth = zoo_item(0, 1, cfg)
    assert small_truth.shape[-1] == 64 * 64 and large_truth.shape[-1] == 128 * 128
    assert large_data.lr_hsi.shape[-1] == 4 * 4
    assert small_data.lr_hsi.shape[-1] in (16 * 16, 8 * 8, 4 * 4)
    with pytest.raises(ValueError, match="large_every"):
        TrainConfig(large_every=-1)


def test_training_scenes_can_hold_more_materials():
    """``max_endmembers``: the zoo items' material count is drawn in 3..N; the default (10) draws what it always
    drew (the shipped model's items are unchanged)."""
    import numpy as np

    from fusion_explorer.methods.scalmu.train import TrainConfig
    from fusion_explorer.synth import random_scene_options

    default = [random_scene_options(np.random.default_rng(s), 64)["n_endmembers"] for s in range(40)]
    explicit = [random_scene_options(np.random.default_rng(s), 64, 10)["n_endmembers"] for s in range(40)]
    more = [random_scene_options(np.random.default_rng(s), 64, 30)["n_endmembers"] for s in range(40)]
    assert default == explicit and min(default) >= 3 and max(default) <= 10
    assert max(more) > 10 and min(more) >= 3 and max(more) <= 30
    with pytest.raises(ValueError, match="max_endmembers"):
        TrainConfig(max_endmembers=2)
