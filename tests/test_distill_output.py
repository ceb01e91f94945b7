"""Tests of asr_kd.distill.output_kd_loss (KL over the pruned lattice)."""

import math

import pytest
import torch

from asr_kd.distill import output_kd_loss, output_kd_loss_with_stats
from asr_kd.distill.output import _collapse

B, T, R, V = 3, 9, 4, 12
S_B = [5, 2, 0]  # includes an all-blank utterance
T_B = [9, 6, 4]

SETTINGS = [
    ("none", {}),
    ("temperature", {"temperature": 2.5}),
    ("adaptive-power", {"target_entropy": 0.8}),
    ("adaptive-power", {"target_entropy": 1.5, "alpha_min": 0.3}),
]


def _lattice(seed: int = 0, dtype=torch.float32, sharp: float = 3.0):
    """Random logits on monotone pruned ranges (k2 semantics) for B utterances."""
    g = torch.Generator().manual_seed(seed)
    s_max = max(S_B)
    ranges = torch.zeros(B, T, R, dtype=torch.int64)
    for b in range(B):
        top = max(s_max + 1 - R, 0)
        starts = torch.sort(torch.randint(0, top + 1, (T,), generator=g)).values
        starts[0] = 0
        ranges[b] = starts.unsqueeze(1) + torch.arange(R)
    boundary = torch.tensor([[0, 0, s, t] for s, t in zip(S_B, T_B)], dtype=torch.int64)
    student = (torch.randn(B, T, R, V, generator=g) * sharp).to(dtype)
    teacher = (torch.randn(B, T, R, V, generator=g) * sharp).to(dtype)
    teacher[..., 0] += sharp  # blank-dominant teacher, so adaptive-power has work to do
    symbols = torch.randint(1, V, (B, s_max), generator=g)
    return student, teacher, ranges, boundary, symbols


def _valid_mask(ranges, boundary):
    t_ok = torch.arange(ranges.shape[1]).unsqueeze(0) < boundary[:, 3:4]
    return t_ok.unsqueeze(-1) & (ranges <= boundary[:, 2].view(-1, 1, 1))


def _ref_alpha(log_p: torch.Tensor, target: float, alpha_min: float) -> float:
    """Independent float64 bisection for the adaptive power."""
    def ent(a):
        lq = torch.log_softmax(a * log_p, -1)
        return float(-(lq.exp() * lq).sum())

    if ent(1.0) >= target:
        return 1.0
    if ent(alpha_min) <= target:
        return alpha_min
    lo, hi = alpha_min, 1.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ent(mid) > target else (lo, mid)
    return 0.5 * (lo + hi)


def _reference(student, teacher, ranges, boundary, smoothing, opts, symbols=None, occupancy=None,
               distribution="full", blank_id=0):
    """Per-node loop in float64 with probabilities (not log-space tricks)."""
    out = torch.zeros(student.shape[0], dtype=torch.float64)
    tau = opts.get("temperature", 1.0) if smoothing == "temperature" else 1.0
    for b in range(student.shape[0]):
        s_b, t_b = int(boundary[b, 2]), int(boundary[b, 3])
        for t in range(t_b):
            for r in range(student.shape[2]):
                pos = int(ranges[b, t, r])
                if pos > s_b:
                    continue
                zt = teacher[b, t, r].double()
                zs = student[b, t, r].double()
                p = torch.softmax(zs / tau, -1)
                if smoothing == "adaptive-power":
                    log_pt = torch.log_softmax(zt, -1)
                    a = _ref_alpha(log_pt, opts["target_entropy"], opts.get("alpha_min", 0.1))
                    q = torch.softmax(a * log_pt, -1)
                else:
                    q = torch.softmax(zt / tau, -1)
                if distribution == "collapsed":
                    if pos < s_b:
                        y = int(symbols[b, pos])
                        q = torch.stack([q[blank_id], q[y], 1 - q[blank_id] - q[y]])
                        p = torch.stack([p[blank_id], p[y], 1 - p[blank_id] - p[y]])
                    else:
                        q = torch.stack([q[blank_id], torch.zeros((), dtype=q.dtype), 1 - q[blank_id]])
                        p = torch.stack([p[blank_id], torch.zeros((), dtype=p.dtype), 1 - p[blank_id]])
                keep = q > 0
                kl = float((q[keep] * (q[keep].log() - p[keep].log())).sum())
                w = float(occupancy[b, t, r]) if occupancy is not None else 1.0
                out[b] += tau * tau * w * kl
    return out


