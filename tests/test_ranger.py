"""Ranger (RAdam + Lookahead + gradient centralization): hand-computed steps, lookahead, GC, convergence, resume."""

from __future__ import annotations

import io
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from triplanenet.errors import CheckpointError, ConfigError
from triplanenet.train.ranger import Ranger

BETA1, BETA2, EPS = 0.95, 0.999, 1e-5


def _expected_adam_free(p0: list[float], grads: list[list[float]], lr: float) -> list[float]:
    """Reference values written from the formulas of the reference (§6.5), in Python floats, no lookahead, no GC."""
    p = list(p0)
    m = [0.0] * len(p)
    v = [0.0] * len(p)
    rho_inf = 2 / (1 - BETA2) - 1
    for t, g in enumerate(grads, start=1):
        for i, gi in enumerate(g):
            m[i] = BETA1 * m[i] + (1 - BETA1) * gi
            v[i] = BETA2 * v[i] + (1 - BETA2) * gi * gi
        rho_t = rho_inf - 2 * t * BETA2**t / (1 - BETA2**t)
        for i in range(len(p)):
            if rho_t > 5:
                r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
                # bias-corrected m̂ = m/(1−β1ᵗ), and sqrt(1−β2ᵗ)/(sqrt(v)+eps) (the uncorrected v)
                p[i] -= lr * r * (m[i] / (1 - BETA1**t)) * math.sqrt(1 - BETA2**t) / (math.sqrt(v[i]) + EPS)
            else:
                p[i] -= lr * m[i] / (1 - BETA1**t)
    return p


def _run(opt: Ranger, param: torch.Tensor, grads: list[list[float]] | torch.Tensor) -> None:
    for g in grads:
        param.grad = torch.as_tensor(g, dtype=param.dtype).reshape(param.shape).clone()
        opt.step()


def test_first_step_is_plain_sgd_on_the_gradient() -> None:
    # Step 1: ρ_1 = 1 ≤ 5, so p₁ = p₀ − lr·m₁/(1−β1) = p₀ − lr·g exactly.
    p = torch.tensor([0.5, -2.0], dtype=torch.float64, requires_grad=True)
    opt = Ranger([p], lr=0.1)
    _run(opt, p, [[0.3, -1.2]])
    expected = [0.5 - 0.1 * 0.3, -2.0 - 0.1 * -1.2]
    torch.testing.assert_close(p.detach(), torch.tensor(expected, dtype=torch.float64), rtol=1e-14, atol=1e-15)
    state = opt.state[p]
    assert state["step"] == 1
    torch.testing.assert_close(state["exp_avg"], torch.tensor([0.05 * 0.3, 0.05 * -1.2], dtype=torch.float64))
    torch.testing.assert_close(state["exp_avg_sq"], torch.tensor([0.001 * 0.09, 0.001 * 1.44], dtype=torch.float64))


def test_steps_before_and_after_the_sma_threshold() -> None:
    # ρ_5 ≈ 4.996 (momentum step), ρ_6 ≈ 5.994 (first rectified step), ρ_8 ≈ 7.99.
    grads = [[0.3, -1.2], [0.1, -0.7], [-0.4, 0.2], [0.25, 0.9], [0.6, -0.3], [-0.2, 0.5], [0.05, -0.05], [1.0, 2.0]]
    p0 = [0.5, -2.0]
    p = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    opt = Ranger([p], lr=0.01, k=1000)  # no lookahead inside the window
    for n in range(1, len(grads) + 1):
        _run(opt, p, [grads[n - 1]])
        expected = torch.tensor(_expected_adam_free(p0, grads[:n], 0.01), dtype=torch.float64)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-14, msg=f"step {n}")
    # the rectified branch really was taken: the radam cache holds ρ_6 > 5 with its step size
    step6 = opt.radam_buffer[6]
    assert step6[0] == 6 and 5.99 < step6[1] < 6.0
    assert opt.radam_buffer[5][1] < 5


