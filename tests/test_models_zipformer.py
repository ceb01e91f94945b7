"""Zipformer encoder: formulas, shapes, padding, causality, streaming == masked forward, sherpa layout."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as Fn

from asr_kd.models.attention import chunk_attention_mask
from asr_kd.models.zipformer import ZIPFORMER_SIZES, ZipformerConfig, ZipformerEncoder, zipformer_config
from asr_kd.models.zipformer.attention import compact_rel_pos_table
from asr_kd.models.zipformer.convolution import ChunkCausalDepthwiseConv1d
from asr_kd.models.zipformer.encoder import zipformer_state_shapes
from asr_kd.models.zipformer.scaling import BiasNorm, Bypass, ScheduledFloat, swoosh_l, swoosh_r

F = 20  # small feature dim keeps the tests fast (the front end's 128 channels are fixed)
D_OUT = max(ZIPFORMER_SIZES["tiny"]["encoder_dims"])


def _cfg(causal: bool, **kw) -> ZipformerConfig:
    return zipformer_config("tiny", num_features=F, causal=causal, dropout=0.0, pos_dropout=0.0, **kw)


def _enc(causal: bool, **kw) -> ZipformerEncoder:
    """Tiny float64 encoder whose zero/constant-initialised parameters are randomised.

    The chunk-edge scales, downsampling weights and bypass scales start at
    constants; random values make the tests exercise them.
    """
    torch.manual_seed(0)
    enc = ZipformerEncoder(_cfg(causal, **kw)).double().eval()
    with torch.no_grad():
        for name, p in enc.named_parameters():
            if "chunkwise_conv_scale" in name or name.endswith("downsample.bias") or "downsample_output" in name:
                p.normal_(0.0, 0.5)
            elif "bypass_scale" in name:
                p.uniform_(0.2, 1.0)
    return enc


def _stream(enc: ZipformerEncoder, x: torch.Tensor, k: int, lc: int) -> torch.Tensor:
    """Chunk-by-chunk encoding of x (B, T, F) as a streaming decoder would (last window padded)."""
    b, t, _ = x.shape
    t_out = int(enc.output_lengths(torch.tensor(t)))
    n_in, shift = enc.chunk_input_frames(k), enc.chunk_shift_frames(k)
    states = enc.init_states(b, lc, dtype=x.dtype)
    pieces = []
    for c in range((t_out + k - 1) // k):
        window = x[:, c * shift : c * shift + n_in]
        if window.size(1) < n_in:  # final chunk: pad with anything
            window = torch.cat((window, torch.full((b, n_in - window.size(1), F), -7.0, dtype=x.dtype)), dim=1)
        valid = min(k, t_out - c * k)
        before = {name: v.clone() for name, v in states.items()}
        out, new = enc.streaming_forward(window, states, k, lc, valid_frames=valid)
        assert all(torch.equal(before[n], states[n]) for n in states)  # inputs not modified
        assert out.shape == (b, k, enc.output_dim)
        assert new["offset"].tolist() == [(c + 1) * k] * b
        assert {n: v.shape for n, v in new.items()} == {n: v.shape for n, v in states.items()}
        states = new
        pieces.append(out[:, :valid])
    return torch.cat(pieces, dim=1)


# ---------------------------------------------------------------------------------- formulas


def test_swoosh_values_match_formulas() -> None:
    pts = [-3.0, -1.0, 0.0, 0.5, 1.0, 4.0, 7.0]
    x = torch.tensor(pts, dtype=torch.float64)
    r = [math.log(1 + math.exp(v - 1)) - 0.08 * v - 0.313261687 for v in pts]
    lo = [math.log(1 + math.exp(v - 4)) - 0.08 * v - 0.035 for v in pts]
    torch.testing.assert_close(swoosh_r(x), torch.tensor(r, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(swoosh_l(x), torch.tensor(lo, dtype=torch.float64), rtol=0, atol=1e-12)
    assert abs(float(swoosh_r(torch.tensor(0.0, dtype=torch.float64)))) < 1e-9  # offset makes SwooshR(0) = 0
    # slopes tend to -0.08 and 0.92
    g = torch.tensor([-30.0, 30.0], dtype=torch.float64, requires_grad=True)
    swoosh_r(g).sum().backward()
    torch.testing.assert_close(g.grad, torch.tensor([-0.08, 0.92], dtype=torch.float64), rtol=0, atol=1e-9)


def test_bias_norm_matches_brute_force() -> None:
    norm = BiasNorm(5).double()
    with torch.no_grad():
        norm.bias.normal_()
        norm.log_scale.fill_(0.3)
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    y = norm(x).detach()
    b = norm.bias.detach().tolist()
    for i in range(3):
        for t in range(4):
            ms = sum((float(x[i, t, c]) - b[c]) ** 2 for c in range(5)) / 5
            for c in range(5):
                assert abs(float(y[i, t, c]) - float(x[i, t, c]) * math.exp(0.3) / math.sqrt(ms)) < 1e-12
    # training holds the log-scale to [-1.5, 1.5] through its gradient only: the value used in training is
    # the parameter itself (as in evaluation), and a gradient that would push it further out is reversed
    with torch.no_grad():
        norm.log_scale.fill_(3.0)
    ms = ((x - norm.bias) ** 2).mean(-1, keepdim=True)
    grads = {}
    for mode in ("train", "eval"):
        getattr(norm, mode)()
        norm.zero_grad()
        out = norm(x)
        torch.testing.assert_close(out, x * math.exp(3.0) / ms.sqrt(), rtol=1e-12, atol=0)
        (-(out ** 2).sum()).backward()  # a larger log-scale lowers this loss: its gradient is negative
        grads[mode] = norm.log_scale.grad.clone()
    assert grads["eval"] < 0 and torch.equal(grads["train"], -grads["eval"])  # reversed: walks back to 1.5
    with torch.no_grad():
        norm.log_scale.fill_(0.3)  # inside the range: the gradient is untouched
    for mode in ("train", "eval"):
        getattr(norm, mode)()
        norm.zero_grad()
        (-(norm(x) ** 2).sum()).backward()
        grads[mode] = norm.log_scale.grad.clone()
    assert torch.equal(grads["train"], grads["eval"])


def test_scheduled_float_and_bypass_schedule() -> None:
    s = ScheduledFloat((0, 0.9), (20000, 0.2), default=0.2)
    assert s.value(True) == 0.2  # batch count never set -> default
    for n, v in [(-5, 0.9), (0, 0.9), (10000, 0.55), (20000, 0.2), (10 ** 6, 0.2)]:
        s.batch_count = n
        assert abs(s.value(True) - v) < 1e-12
    assert s.value(False) == 0.2

    enc = ZipformerEncoder(_cfg(False))
    bypasses = [m for m in enc.modules() if isinstance(m, Bypass)]
    assert len(bypasses) == 2 * 6 + 5  # bypass_mid + bypass per layer, out_combiner per downsampled stack
    x, y = torch.randn(2, 32), torch.randn(2, 32)
    for mode in ("train", "eval"):  # the value used is the raw scale in both modes (no forward clamp)
        getattr(enc, mode)()
        enc.set_batch_count(0)
        assert all(torch.equal(m.effective_scale(), m.bypass_scale) for m in bypasses)
    # in training the minimum (0.9 at batch 0, 0.55 at 10000, 0.2 from 20000) acts on the gradient:
    # s = 0.5 below the minimum with a gradient that lowers it further gets that gradient reversed
    b = bypasses[0]
    enc.train()
    for n, reversed_ in [(0, True), (10000, True), (20000, False)]:
        enc.set_batch_count(n)
        b.zero_grad()
        (b(x, y) * (y - x)).sum().backward()  # d/ds = sum (y - x)^2 > 0: descent would lower s
        expected = ((y - x) ** 2).sum(0)
        torch.testing.assert_close(b.bypass_scale.grad, -expected if reversed_ else expected)
    enc.eval()
    x, y = torch.randn(2, 32), torch.randn(2, 32)
    torch.testing.assert_close(bypasses[0](x, y), x + (y - x) * 0.5)


def test_compact_rel_pos_table() -> None:
    d = 8
    deltas = torch.tensor([-40.0, -3.0, 0.0, 1.0, 5.0, 300.0], dtype=torch.float64)
    table = compact_rel_pos_table(deltas, d)
    c, lf = math.sqrt(d), d / (2 * math.pi)
    for row, delta in enumerate(deltas.tolist()):
        sign = (delta > 0) - (delta < 0)
        theta = math.atan(c * sign * (math.log(abs(delta) + c) - math.log(c)) / lf)
        want = [f(k * theta) for k in range(1, d // 2 + 1) for f in (math.cos, math.sin)]
        want[-1] = 1.0
        torch.testing.assert_close(table[row], torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12)


def test_chunk_edge_scale_matches_padded_edges() -> None:
    """E = left_edge padded right to the chunk + right_edge padded left, cropped (the recipe's construction)."""
    k = 5
    conv = ChunkCausalDepthwiseConv1d(3, k).double()
    with torch.no_grad():
        conv.chunkwise_conv_scale.normal_()
    left, right = conv.chunkwise_conv_scale[0], conv.chunkwise_conv_scale[1]
    for chunk in (2, 5, 9):
        extra = max(0, chunk - k)
        want = 1 + Fn.pad(left, (0, extra))[:, :chunk] + Fn.pad(right, (extra, 0))[:, -chunk:]
        p = torch.arange(chunk)
        torch.testing.assert_close(conv._edge_scale(p, chunk - 1 - p), want, rtol=0, atol=1e-14)


def test_stack_masks_are_the_50hz_mask_sliced() -> None:
    for t50, k50, l50 in [(40, 8, 8), (37, 16, 0), (50, 8, -1)]:
        full = chunk_attention_mask(t50, k50, l50)
        for ds in (1, 2, 4, 8):
            t = -(-t50 // ds)
            sliced = full[::ds, ::ds]
            assert torch.equal(sliced, chunk_attention_mask(t, k50 // ds, l50 // ds if l50 >= 0 else -1))


# ---------------------------------------------------------------------------------- config


def test_config_roundtrip_and_validation() -> None:
    cfg = _cfg(True, chunk_sizes=[8, 4], left_contexts=[16, -1], dynamic_chunk=True)
    assert cfg.chunk_sizes == (8, 4) and isinstance(cfg.encoder_dims, tuple)
    d = cfg.to_dict()
    assert d["chunk_sizes"] == [8, 4] and d["encoder_dims"] == list(cfg.encoder_dims)
    assert ZipformerConfig.from_dict(d) == cfg
    assert ZipformerConfig.from_dict(ZipformerConfig().to_dict()) == ZipformerConfig()
    with pytest.raises(ValueError, match="unknown"):
        ZipformerConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError, match="zipformer: chunk_sizes"):
        ZipformerConfig(chunk_sizes=(6,))  # 2K = 12 not divisible by 8
    with pytest.raises(ValueError, match="zipformer: left_contexts"):
        ZipformerConfig(left_contexts=(2,))
    with pytest.raises(ValueError, match="zipformer: encoder_dims"):
        ZipformerConfig(encoder_dims=(192, 256))
    with pytest.raises(ValueError, match="zipformer: cnn_kernels"):
        ZipformerConfig(cnn_kernels=(31, 31, 15, 16, 15, 31))
    with pytest.raises(ValueError, match="zipformer: pos_dim"):
        ZipformerConfig(pos_dim=47)
    with pytest.raises(ValueError, match="unknown size"):
        zipformer_config("huge")


def test_preset_parameter_counts() -> None:
    """Encoder sizes; + decoder/joiner (BPE 500, icefall's dims) + the recipe's unused per-layer
    ``bypass_scale`` they equal RESULTS.md's totals exactly (small 23,285,615, medium 65,549,011,
    large 148,439,574; causal medium 66,110,931)."""
    counts = {}
    for size, causal in [("tiny", False), ("small", False), ("medium", False), ("large", False), ("medium", True)]:
        with torch.device("meta"):
            enc = ZipformerEncoder(zipformer_config(size, causal=causal))
        counts[(size, causal)] = sum(p.numel() for p in enc.parameters())
    assert counts[("tiny", False)] < 500_000
    assert counts[("small", False)] == 21_986_835
    assert counts[("medium", False)] == 63_988_343
    assert counts[("large", False)] == 146_616_250
    assert counts[("medium", True)] == 64_550_263


# ---------------------------------------------------------------------------------- full forward


def test_shapes_lengths_and_hidden() -> None:
    enc = _enc(False)
    assert enc.output_dim == D_OUT and enc.subsampling_factor == 4
    assert enc.num_layers == 6 and len(enc.layers) == 6
    assert enc.output_lengths(torch.tensor([0, 13, 16, 17, 20, 21, 103])).tolist() == [0, 0, 0, 1, 1, 2, 22]
    # K = 8 encoder frames (320 ms) = icefall's chunk 16: T = 45 feature frames, shift 32
    assert enc.chunk_input_frames(8) == 45 and enc.chunk_shift_frames(8) == 32
    for t in (17, 18, 45, 62, 103):
        x = torch.randn(2, t, F, dtype=torch.float64)
        out = enc(x, torch.tensor([t, max(17, t - 9)]), return_layers=(0, 3, -1))
        t_out = (t - 13) // 4
        assert out.out.shape == (2, t_out, D_OUT)
        assert out.lens.tolist() == [t_out, (max(17, t - 9) - 13) // 4]
        dims = enc.cfg.encoder_dims
        assert [h.shape for h in out.hidden] == [(2, t_out, dims[0]), (2, t_out, dims[3]), (2, t_out, dims[5])]
    # output = 2x downsample of [last stack, extra channels of wider earlier stacks]; equal weights -> pair means
    with torch.no_grad():
        enc.downsample_output.bias.zero_()
    x = torch.randn(1, 61, F, dtype=torch.float64)
    out = enc(x, torch.tensor([61]), return_layers=(4, 5))
    torch.testing.assert_close(out.out, torch.cat((out.hidden[1], out.hidden[0][..., 32:48]), -1), rtol=0,
                               atol=1e-12)
    with pytest.raises(ValueError, match="return_layers"):
        enc(x, torch.tensor([61]), return_layers=(6,))
    with pytest.raises(ValueError, match="return_layers"):
        enc(x, torch.tensor([61]), return_layers=(-7,))
    with pytest.raises(ValueError):
        enc(x, torch.tensor([62]))
    with pytest.raises(ValueError, match="17"):
        enc(x[:, :16], torch.tensor([16]))


def test_chunk_config_resolution_and_errors() -> None:
    enc = _enc(True, chunk_sizes=(4, 8), left_contexts=(8, -1), dynamic_chunk=True)
    assert enc.chunk_config() == (4, 8)
    assert enc.chunk_config(8, -1) == (8, -1)
    enc.train()
    assert {enc.chunk_config() for _ in range(200)} == {(4, 8), (4, -1), (8, 8), (8, -1)}
    enc.eval()
    assert ZipformerEncoder(_cfg(False)).chunk_config(4, 8) == (0, -1)
    x = torch.randn(1, 61, F, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"chunk_size=3 .*factor 4"):
        enc(x, torch.tensor([61]), chunk_size=3, left_context=4)
    with pytest.raises(ValueError, match=r"left_context=2 .*factor 8"):
        enc(x, torch.tensor([61]), chunk_size=4, left_context=2)
    enc(x, torch.tensor([61]), chunk_size=-1, left_context=2)  # full context ignores the left context


@pytest.mark.parametrize("causal,k,lc", [(False, None, None), (True, 4, 4), (True, 8, -1), (True, 0, -1)])
def test_padding_does_not_leak(causal: bool, k, lc) -> None:
    enc = _enc(causal)
    x = torch.randn(1, 61, F, dtype=torch.float64)
    alone = enc(x, torch.tensor([61]), chunk_size=k, left_context=lc, return_layers=(2,))
    padded = torch.cat((x, 100 * torch.randn(1, 44, F, dtype=torch.float64)), dim=1)
    batch = torch.cat((padded, torch.randn(1, 105, F, dtype=torch.float64)), dim=0)
    out = enc(batch, torch.tensor([61, 105]), chunk_size=k, left_context=lc, return_layers=(2,))
    assert out.lens.tolist() == [12, 23]
    torch.testing.assert_close(out.out[0, :12], alone.out[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(out.hidden[0][0, :12], alone.hidden[0][0], rtol=0, atol=1e-10)


def test_causal_model_does_not_look_ahead() -> None:
    """Chunk c depends on feature frames < chunk_input_frames(K) + c * chunk_shift_frames(K) only, and on the last."""
    k = 4
    enc = _enc(True)
    x = torch.randn(1, 4 * 16 + 13, F, dtype=torch.float64)
    lens = torch.tensor([x.size(1)])
    ref = enc(x, lens, chunk_size=k, left_context=-1).out
    for c in range(3):
        end = (c + 1) * k
        first_unseen = enc.chunk_input_frames(k) + c * enc.chunk_shift_frames(k)
        y = x.clone()
        y[:, first_unseen:] += torch.randn_like(y[:, first_unseen:])
        out = enc(y, lens, chunk_size=k, left_context=-1).out
        torch.testing.assert_close(out[:, :end], ref[:, :end], rtol=0, atol=1e-12)
        assert (out[:, end:] - ref[:, end:]).abs().max() > 1e-6
        # the look-ahead is tight: the last frame of the window does reach chunk c
        y = x.clone()
        y[:, first_unseen - 1] += 1.0
        assert (enc(y, lens, chunk_size=k, left_context=-1).out[:, c * k : end] - ref[:, c * k : end]).abs().max() > 1e-9
    teacher = _enc(False)
    y = x.clone()
    y[:, 60:] += 1.0
    assert (teacher(y, lens).out[:, :2] - teacher(x, lens).out[:, :2]).abs().max() > 1e-6


def test_feature_normalisation_equals_normalised_input() -> None:
    enc = _enc(False)
    x = torch.randn(2, 40, F, dtype=torch.float64) * 3 - 6
    lens = torch.tensor([40, 31])
    mean, std = x.mean((0, 1)), x.std((0, 1))
    plain = enc((x - mean) / std, lens).out
    enc.set_feature_stats(mean, std)
    torch.testing.assert_close(enc(x, lens).out, plain, rtol=0, atol=1e-12)
    assert "subsampling.feature_mean" in enc.state_dict()
    other = ZipformerEncoder(_cfg(False)).double().eval()
    other.load_state_dict(enc.state_dict())
    torch.testing.assert_close(other(x, lens).out, plain, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        enc.set_feature_stats(torch.zeros(F + 1), torch.ones(F + 1))


# ---------------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("k,lc", [(4, 4), (4, 12), (8, 8), (8, 0)])
def test_streaming_equals_masked_forward(k: int, lc: int) -> None:
    enc = _enc(True)
    enc.set_feature_stats(torch.linspace(-9, -3, F, dtype=torch.float64), torch.linspace(2, 4, F, dtype=torch.float64))
    x = torch.randn(2, 4 * 18 + 13 + 2, F, dtype=torch.float64)  # 18 encoder frames: the last chunk is partial
    full = enc(x, torch.tensor([x.size(1)] * 2), chunk_size=k, left_context=lc).out
    assert full.shape == (2, 18, D_OUT)
    streamed = _stream(enc, x, k, lc)
    assert streamed.shape == full.shape
    assert (streamed - full).abs().max() < 1e-10


def test_streaming_float32() -> None:
    enc = _enc(True).float()
    x = torch.randn(1, 4 * 10 + 13, F)
    full = enc(x, torch.tensor([x.size(1)]), chunk_size=4, left_context=4).out
    torch.testing.assert_close(_stream(enc, x, 4, 4), full, rtol=0, atol=1e-4)


def test_streams_at_different_offsets_batch_together() -> None:
    enc = _enc(True)
    k, lc = 4, 8
    x = torch.randn(2, 4 * 12 + 13, F, dtype=torch.float64)
    ref = _stream(enc, x, k, lc)
    n_in, shift = enc.chunk_input_frames(k), enc.chunk_shift_frames(k)
    s0 = enc.init_states(1, lc, dtype=torch.float64)
    _, s0 = enc.streaming_forward(x[:1, :n_in], s0, k, lc)
    _, s0 = enc.streaming_forward(x[:1, shift : shift + n_in], s0, k, lc)
    s1 = enc.init_states(1, lc, dtype=torch.float64)  # stream 1 starts two chunks later
    batched = {name: torch.cat((s0[name], s1[name]), dim=0) for name in s0}
    assert batched["offset"].tolist() == [2 * k, 0]
    window = torch.cat((x[:1, 2 * shift : 2 * shift + n_in], x[1:, :n_in]), dim=0)
    out, batched = enc.streaming_forward(window, batched, k, lc)
    torch.testing.assert_close(out[0], ref[0, 2 * k : 3 * k], rtol=0, atol=1e-10)
    torch.testing.assert_close(out[1], ref[1, :k], rtol=0, atol=1e-10)
    # split again and continue stream 1 alone
    s1 = {name: v[1:] for name, v in batched.items()}
    out1, _ = enc.streaming_forward(x[1:, shift : shift + n_in], s1, k, lc)
    torch.testing.assert_close(out1[0], ref[1, k : 2 * k], rtol=0, atol=1e-10)


def test_state_layout_matches_sherpa_onnx() -> None:
    """medium, left 64 encoder frames (= icefall's --left-context-frames 128): the fact-sheet shapes."""
    cfg = zipformer_config("medium", causal=True)
    shapes = zipformer_state_shapes(cfg, 1, 64)
    names = list(shapes)
    assert len(names) == 6 * 16 + 2 and names[-2:] == ["embed", "offset"]
    assert names[:6] == [f"layer0.{n}" for n in ("key", "nonlin_attn", "val1", "val2", "conv1", "conv2")]
    layer_stack = [i for i, n in enumerate(cfg.num_layers) for _ in range(n)]
    left = [128, 64, 32, 16, 32, 64]
    key = [128, 128, 128, 256, 128, 128]
    val = [48, 48, 48, 96, 48, 48]
    nla = [144, 192, 288, 384, 288, 192]
    pad = [15, 15, 7, 7, 7, 15]
    for j, i in enumerate(layer_stack):
        # batch-first; sherpa's (L, N, C) is .transpose(0, 1), its (1, N, L, C) is .unsqueeze(0)
        assert shapes[f"layer{j}.key"] == (1, left[i], key[i])
        assert shapes[f"layer{j}.nonlin_attn"] == (1, left[i], nla[i])
        assert shapes[f"layer{j}.val1"] == shapes[f"layer{j}.val2"] == (1, left[i], val[i])
        assert shapes[f"layer{j}.conv1"] == shapes[f"layer{j}.conv2"] == (1, cfg.encoder_dims[i], pad[i])
    assert shapes["embed"] == (1, 128, 3, 19) and shapes["offset"] == (1,)
    st = _enc(True).init_states(3, 8)
    assert st["offset"].dtype == torch.int64 and st["layer0.key"].dtype == torch.get_default_dtype()
    assert st["embed"].shape == (3, 128, 3, 4)  # 20 bins -> F' = 4
    assert st["layer3.key"].shape == (3, 2, 16)  # stack 3: ds 8, L = 16 / 8


def test_streaming_errors() -> None:
    enc = _enc(True)
    st = enc.init_states(1, 4, dtype=torch.float64)
    n_in = enc.chunk_input_frames(4)
    with pytest.raises(ValueError, match="feature frames"):
        enc.streaming_forward(torch.randn(1, n_in - 1, F, dtype=torch.float64), st, 4, 4)
    with pytest.raises(ValueError, match="left_context=8"):  # state built for L = 4
        enc.streaming_forward(torch.randn(1, n_in, F, dtype=torch.float64), st, 4, 8)
    with pytest.raises(ValueError, match=r"chunk_size=2 .*factor 8"):
        enc.streaming_forward(torch.randn(1, enc.chunk_input_frames(2), F, dtype=torch.float64), st, 2, 4)
    with pytest.raises(ValueError, match="left_context"):
        enc.init_states(1, -1)
    with pytest.raises(ValueError, match=r"left_context=2 .*factor 8"):
        enc.init_states(1, 2)
    with pytest.raises(RuntimeError):
        _enc(False).streaming_forward(torch.randn(1, n_in, F, dtype=torch.float64), st, 4, 4)


# ---------------------------------------------------------------------------------- learning


def test_tiny_encoder_learns_a_toy_ctc_task() -> None:
    """Each token is a fixed 12-frame feature pattern; a tiny encoder + linear CTC head learns to read them."""
    torch.manual_seed(0)
    vocab, per_token, n_tok = 4, 12, 3
    patterns = torch.randn(vocab, per_token, F) * 2
    labels = torch.randint(1, vocab + 1, (16, n_tok))
    feats = torch.cat([patterns[labels[:, i] - 1] for i in range(n_tok)], dim=1)  # (16, 36, F)
    feats = torch.cat((feats, torch.zeros(16, 13, F)), dim=1) + 0.3 * torch.randn(16, 49, F)
    enc = ZipformerEncoder(_cfg(False))
    head = torch.nn.Linear(enc.output_dim, vocab + 1)
    opt = torch.optim.Adam(list(enc.parameters()) + list(head.parameters()), lr=3e-3)
    losses = []
    lens = torch.full((16,), 49)
    for _ in range(40):
        out = enc(feats, lens)
        logp = head(out.out).log_softmax(-1).transpose(0, 1)  # (T', B, V + 1)
        loss = Fn.ctc_loss(logp, labels, out.lens, torch.full((16,), n_tok), blank=0, zero_infinity=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.3 * first, (first, last)