@pytest.mark.parametrize("distribution", ["full", "collapsed"])
@pytest.mark.parametrize("smoothing,opts", SETTINGS)
def test_matches_per_node_reference(smoothing, opts, distribution):
    student, teacher, ranges, boundary, symbols = _lattice(1)
    originals = [x.clone() for x in (student, teacher, ranges, boundary, symbols)]
    per_utt = output_kd_loss(student, teacher, ranges, boundary, smoothing=smoothing, reduction="none",
                             symbols=symbols, distribution=distribution, **opts)
    total = output_kd_loss(student, teacher, ranges, boundary, smoothing=smoothing,
                           symbols=symbols, distribution=distribution, **opts)
    ref = _reference(student, teacher, ranges, boundary, smoothing, opts, symbols, distribution=distribution)
    assert per_utt.shape == (B,) and total.dim() == 0
    for x, orig in zip((student, teacher, ranges, boundary, symbols), originals):
        assert torch.equal(x, orig)  # inputs are never modified in place
    torch.testing.assert_close(per_utt.double(), ref, rtol=2e-4, atol=2e-4)
    torch.testing.assert_close(total, per_utt.sum(), rtol=1e-6, atol=1e-5)
    # KL >= 0 everywhere.
    assert bool((per_utt >= 0).all())


@pytest.mark.parametrize("distribution", ["full", "collapsed"])
@pytest.mark.parametrize("smoothing,opts", [("none", {}), ("temperature", {"temperature": 3.0})])
def test_identical_logits_give_zero(smoothing, opts, distribution):
    student, _, ranges, boundary, symbols = _lattice(2)
    loss = output_kd_loss(student, student.clone(), ranges, boundary, smoothing=smoothing, reduction="none",
                          symbols=symbols, distribution=distribution, **opts)
    assert torch.equal(loss, torch.zeros(B))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("distribution", ["full", "collapsed"])
@pytest.mark.parametrize("smoothing,opts", SETTINGS)
def test_kl_is_nonnegative_on_random_inputs(seed, smoothing, opts, distribution):
    student, teacher, ranges, boundary, symbols = _lattice(10 + seed, sharp=1.0 + 3 * seed)
    loss = output_kd_loss(student, teacher, ranges, boundary, smoothing=smoothing, reduction="none",
                          symbols=symbols, distribution=distribution, **opts)
    assert torch.isfinite(loss).all()
    assert bool((loss >= 0).all())


@pytest.mark.parametrize("distribution", ["full", "collapsed"])
@pytest.mark.parametrize("smoothing,opts", SETTINGS)
def test_invalid_nodes_neither_change_loss_nor_get_gradient(smoothing, opts, distribution):
    student, teacher, ranges, boundary, symbols = _lattice(3)
    invalid = ~_valid_mask(ranges, boundary)
    assert invalid.any()
    kw = dict(smoothing=smoothing, symbols=symbols, distribution=distribution, **opts)
    clean = output_kd_loss(student, teacher, ranges, boundary, **kw)

    s2, t2 = student.clone(), teacher.clone()
    s2[invalid] = float("nan")
    t2[invalid] = float("inf")
    s2.requires_grad_(True)
    dirty = output_kd_loss(s2, t2, ranges, boundary, **kw)
    assert torch.equal(dirty, clean)
    dirty.backward()
    assert torch.isfinite(s2.grad).all()
    assert bool((s2.grad[invalid] == 0).all())
    assert bool((s2.grad[~invalid].abs().sum(-1) > 0).all())


@pytest.mark.parametrize("distribution", ["full", "collapsed"])
@pytest.mark.parametrize("smoothing,opts", SETTINGS)
def test_no_gradient_reaches_the_teacher(smoothing, opts, distribution):
    student, teacher, ranges, boundary, symbols = _lattice(4)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    loss = output_kd_loss(student, teacher, ranges, boundary, smoothing=smoothing, symbols=symbols,
                          distribution=distribution, **opts)
    loss.backward()
    assert teacher.grad is None
    assert student.grad is not None