def test_rectified_step_divides_by_uncorrected_sqrt_v() -> None:
    # A constant gradient g: m_t = g(1−β1ᵗ), v_t = g²(1−β2ᵗ). At step 6 the update is
    # lr·r_6·sqrt(1−β2⁶)·g/(|g|·sqrt(1−β2⁶) + eps) (eps is added to the uncorrected sqrt(v)).
    g = 2.0
    p = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    opt = Ranger([p], lr=0.01, k=1000)
    _run(opt, p, [[g, g]] * 5)
    before = p.detach().clone()
    _run(opt, p, [[g, g]])
    rho_inf = 2 / (1 - BETA2) - 1
    rho6 = rho_inf - 12 * BETA2**6 / (1 - BETA2**6)
    r6 = math.sqrt((rho6 - 4) * (rho6 - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho6))
    sqrt_v = abs(g) * math.sqrt(1 - BETA2**6)
    step = 0.01 * r6 * math.sqrt(1 - BETA2**6) * g / (sqrt_v + EPS)
    torch.testing.assert_close(before - p.detach(), torch.full((2,), step, dtype=torch.float64), rtol=1e-12, atol=0)


def test_weight_decay_is_applied_before_the_update() -> None:
    p = torch.tensor([2.0, -4.0], dtype=torch.float64, requires_grad=True)
    opt = Ranger([p], lr=0.1, weight_decay=0.5)
    _run(opt, p, [[1.0, 1.0]])
    torch.testing.assert_close(p.detach(), torch.tensor([2.0 * 0.95 - 0.1, -4.0 * 0.95 - 0.1], dtype=torch.float64))


def test_lookahead_syncs_every_k_steps() -> None:
    torch.manual_seed(3)
    grads = torch.randn(13, 2, dtype=torch.float64)
    p0 = torch.tensor([0.7, -0.3], dtype=torch.float64)
    fast_p = p0.clone().requires_grad_(True)
    fast = Ranger([fast_p], lr=0.05, k=10**6)
    p = p0.clone().requires_grad_(True)
    opt = Ranger([p], lr=0.05, k=6, alpha=0.5)
    for step in range(1, 6):
        _run(fast, fast_p, grads[step - 1 : step])
        _run(opt, p, grads[step - 1 : step])
        assert torch.equal(p, fast_p)  # no lookahead yet: identical to the plain RAdam run
        assert torch.equal(opt.state[p]["slow_buffer"], p0)  # slow weights = the initial weights
    _run(fast, fast_p, grads[5:6])
    _run(opt, p, grads[5:6])
    expected = p0 + 0.5 * (fast_p.detach() - p0)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-15, atol=1e-16)
    assert torch.equal(opt.state[p]["slow_buffer"], p.detach())
    # the second sync (step 12) moves halfway from the step-6 slow weights to the fast weights of step 12
    slow6 = p.detach().clone()
    for step in range(7, 13):
        _run(opt, p, grads[step - 1 : step])
        if step < 12:
            assert torch.equal(opt.state[p]["slow_buffer"], slow6)
    assert torch.equal(opt.state[p]["slow_buffer"], p.detach())
    assert not torch.equal(p.detach(), slow6)


