"""Quantizers: values on the right grid, and gradients equal to the closed forms of methods.md."""
import math

import numpy as np
import pytest
import torch

from qexport.quant import ACT_QUANTIZERS, WEIGHT_QUANTIZERS, QuantConfig
from qexport.spec import reference as R


def _act(kind, bits, channels, signed, step):
    q = ACT_QUANTIZERS[kind](bits, channels, signed=signed)
    with torch.no_grad():
        q.step.fill_(step)
    q.initialized.fill_(True)
    return q


@pytest.mark.parametrize("bits,signed", [(2, False), (3, False), (4, True), (8, True)])
def test_lsq_activation_gradient_closed_form(bits, signed):
    torch.manual_seed(bits)
    q = _act("lsq", bits, 6, signed, 0.21)
    x = (torch.randn(5, 6, 4, 4) * 2).requires_grad_()
    upstream = torch.randn(5, 6, 4, 4)
    (q(x) * upstream).sum().backward()
    lo, hi = R.act_range(bits, signed)
    v = x.detach() / 0.21
    inside = (v >= lo) & (v <= hi)
    g = 1 / math.sqrt(6 * 16 * hi)
    local = torch.where(inside, torch.round(v) - v, torch.clamp(v, lo, hi).round())
    assert torch.allclose(q.step.grad, (upstream * local).sum() * g, rtol=1e-4)
    assert torch.allclose(x.grad, torch.where(inside, upstream, torch.zeros_like(upstream)), rtol=1e-6, atol=0)


def test_lsq_activation_codes_match_reference():
    torch.manual_seed(0)
    q = _act("lsq", 4, 3, False, 0.173)
    x = torch.relu(torch.randn(7, 3, 5, 5))
    codes, scale = R.lsq_quantize(x.numpy(), 0.173, 4, False)
    assert torch.equal(q(x), torch.from_numpy(codes.astype(np.float32)) * torch.tensor(np.float32(0.173)))


def test_asq_starts_near_beta_one_and_gradients_follow_chain_rule():
    torch.manual_seed(1)
    q = _act("asq", 3, 8, False, 0.3)
    x = torch.relu(torch.randn(4, 8, 5, 5)).requires_grad_()
    # The authors' initialisation: last layer N(0, 0.01) weights and bias 1, so beta is near 1.
    assert torch.allclose(q.factor(x), torch.ones(4), atol=0.05)
    assert float(q.fc2.bias.detach()) == 1.0
    with torch.no_grad():  # move the adapter off its initial point so that beta varies per sample
        q.fc2.weight.normal_()
        q.fc2.bias.fill_(1.5)
        q.fc1.weight.mul_(4)
    upstream = torch.randn(4, 8, 5, 5)
    (q(x) * upstream).sum().backward()

    beta = q.factor(x).detach()
    assert beta.std() > 0.01 and bool((beta > 0.1).all())
    s_prime = 0.3 * beta
    lo, hi = R.act_range(3, False)
    v = x.detach() / s_prime[:, None, None, None]
    local = torch.where((v >= lo) & (v <= hi), torch.round(v) - v, torch.clamp(v, lo, hi).round())
    g = 1 / math.sqrt(8 * 25 * hi)
    d_sprime = (upstream * local).sum(dim=(1, 2, 3))  # LSQ rule for s' of each sample
    assert torch.allclose(q.step.grad, (d_sprime * beta).sum() * g, rtol=1e-4)
    # dL/dbeta_n = dL/ds'_n * s, NOT scaled by g (the authors' code); beta = relu(z) > 0: dbeta/dz = 1
    z_grad = d_sprime * 0.3
    assert torch.allclose(q.fc2.bias.grad, z_grad.sum().reshape(1), rtol=1e-4, atol=1e-7)


def test_asq_adapter_is_bounded_and_groups_channels():
    from qexport.quant.asq import adapter_shape
    assert adapter_shape(32) == (32, 8)  # the authors' C/4 on small layers
    assert adapter_shape(25088) == (64, 16)  # a VGG classifier input: 1,057 parameters, not 39 M
    q = _act("asq", 4, 25088, False, 0.1)
    assert sum(p.numel() for p in q.parameters()) < 1200
    x = torch.rand(3, 25088)
    params = q.deploy_params()
    assert params["groups"] == 64 and params["w1"].shape == (16, 64)
    ref = R.asq_scale(x.numpy(), params["w1"], params["b1"], params["w2"], params["b2"], params["step"], "relu", 64)
    got = (q.factor(x) * params["step"]).detach().numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5)