@pytest.mark.parametrize("distribution", ["full", "collapsed"])
@pytest.mark.parametrize("smoothing,opts", SETTINGS)
def test_student_gradient_is_correct(smoothing, opts, distribution):
    student, teacher, ranges, boundary, symbols = _lattice(5, dtype=torch.float64)
    student = student[:2, :4].contiguous().requires_grad_(True)
    teacher, ranges = teacher[:2, :4].contiguous(), ranges[:2, :4].contiguous()
    boundary = boundary[:2].clone()
    boundary[:, 3] = boundary[:, 3].clamp(max=4)
    occupancy = torch.rand(2, 4, R, dtype=torch.float64)

    def f(s):
        return output_kd_loss(s, teacher, ranges, boundary, smoothing=smoothing, symbols=symbols[:2],
                              occupancy=occupancy, distribution=distribution, reduction="none", **opts)

    assert torch.autograd.gradcheck(f, (student,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("distribution", ["full", "collapsed"])
def test_occupancy_weighting_equals_hand_computed_sum(distribution):
    student, teacher, ranges, boundary, symbols = _lattice(6)
    occupancy = torch.rand(B, T, R)
    opts = {"target_entropy": 0.8}
    kw = dict(smoothing="adaptive-power", symbols=symbols, distribution=distribution, **opts)
    weighted = output_kd_loss(student, teacher, ranges, boundary, occupancy=occupancy, reduction="none", **kw)
    # Hand computation: per-node KL from single-node calls, then the weighted sum.
    expected = torch.zeros(B, dtype=torch.float64)
    valid = _valid_mask(ranges, boundary)
    for b, t, r in valid.nonzero().tolist():
        one_s = student[b : b + 1, t : t + 1, r : r + 1]
        one_t = teacher[b : b + 1, t : t + 1, r : r + 1]
        node_kl = output_kd_loss(one_s, one_t, ranges[b : b + 1, t : t + 1, r : r + 1],
                                 torch.tensor([[0, 0, S_B[b], 1]]), **{**kw, "symbols": symbols[b : b + 1]})
        expected[b] += float(occupancy[b, t, r]) * float(node_kl)
    torch.testing.assert_close(weighted.double(), expected, rtol=1e-5, atol=1e-5)
    ref = _reference(student, teacher, ranges, boundary, "adaptive-power", opts, symbols, occupancy, distribution)
    torch.testing.assert_close(weighted.double(), ref, rtol=2e-4, atol=2e-4)
    # The occupancy is used detached.
    occ = occupancy.clone().requires_grad_(True)
    output_kd_loss(student.requires_grad_(True), teacher, ranges, boundary, occupancy=occ, **kw).backward()
    assert occ.grad is None


def test_collapsed_distribution_sums_to_one_including_final_position():
    g = torch.Generator().manual_seed(7)
    log_p = torch.log_softmax(torch.randn(6, V, generator=g) * 4, -1)
    label = torch.tensor([3, 5, 1, 0, 0, 11])
    has_label = torch.tensor([True, True, True, False, False, True])
    lp3 = _collapse(log_p, label, has_label, blank_id=0)
    torch.testing.assert_close(lp3.exp().sum(-1), torch.ones(6), rtol=0, atol=1e-6)
    assert bool((lp3[~has_label, 1] == float("-inf")).all())  # 2-way at S_b
    p = log_p.exp()
    torch.testing.assert_close(lp3[0].exp(), torch.stack([p[0, 0], p[0, 3], 1 - p[0, 0] - p[0, 3]]))
    torch.testing.assert_close(lp3[3].exp(), torch.stack([p[3, 0], torch.tensor(0.0), 1 - p[3, 0]]))


def test_temperature_is_hinton_style():
    student, teacher, ranges, boundary, _ = _lattice(8)
    tau = 4.0
    got = output_kd_loss(student, teacher, ranges, boundary, smoothing="temperature", temperature=tau)
    # Same as untempered KD on logits divided by tau, times tau^2.
    plain = output_kd_loss(student / tau, teacher / tau, ranges, boundary, smoothing="none")
    torch.testing.assert_close(got, plain * tau**2, rtol=1e-5, atol=1e-5)


def test_stats_and_no_valid_nodes():
    student, teacher, ranges, boundary, _ = _lattice(9)
    loss, st = output_kd_loss_with_stats(student, teacher, ranges, boundary, target_entropy=0.8)
    n = int(_valid_mask(ranges, boundary).sum())
    assert int(st.num_nodes) == n
    assert float(st.teacher_entropy_after) >= float(st.teacher_entropy_before)
    assert 0.1 <= float(st.alpha_mean) <= 1.0 and 0.0 <= float(st.alpha_min_share) <= 1.0
    assert 0.0 < float(st.smoothed_share) < 1.0
    assert torch.equal(loss, output_kd_loss(student, teacher, ranges, boundary, target_entropy=0.8))

    empty = boundary.clone()
    empty[:, 3] = 0
    s = student.clone().requires_grad_(True)
    loss0, st0 = output_kd_loss_with_stats(s, teacher, ranges, empty, target_entropy=0.8)
    loss0.backward()
    assert loss0.item() == 0.0 and int(st0.num_nodes) == 0
    assert bool((s.grad == 0).all())


def test_full_lattice_as_ranges():
    """ranges = 0..S at every frame is the full (unpruned) lattice."""
    student, teacher, _, boundary, _ = _lattice(11)
    full = torch.arange(max(S_B) + 1).view(1, 1, -1).expand(B, T, -1).contiguous()
    s = torch.randn(B, T, full.shape[-1], V)
    t = torch.randn(B, T, full.shape[-1], V)
    got = output_kd_loss(s, t, full, boundary, smoothing="none", reduction="none")
    ref = _reference(s, t, full, boundary, "none", {})
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)


def _bad_calls():
    student, teacher, ranges, boundary, symbols = _lattice(12)
    bad_boundary = boundary.clone()
    bad_boundary[0, 0] = 1
    long_t = boundary.clone()
    long_t[0, 3] = T + 1
    blank_sym = symbols.clone()
    blank_sym[0, 0] = 0
    return [
        ((student, teacher[:, :-1], ranges, boundary), {}),
        ((student[0], teacher[0], ranges[0], boundary), {}),
        ((student, teacher, ranges[:, :, :-1], boundary), {}),
        ((student, teacher, ranges.float(), boundary), {}),
        ((student, teacher, ranges, boundary[:, :3]), {}),
        ((student, teacher, ranges, bad_boundary), {}),
        ((student, teacher, ranges, long_t), {}),
        ((student, teacher, ranges, boundary), {"distribution": "collapsed"}),
        ((student, teacher, ranges, boundary), {"distribution": "collapsed", "symbols": symbols[:, :2]}),
        ((student, teacher, ranges, boundary), {"distribution": "collapsed", "symbols": blank_sym}),
        ((student, teacher, ranges, boundary), {"distribution": "3way"}),
        ((student, teacher, ranges, boundary), {"reduction": "mean"}),
        ((student, teacher, ranges, boundary), {"occupancy": torch.rand(B, T)}),
        ((student, teacher, ranges, boundary), {"smoothing": "adaptive-power"}),  # no target
        ((student, teacher, ranges, boundary), {"smoothing": "none", "temperature": 2.0}),
    ]


@pytest.mark.parametrize("idx", range(15))
def test_bad_inputs_raise_value_error(idx):
    args, kwargs = _bad_calls()[idx]
    kwargs.setdefault("smoothing", "none")
    with pytest.raises(ValueError):
        output_kd_loss(*args, **kwargs)


def test_unknown_option_raises_type_error():
    student, teacher, ranges, boundary, _ = _lattice(13)
    with pytest.raises(TypeError):
        output_kd_loss(student, teacher, ranges, boundary, target_entropy=1.0, target=1.0)


def test_half_precision_inputs_compute_in_float32():
    student, teacher, ranges, boundary, _ = _lattice(14)
    loss_h = output_kd_loss(student.bfloat16(), teacher.bfloat16(), ranges, boundary, target_entropy=0.8)
    loss_f = output_kd_loss(student.bfloat16().float(), teacher.bfloat16().float(), ranges, boundary,
                            target_entropy=0.8)
    assert loss_h.dtype == torch.float32
    torch.testing.assert_close(loss_h, loss_f)
    assert math.isfinite(float(loss_h))
