"""Tests of asr_kd.distill.smoothing (teacher-side smoothing)."""

import math

import pytest
import torch

from asr_kd.distill import DEFAULT_ALPHA_MIN, smooth_teacher, smooth_teacher_with_stats


def _entropy(log_p: torch.Tensor) -> torch.Tensor:
    p = log_p.exp()
    return -(p * torch.where(p > 0, log_p, torch.zeros_like(log_p))).sum(-1)


def _mixed_logits(n: int, vocab: int, dtype=torch.float32) -> torch.Tensor:
    """Rows ranging from nearly flat to extremely peaked (log-normal scales)."""
    scale = torch.exp(torch.randn(n, 1, dtype=torch.float64) * 1.5)
    z = torch.randn(n, vocab, dtype=torch.float64) * scale
    z[:, 0] += 3.0 * scale.squeeze(1)  # a dominant entry, like blank
    return z.to(dtype)


def test_none_is_log_softmax():
    z = torch.randn(3, 4, 11)
    assert torch.equal(smooth_teacher(z, "none"), torch.log_softmax(z, -1))


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0, 7.5])
def test_temperature_is_log_softmax_of_scaled_logits(tau):
    z = torch.randn(2, 5, 3, 13) * 4
    got = smooth_teacher(z, "temperature", temperature=tau)
    torch.testing.assert_close(got, torch.log_softmax(z / tau, -1), rtol=0, atol=1e-6)
    _, stats = smooth_teacher_with_stats(z, "temperature", temperature=tau)
    assert torch.allclose(stats.alpha, torch.full_like(stats.alpha, 1 / tau))


def test_output_is_detached_and_float32_for_half_input():
    z = torch.randn(4, 9, requires_grad=True)
    before = z.detach().clone()
    out = smooth_teacher(z, "adaptive-power", target_entropy=1.0)
    assert not out.requires_grad
    assert torch.equal(z.detach(), before)  # the input is never modified in place
    half = smooth_teacher(z.detach().half(), "adaptive-power", target_entropy=1.0)
    assert half.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("vocab,target", [(5, 0.3), (50, 1.0), (500, 0.5), (500, 3.0)])
@pytest.mark.parametrize("alpha_min", [DEFAULT_ALPHA_MIN, 0.02])
def test_adaptive_power_properties(dtype, vocab, target, alpha_min):
    z = _mixed_logits(300, vocab, dtype).view(3, 100, vocab)
    log_q, st = smooth_teacher_with_stats(z, "adaptive-power", target_entropy=target, alpha_min=alpha_min)
    log_p = torch.log_softmax(z, -1)
    assert log_q.shape == z.shape and log_q.dtype == dtype
    # Normalised.
    torch.testing.assert_close(log_q.exp().sum(-1), torch.ones(3, 100, dtype=dtype), rtol=0, atol=1e-5)
    # alpha in [alpha_min, 1]; exactly 1 and q == p (bit for bit) at/above the target.
    assert bool((st.alpha >= alpha_min).all()) and bool((st.alpha <= 1).all())
    keep = st.entropy_before >= target
    sharp = ~keep
    assert keep.any() and sharp.any(), "test data should cover both cases"
    assert bool((st.alpha[keep] == 1).all())
    assert torch.equal(log_q[keep], log_p[keep])
    # Reaches the target elsewhere (to 1e-4 nats) unless clamped at alpha_min.
    h_q = _entropy(log_q.double())
    solved = sharp & ~st.at_alpha_min
    assert float((h_q[solved] - target).abs().max()) < 1e-4
    clamped = st.at_alpha_min
    assert bool((st.alpha[clamped] == alpha_min).all())
    assert bool((h_q[clamped] <= target + 1e-5).all())
    assert not bool((clamped & keep).any())
    # Smoothing never sharpens.
    assert bool((h_q >= _entropy(log_p.double()) - 1e-5).all())
    # Exactly a power transform: log q - alpha * log p is constant over V per node.
    resid = log_q - st.alpha.unsqueeze(-1) * log_p
    spread = resid.max(-1).values - resid.min(-1).values
    assert float(spread.max()) < (1e-4 if dtype == torch.float32 else 1e-9)
    # Stats agree with the output.
    torch.testing.assert_close(st.entropy_after.double(), h_q, rtol=0, atol=1e-4)


@pytest.mark.parametrize("target_share", [0.3, 0.7])
def test_adaptive_power_converges_on_spikes_over_flat_tails(target_share):
    """A dominant entry over a nearly flat tail makes H(alpha) a steep sigmoid:
    the hardest case for the Newton iteration (needs the bracket fallbacks)."""
    g = torch.Generator().manual_seed(3)
    n, vocab = 256, 900
    z = torch.randn(n, vocab, generator=g) * torch.rand(n, 1, generator=g) * 4
    z[torch.arange(n), torch.randint(0, vocab, (n,), generator=g)] += torch.rand(n, generator=g) * 60
    target = target_share * math.log(vocab)
    log_q, st = smooth_teacher_with_stats(z, "adaptive-power", target_entropy=target, alpha_min=0.05)
    solved = (st.entropy_before < target) & ~st.at_alpha_min
    assert solved.sum() > n // 2
    h_q = _entropy(log_q.double())
    assert float((h_q[solved] - target).abs().max()) < 1e-4


def test_clamped_nodes_exist_for_very_sharp_teachers():
    z = torch.zeros(4, 100)
    z[:, 0] = 200.0  # needs alpha ~ 0.03 to reach 1 nat
    _, st = smooth_teacher_with_stats(z, "adaptive-power", target_entropy=1.0, alpha_min=0.1)
    assert bool(st.at_alpha_min.all())
    assert torch.allclose(st.alpha, torch.full_like(st.alpha, 0.1))


def test_all_nodes_above_target_is_identity():
    z = torch.randn(6, 40) * 0.1  # nearly uniform: H close to log 40
    assert torch.equal(smooth_teacher(z, "adaptive-power", target_entropy=1.0), torch.log_softmax(z, -1))


def test_minus_inf_logits_are_kept_at_zero_probability():
    z = torch.randn(8, 30) * 8
    z[:, 10:] = float("-inf")
    log_q, st = smooth_teacher_with_stats(z, "adaptive-power", target_entropy=1.5)
    assert torch.isfinite(st.alpha).all()
    assert bool((log_q[:, 10:] == float("-inf")).all())
    torch.testing.assert_close(log_q.exp().sum(-1), torch.ones(8), rtol=0, atol=1e-5)
    solved = (st.entropy_before < 1.5) & ~st.at_alpha_min
    assert float((st.entropy_after[solved] - 1.5).abs().max()) < 1e-4


def test_wrapper_matches_stats_version():
    z = _mixed_logits(64, 37)
    a = smooth_teacher(z, "adaptive-power", target_entropy=0.7, alpha_min=0.05)
    b, _ = smooth_teacher_with_stats(z, "adaptive-power", target_entropy=0.7, alpha_min=0.05)
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(method="adaptive-power"),  # no target
        dict(method="adaptive-power", target_entropy=0.0),
        dict(method="adaptive-power", target_entropy=math.log(10)),
        dict(method="adaptive-power", target_entropy=1.0, alpha_min=0.0),
        dict(method="adaptive-power", target_entropy=1.0, alpha_min=1.5),
        dict(method="none", temperature=2.0),
        dict(method="none", target_entropy=1.0),
        dict(method="temperature", temperature=0.0),
        dict(method="power"),
    ],
)
def test_bad_options_raise(kwargs):
    with pytest.raises(ValueError):
        smooth_teacher(torch.randn(2, 10), **kwargs)