@pytest.mark.parametrize("fmt,bits", [("post", 2), ("post", 3), ("post", 4), ("pot", 3), ("pot", 4), ("uniform", 3), ("uniform", 8)])
def test_weight_quantizer_grid_and_integer_form(fmt, bits):
    torch.manual_seed(bits)
    q = WEIGHT_QUANTIZERS[fmt](bits, 5)
    w = torch.randn(5, 3, 3, 3)
    w_hat = q(w)
    w_int, w_scale = q.integer_weights(w)
    values, valid = R.weight_lut(fmt, bits)
    assert set(np.unique(w_int)) <= set(values[valid].tolist())
    assert np.allclose(w_int * w_scale[:, None, None, None], w_hat.detach().numpy(), rtol=1e-6, atol=1e-7)
    if fmt == "post":  # levels are alpha * T[e] / 64
        mags = np.unique(np.abs(w_hat.detach().numpy()) / q.alpha.detach().numpy()[:, None, None, None])
        allowed = np.concatenate([[0.0], R.post_table(bits) / 64.0])
        assert all(np.isclose(m, allowed, atol=1e-6).any() for m in mags)


@pytest.mark.parametrize("fmt,bits", [("post", 4), ("pot", 3), ("post", 3)])
def test_alpha_gradient_is_lsq_rule(fmt, bits):
    torch.manual_seed(3)
    q = WEIGHT_QUANTIZERS[fmt](bits, 4)
    w = torch.randn(4, 10, requires_grad=True)
    q.init_from(w)
    upstream = torch.randn(4, 10)
    (q(w) * upstream).sum().backward()
    alpha = q.alpha.detach()[:, None]
    v = w.detach() / alpha
    level, _ = q.project(torch.clamp(v, -1, 1), bits)
    inside = v.abs() <= 1
    local = torch.where(inside, level - v, level)  # outside: the clipped level, +-1
    g = 1 / math.sqrt(10 * q.qmax(bits))
    assert torch.allclose(q.alpha.grad, (upstream * local).sum(1) * g, rtol=1e-4, atol=1e-6)
    assert torch.allclose(w.grad, torch.where(inside, upstream, torch.zeros_like(upstream)), rtol=1e-6, atol=0)


def test_post_projection_is_nearest_level():
    q = WEIGHT_QUANTIZERS["post"](4, 1)
    levels = np.concatenate([[0.0], R.post_table(4) / 64.0])
    v = torch.linspace(-1, 1, 2001)
    level, w_int = q.project(v, 4)
    nearest = levels[np.abs(np.abs(v.numpy())[:, None] - levels[None, :]).argmin(1)]
    assert np.allclose(np.abs(level.numpy()), nearest)
    assert np.array_equal(np.abs(w_int.numpy()), (nearest * 64).round().astype(int))


def test_quant_config_validation_messages():
    with pytest.raises(ValueError, match="POT/POST are defined for 2..4 bits"):
        QuantConfig("asq+post", bits=5)
    with pytest.raises(ValueError, match="unknown method"):
        QuantConfig("foo", bits=4)
    with pytest.raises(ValueError, match="weights must be 'pot', 'post', 'perparam' or 'perparam_post'"):
        QuantConfig("asq+apot", bits=4)
    assert QuantConfig.from_dict(QuantConfig("lsq+pot", 3).to_dict()) == QuantConfig("lsq+pot", 3)