def test_gradient_centralization_on_matrices_only() -> None:
    torch.manual_seed(0)
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    gw = torch.randn(3, 4, dtype=torch.float64) + torch.tensor([[5.0], [-3.0], [1.0]], dtype=torch.float64)
    gb = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    w0, b0 = w.detach().clone(), b.detach().clone()
    opt = Ranger([w, b], lr=0.1)
    w.grad, b.grad = gw.clone(), gb.clone()
    opt.step()
    # first step = lr·g with g centralised for the matrix (row means removed), untouched for the bias
    delta_w = w0 - w.detach()
    torch.testing.assert_close(delta_w, 0.1 * (gw - gw.mean(dim=1, keepdim=True)), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(delta_w.mean(dim=1), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(b0 - b.detach(), 0.1 * gb, rtol=1e-13, atol=1e-15)
    assert torch.equal(w.grad, gw)  # p.grad is not modified


def test_gc_off_and_conv_only() -> None:
    torch.manual_seed(1)
    w = torch.randn(3, 4, dtype=torch.float64)
    conv = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    gw = torch.randn_like(w) + 2.0
    gconv = torch.randn_like(conv) + 2.0
    for use_gc, conv_only, w_centred, conv_centred in ((False, False, False, False), (True, True, False, True)):
        pw, pc = w.clone().requires_grad_(True), conv.clone().requires_grad_(True)
        opt = Ranger([pw, pc], lr=1.0, use_gc=use_gc, gc_conv_only=conv_only)
        pw.grad, pc.grad = gw.clone(), gconv.clone()
        opt.step()
        want_w = gw - gw.mean(dim=1, keepdim=True) if w_centred else gw
        want_c = gconv - gconv.mean(dim=(1, 2, 3), keepdim=True) if conv_centred else gconv
        torch.testing.assert_close(w - pw.detach(), want_w)
        torch.testing.assert_close(conv - pc.detach(), want_c)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 5), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_gc_update_has_zero_mean_per_output(rows: int, cols: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    p = torch.randn(rows, cols, 3, dtype=torch.float64, generator=gen).requires_grad_(True)
    before = p.detach().clone()
    opt = Ranger([p], lr=0.01)
    for step in range(1, 9):  # crosses the rectification threshold and a lookahead sync
        p.grad = torch.randn(rows, cols, 3, dtype=torch.float64, generator=gen) * 3 + 1
        opt.step()
        # the momentum is a sum of centralised gradients: zero mean over dims 1.. for every output
        torch.testing.assert_close(
            opt.state[p]["exp_avg"].mean(dim=(1, 2)), torch.zeros(rows, dtype=torch.float64), rtol=0, atol=1e-14
        )
        if step <= 5:  # momentum steps move p along m, so the weights' means stay put
            torch.testing.assert_close(p.detach().mean(dim=(1, 2)), before.mean(dim=(1, 2)), rtol=0, atol=1e-12)


def test_converges_on_a_quadratic() -> None:
    torch.manual_seed(0)
    target = torch.tensor([1.5, -2.0, 0.25, 3.0])
    scales = torch.tensor([1.0, 10.0, 0.5, 3.0])
    x = torch.zeros(4, requires_grad=True)
    opt = Ranger([x], lr=0.1)
    start = float((0.5 * scales * target**2).sum())
    for _ in range(600):
        opt.zero_grad()
        loss = (0.5 * scales * (x - target) ** 2).sum()
        loss.backward()
        opt.step()
    final = float((0.5 * scales * (x.detach() - target) ** 2).sum())
    assert final < 1e-8 * start
    torch.testing.assert_close(x.detach(), target, rtol=0, atol=1e-3)


def test_closure_is_evaluated_and_returned() -> None:
    x = torch.tensor([1.0], requires_grad=True)
    opt = Ranger([x], lr=0.1)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (x**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert float(loss.detach()) == 1.0
    assert x.detach().item() == pytest.approx(1.0 - 0.1 * 2.0)


def _model() -> torch.nn.Module:
    torch.manual_seed(7)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.PReLU(), torch.nn.Flatten(), torch.nn.Linear(12, 1))


def _train(model: torch.nn.Module, opt: Ranger, steps: range) -> None:
    for step in steps:
        gen = torch.Generator().manual_seed(1000 + step)
        x = torch.randn(4, 2, 4, 4, generator=gen)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


@pytest.mark.parametrize("drop_cache", [False, True])
def test_state_dict_round_trip_continues_bit_identically(drop_cache: bool) -> None:
    reference = _model()
    ref_opt = Ranger(reference.parameters(), lr=1e-2)
    _train(reference, ref_opt, range(8))  # past the first lookahead sync; slow != fast at step 8

    buffer = io.BytesIO()
    torch.save({"model": reference.state_dict(), "opt": ref_opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    if drop_cache:  # official Ranger checkpoints have no radam_buffer
        del saved["opt"]["radam_buffer"]

    resumed = _model()
    resumed.load_state_dict(saved["model"])
    res_opt = Ranger(resumed.parameters(), lr=1e-2)
    res_opt.load_state_dict(saved["opt"])
    for p_ref, p_res in zip(reference.parameters(), resumed.parameters(), strict=True):
        assert not torch.equal(ref_opt.state[p_ref]["slow_buffer"], p_ref)
        for key in ("exp_avg", "exp_avg_sq", "slow_buffer"):
            assert torch.equal(ref_opt.state[p_ref][key], res_opt.state[p_res][key])
        assert res_opt.state[p_res]["step"] == 8

    _train(reference, ref_opt, range(8, 20))
    _train(resumed, res_opt, range(8, 20))
    for p_ref, p_res in zip(reference.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p_ref, p_res)
    assert res_opt.state_dict()["radam_buffer"] == ref_opt.state_dict()["radam_buffer"]


def test_loading_a_live_state_dict_does_not_share_buffers() -> None:
    first = _model()
    opt1 = Ranger(first.parameters(), lr=1e-2)
    _train(first, opt1, range(9))
    second = _model()
    second.load_state_dict(first.state_dict())
    opt2 = Ranger(second.parameters(), lr=1e-2)
    opt2.load_state_dict(opt1.state_dict())  # no torch.save in between: the tensors are opt1's own
    _train(first, opt1, range(9, 20))  # crosses the lookahead sync at step 12
    _train(second, opt2, range(9, 20))
    for p1, p2 in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(p1, p2)
        assert opt1.state[p1]["slow_buffer"].data_ptr() != opt2.state[p2]["slow_buffer"].data_ptr()


def test_low_precision_params_keep_float32_moments() -> None:
    p = torch.tensor([1.0, 2.0], dtype=torch.bfloat16, requires_grad=True)
    opt = Ranger([p], lr=0.1)
    p.grad = torch.tensor([1.0, -1.0], dtype=torch.bfloat16)
    opt.step()
    assert opt.state[p]["exp_avg"].dtype == torch.float32
    assert opt.state[p]["slow_buffer"].dtype == torch.bfloat16
    assert p.dtype == torch.bfloat16
    torch.testing.assert_close(p.detach().float(), torch.tensor([0.9, 2.1]), rtol=1e-2, atol=1e-2)
    other = Ranger([p], lr=0.1)
    other.load_state_dict(opt.state_dict())
    assert other.state[p]["exp_avg"].dtype == torch.float32


def test_params_without_grad_are_skipped() -> None:
    a = torch.tensor([1.0], requires_grad=True)
    b = torch.tensor([2.0], requires_grad=True)
    opt = Ranger([a, b], lr=0.1)
    a.grad = torch.tensor([1.0])
    opt.step()
    assert b.item() == 2.0 and len(opt.state[b]) == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"lr": 0.0}, {"alpha": 1.5}, {"k": 0}, {"k": 2.5}, {"eps": 0.0}, {"betas": (0.9, 1.0)}, {"weight_decay": -1}],
)
def test_bad_hyperparameters(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="Ranger"):
        Ranger([torch.zeros(1, requires_grad=True)], **kwargs)


def test_malformed_radam_buffer() -> None:
    p = torch.zeros(1, requires_grad=True)
    opt = Ranger([p])
    state = opt.state_dict()
    state["radam_buffer"] = [[1, 2]]
    with pytest.raises(CheckpointError, match="radam_buffer"):
        opt.load_state_dict(state)