# ---------------------------------------------------------------- finite differences (float64)
def _fd(f, t: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Central differences of the scalar f() with respect to every entry of t (modified in place)."""
    grad = torch.zeros_like(t)
    flat, gflat = t.data.view(-1), grad.view(-1)
    for i in range(flat.numel()):
        old = float(flat[i])
        flat[i] = old + eps
        hi = float(f().detach())
        flat[i] = old - eps
        lo = float(f().detach())
        flat[i] = old
        gflat[i] = (hi - lo) / (2 * eps)
    return grad


def test_asq_adapter_gradients_match_finite_differences():
    # The adapter is the smooth part of ASQ: beta = 2 sigmoid(fc2(relu(fc1(mean(x))))). Its
    # autograd gradients w.r.t. every adapter parameter and the input equal central differences.
    torch.manual_seed(4)
    q = _act("asq", 3, 16, False, 0.3).double()
    with torch.no_grad():
        q.fc2.weight.normal_()
        q.fc2.bias.fill_(-0.2)
    x = torch.relu(torch.randn(3, 16, 4, 4, dtype=torch.float64)).requires_grad_()
    weights = torch.randn(3, dtype=torch.float64)
    f = lambda: (q.factor(x) * weights).sum()  # noqa: E731
    f().backward()
    for p in (q.fc1.weight, q.fc1.bias, q.fc2.weight, q.fc2.bias):
        assert torch.allclose(p.grad, _fd(f, p), rtol=1e-5, atol=1e-8)
    assert torch.allclose(x.grad, _fd(f, x), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("kind", ["lsq", "asq"])
def test_step_gradient_is_the_derivative_of_the_ste_surrogate(kind):
    # With the STE, the quantizer's gradient is the exact derivative of the surrogate in which
    # round(v) - v is frozen at its current value: x_hat(s) = (clamp(x/s') + c) s', s' = s beta.
    # Check d/ds and d/d(adapter) against central differences of that surrogate, times LSQ's g.
    torch.manual_seed(5)
    bits, signed = 3, False
    q = _act(kind, bits, 6, signed, 0.25).double()
    if kind == "asq":
        with torch.no_grad():
            q.fc2.weight.normal_()
    x = torch.relu(torch.randn(4, 6, 3, 3, dtype=torch.float64) * 1.5)
    upstream = torch.randn_like(x)
    (q(x) * upstream).sum().backward()
    lo, hi = R.act_range(bits, signed)
    g = 1 / math.sqrt(6 * 9 * hi)
    with torch.no_grad():
        beta0 = q.factor(x) if kind == "asq" else torch.ones(4, dtype=torch.float64)
        v0 = torch.clamp(x / (q.step * beta0).reshape(-1, 1, 1, 1), lo, hi)
        c = torch.round(v0) - v0

    def surrogate():
        with torch.no_grad():
            beta = q.factor(x) if kind == "asq" else torch.ones(4, dtype=torch.float64)
            s = (q.step * beta).reshape(-1, 1, 1, 1)
            return ((torch.clamp(x / s, lo, hi) + c) * s * upstream).sum()

    assert float(q.step.grad) == pytest.approx(g * float(_fd(surrogate, q.step)), rel=1e-5)
    if kind == "asq":  # the adapter's gradient is NOT scaled by g (the authors' code; docs/design.md)
        assert torch.allclose(q.fc2.weight.grad, _fd(surrogate, q.fc2.weight), rtol=1e-5, atol=1e-9)
        assert torch.allclose(q.fc1.weight.grad, _fd(surrogate, q.fc1.weight), rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("fmt,bits", [("post", 3), ("pot", 4), ("uniform", 4)])
def test_weight_scale_gradient_is_the_derivative_of_the_ste_surrogate(fmt, bits):
    torch.manual_seed(6)
    q = WEIGHT_QUANTIZERS[fmt](bits, 3).double()
    w = torch.randn(3, 12, dtype=torch.float64)
    q.init_from(w)
    with torch.no_grad():  # no weight exactly on the clipping point, where clamp has a kink
        q.param.mul_(0.93)
    upstream = torch.randn_like(w)
    (q(w) * upstream).sum().backward()
    lo, hi = q.clamp_range(bits)
    with torch.no_grad():
        v0 = torch.clamp(w / q.param[:, None], lo, hi)
        c = q.project(v0, bits)[0] - v0

    def surrogate():
        with torch.no_grad():
            s = q.param[:, None]
            return ((torch.clamp(w / s, lo, hi) + c) * s * upstream).sum()

    assert torch.allclose(q.param.grad, q.grad_factor(w, bits) * _fd(surrogate, q.param), rtol=1e-5, atol=1e-9)


def test_gradient_scale_values():
    # LSQ's g = 1 / sqrt(N * Qp): N = features per sample (activations) or weights per output
    # channel (per-channel weight scales); Qp = 2^b - 1 unsigned, 2^(b-1) - 1 signed, M for POT/POST.
    assert WEIGHT_QUANTIZERS["post"](4, 2).grad_factor(torch.zeros(2, 3, 3, 3), 4) == pytest.approx(1 / math.sqrt(27 * 7))
    assert WEIGHT_QUANTIZERS["uniform"](2, 2).grad_factor(torch.zeros(2, 8), 2) == pytest.approx(1 / math.sqrt(8 * 1))
    assert WEIGHT_QUANTIZERS["pot"](3, 2).grad_factor(torch.zeros(2, 8), 3) == pytest.approx(1 / math.sqrt(8 * 3))


@pytest.mark.parametrize("fmt", ["uniform", "pot", "post"])
def test_weight_cache_without_gradients_follows_every_change(fmt):
    """No-grad forwards reuse the quantized weight; any change to what it depends on is seen."""
    torch.manual_seed(0)
    q = WEIGHT_QUANTIZERS[fmt](3, 4)
    w = torch.nn.Parameter(torch.randn(4, 8))
    q.init_from(w)
    with torch.no_grad():
        first = q(w)
        assert q(w) is first  # cached
        w.mul_(0.5)  # the latent weight, in place
        second = q(w)
        assert not torch.equal(second, first)
        assert torch.equal(second, q._forward(w))
        q.param.mul_(2.0)  # the scale, in place
        assert torch.equal(q(w), q._forward(w)) and not torch.equal(q(w), second)
        other = torch.randn(4, 8)  # another tensor
        assert torch.equal(q(other), q._forward(other))
    grad_out = q(w)  # with gradients: never the cached tensor
    assert grad_out.requires_grad and grad_out is not q._cached
