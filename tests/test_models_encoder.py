"""Conformer encoder: shapes, chunk masks, causality, streaming == masked forward."""

from __future__ import annotations

import pytest
import torch

from asr_kd.models import ConformerEncoder, EncoderConfig, chunk_attention_mask

F = 20  # small feature dim keeps the tests fast


def _cfg(causal: bool, **kw) -> EncoderConfig:
    base = dict(
        num_features=F,
        d_model=32,
        num_layers=2,
        num_heads=4,
        ff_dim=64,
        conv_kernel=5,
        dropout=0.0,
        causal=causal,
        subsampling_channels=4,
    )
    base.update(kw)
    return EncoderConfig(**base)


def test_shapes_and_frame_arithmetic() -> None:
    enc = ConformerEncoder(_cfg(causal=False, num_layers=3)).eval()
    feats = torch.randn(3, 103, F)
    lens = torch.tensor([103, 50, 7])
    out = enc(feats, lens, return_layers=(0, -1))
    assert out.out.shape == (3, 25, 32)  # (103 - 3) // 4
    assert out.lens.tolist() == [25, 11, 1]
    assert len(out.hidden) == 2 and all(h.shape == (3, 25, 32) for h in out.hidden)
    # layer -1 is the last block; the encoder output is its final LayerNorm
    torch.testing.assert_close(enc.final_norm(out.hidden[1]), out.out, rtol=0, atol=0)
    assert enc.output_dim == 32 and enc.subsampling_factor == 4
    assert enc.output_lengths(torch.tensor([0, 3, 6, 7, 10, 11])).tolist() == [0, 0, 0, 1, 1, 2]
    # 16 encoder frames = 640 ms = 64 feature frames, + 3 frames of front-end look-ahead
    assert enc.chunk_input_frames(16) == 67 and enc.chunk_shift_frames(16) == 64
    with pytest.raises(ValueError):
        enc(feats, lens, return_layers=(3,))
    with pytest.raises(ValueError):
        enc(feats, torch.tensor([104, 50, 7]))


def test_chunk_mask_semantics() -> None:
    # K = 3, L = 2: frame t in chunk c sees [3c - 2, 3c + 3)
    m = chunk_attention_mask(8, 3, 2)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    for q in range(8):
        c = q // 3
        for s in range(max(0, 3 * c - 2), min(8, 3 * c + 3)):
            expected[q, s] = True
    assert torch.equal(m, expected)
    assert m[4].nonzero().flatten().tolist() == [1, 2, 3, 4, 5]
    assert m[7].nonzero().flatten().tolist() == [4, 5, 6, 7]  # last, partial chunk
    # unlimited left context: block lower-triangular
    u = chunk_attention_mask(8, 3, -1)
    assert u[7].all() and u[2].tolist() == [True] * 3 + [False] * 5
    # zero left context: only the own chunk
    z = chunk_attention_mask(6, 2, 0)
    assert z[3].nonzero().flatten().tolist() == [2, 3]
    # chunk <= 0: full context
    assert chunk_attention_mask(5, -1, 2).all()


def test_chunk_config_resolution() -> None:
    enc = ConformerEncoder(_cfg(True, chunk_sizes=(4, 2, 8), left_contexts=(8, -1), dynamic_chunk=True))
    enc.eval()
    assert enc.chunk_config() == (4, 8)
    assert enc.chunk_config(2, -1) == (2, -1)
    enc.train()
    draws = {enc.chunk_config() for _ in range(200)}
    assert draws == {(k, lc) for k in (4, 2, 8) for lc in (8, -1)}
    assert enc.chunk_config(8, 8) == (8, 8)
    fixed = ConformerEncoder(_cfg(True, chunk_sizes=(4, 2), left_contexts=(8,), dynamic_chunk=False)).train()
    assert {fixed.chunk_config() for _ in range(20)} == {(4, 8)}
    teacher = ConformerEncoder(_cfg(False)).train()
    assert teacher.chunk_config(4, 8) == (0, -1)


@pytest.mark.parametrize("causal", [False, True])
def test_padding_does_not_leak(causal: bool) -> None:
    enc = ConformerEncoder(_cfg(causal)).double().eval()
    x = torch.randn(1, 61, F, dtype=torch.float64)
    alone = enc(x, torch.tensor([61]), chunk_size=3, left_context=4).out
    padded = torch.cat((x, 100 * torch.randn(1, 40, F, dtype=torch.float64)), dim=1)
    batch = torch.cat((padded, torch.randn(1, 101, F, dtype=torch.float64)), dim=0)
    out = enc(batch, torch.tensor([61, 101]), chunk_size=3, left_context=4)
    assert out.lens.tolist() == [14, 24]
    torch.testing.assert_close(out.out[0, :14], alone[0], rtol=0, atol=1e-10)


def test_causal_model_does_not_look_ahead() -> None:
    k = 3
    enc = ConformerEncoder(_cfg(True)).double().eval()
    x = torch.randn(2, 83, F, dtype=torch.float64)
    lens = torch.tensor([83, 83])
    ref = enc(x, lens, chunk_size=k, left_context=-1).out
    for c in range(4):
        end_frame = (c + 1) * k  # encoder frames of chunks 0..c
        first_unseen = enc.chunk_input_frames(k) + c * enc.chunk_shift_frames(k)
        y = x.clone()
        y[:, first_unseen:] += torch.randn_like(y[:, first_unseen:])
        out = enc(y, lens, chunk_size=k, left_context=-1).out
        torch.testing.assert_close(out[:, :end_frame], ref[:, :end_frame], rtol=0, atol=1e-12)
        assert (out[:, end_frame:] - ref[:, end_frame:]).abs().max() > 1e-6
    # the full-context teacher does look ahead (so the check above is meaningful)
    teacher = ConformerEncoder(_cfg(False)).double().eval()
    y = x.clone()
    y[:, 60:] += 1.0
    assert (teacher(y, lens).out[:, :3] - teacher(x, lens).out[:, :3]).abs().max() > 1e-6


def _stream(enc: ConformerEncoder, x: torch.Tensor, k: int, lc: int, new_frames_only: bool) -> torch.Tensor:
    """Chunk-by-chunk encoding of x (B, T, F) the way a streaming decoder would."""
    b, t, _ = x.shape
    t_out = int(enc.output_lengths(torch.tensor(t)))
    n_in, shift = enc.chunk_input_frames(k), enc.chunk_shift_frames(k)
    states = enc.init_states(b, lc, dtype=x.dtype)
    pieces = []
    for c in range((t_out + k - 1) // k):
        window = x[:, c * shift : c * shift + n_in]
        if window.size(1) < n_in:  # final chunk: pad with anything
            window = torch.cat((window, torch.full((b, n_in - window.size(1), F), -7.0, dtype=x.dtype)), dim=1)
        if new_frames_only and c > 0:
            window = window[:, n_in - shift :]
        valid = min(k, t_out - c * k)
        out, states = enc.streaming_forward(window, states, k, lc, valid_frames=valid)
        assert out.shape == (b, k, enc.output_dim)
        assert states["offset"].tolist() == [(c + 1) * k] * b
        pieces.append(out[:, :valid])
    return torch.cat(pieces, dim=1)


@pytest.mark.parametrize("k,lc", [(3, -1), (3, 0), (3, 4), (2, 5), (4, 8)])
def test_streaming_equals_masked_forward(k: int, lc: int) -> None:
    enc = ConformerEncoder(_cfg(True)).double().eval()
    # non-trivial input normalisation: it must act identically in both paths
    enc.subsampling.set_feature_stats(torch.linspace(-9, -3, F, dtype=torch.float64),
                                      torch.linspace(2, 4, F, dtype=torch.float64))
    x = torch.randn(2, 4 * 17 + 5, F, dtype=torch.float64)  # 17 encoder frames: last chunk partial
    full = enc(x, torch.tensor([x.size(1)] * 2), chunk_size=k, left_context=lc).out
    for new_frames_only in (False, True):
        streamed = _stream(enc, x, k, lc, new_frames_only)
        assert streamed.shape == full.shape
        torch.testing.assert_close(streamed, full, rtol=0, atol=1e-5)
        assert (streamed - full).abs().max() < 1e-10


def test_frontend_scale_scales_the_front_end_and_keeps_streaming_exact() -> None:
    torch.manual_seed(0)
    enc = ConformerEncoder(_cfg(True, frontend_scale=32 ** 0.5)).double().eval()
    ref = ConformerEncoder(_cfg(True)).double().eval()
    ref.load_state_dict(enc.state_dict())
    x = torch.randn(2, 4 * 9 + 3, F, dtype=torch.float64)
    torch.testing.assert_close(enc.subsampling(x), ref.subsampling(x) * 32 ** 0.5, rtol=1e-12, atol=0)
    full = enc(x, torch.tensor([x.size(1)] * 2), chunk_size=3, left_context=4).out
    assert (_stream(enc, x, 3, 4, False) - full).abs().max() < 1e-10
    with pytest.raises(ValueError, match="output_scale"):
        ConformerEncoder(_cfg(True, frontend_scale=0.0))


def test_streaming_state_format_and_errors() -> None:
    enc = ConformerEncoder(_cfg(True)).eval()
    st = enc.init_states(2, 6)
    assert st["keys"].shape == (2, 2, 6, 32) and st["values"].shape == (2, 2, 6, 32)
    assert st["conv"].shape == (2, 2, 32, 4) and st["frontend"].shape == (2, 3, F)
    assert st["offset"].dtype == torch.int64
    with pytest.raises(ValueError):  # a first chunk must include the look-ahead frames
        enc.streaming_forward(torch.randn(2, 12, F), st, 3, 6)
    with pytest.raises(ValueError):  # wrong size
        enc.streaming_forward(torch.randn(2, 14, F), st, 3, 6)
    with pytest.raises(ValueError):  # cache size != left context
        enc.streaming_forward(torch.randn(2, 15, F), st, 3, 4)
    _, st2 = enc.streaming_forward(torch.randn(2, 15, F), st, 3, 6)
    assert st2["keys"].shape == (2, 2, 6, 32) and st2["offset"].tolist() == [3, 3]
    unlimited = enc.init_states(2, -1)
    _, grown = enc.streaming_forward(torch.randn(2, 15, F), unlimited, 3, -1)
    assert grown["keys"].shape == (2, 2, 3, 32)
    with pytest.raises(RuntimeError):
        ConformerEncoder(_cfg(False)).streaming_forward(torch.randn(2, 15, F), st, 3, 6)


def test_config_roundtrip_and_validation() -> None:
    cfg = _cfg(True, chunk_sizes=[16, 8], left_contexts=[64, -1], dynamic_chunk=True)
    assert cfg.chunk_sizes == (16, 8)
    d = cfg.to_dict()
    assert d["chunk_sizes"] == [16, 8]
    assert EncoderConfig.from_dict(d) == cfg
    with pytest.raises(ValueError):
        EncoderConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError):
        EncoderConfig(d_model=30, num_heads=4)
    with pytest.raises(ValueError):
        EncoderConfig(chunk_sizes=(-2,))


def test_stack_unstack_states_regroup_streams() -> None:
    from asr_kd.models.states import stack_states, unstack_states

    enc = ConformerEncoder(_cfg(True)).double().eval()
    k = 3
    x = torch.randn(2, 4 * 12 + 3, F, dtype=torch.float64)
    ref = _stream(enc, x, k, -1, new_frames_only=False)  # both streams in step
    # stream 1 starts one chunk later than stream 0, then they are batched together
    n_in, shift = enc.chunk_input_frames(k), enc.chunk_shift_frames(k)
    s0 = enc.init_states(1, -1, dtype=torch.float64)
    o0, s0 = enc.streaming_forward(x[:1, :n_in], s0, k, -1)
    s1 = enc.init_states(1, -1, dtype=torch.float64)
    batched = stack_states([s0, s1])
    assert batched["keys"].shape[2] == k and batched["offset"].tolist() == [k, 0]
    window = torch.cat((x[:1, shift : shift + n_in], x[1:, :n_in]), dim=0)
    out, batched = enc.streaming_forward(window, batched, k, -1)
    torch.testing.assert_close(out[0], ref[0, k : 2 * k], rtol=0, atol=1e-10)
    torch.testing.assert_close(out[1], ref[1, :k], rtol=0, atol=1e-10)
    a, b = unstack_states(batched)
    assert a["offset"].tolist() == [2 * k] and b["offset"].tolist() == [k]


def test_feature_normalisation_equals_normalised_input() -> None:
    """set_feature_stats(mean, std) on x == identity stats on (x - mean) / std; stats travel in state_dict."""
    torch.manual_seed(0)
    enc = ConformerEncoder(_cfg(False)).double().eval()
    x = torch.randn(2, 40, F, dtype=torch.float64) * 3 - 6
    lens = torch.tensor([40, 31])
    mean, std = x.mean((0, 1)), x.std((0, 1))
    plain = enc(((x - mean) / std), lens).out
    enc.subsampling.set_feature_stats(mean, std)
    torch.testing.assert_close(enc(x, lens).out, plain, rtol=0, atol=1e-12)
    other = ConformerEncoder(_cfg(False)).double().eval()
    other.load_state_dict(enc.state_dict())
    torch.testing.assert_close(other(x, lens).out, plain, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        enc.subsampling.set_feature_stats(torch.zeros(F + 1), torch.ones(F + 1))


def test_estimate_feature_stats_matches_numpy(tmp_path) -> None:
    """Global per-bin mean/std over all frames of the sampled cuts."""
    import numpy as np
    from lhotse import CutSet, Features, MonoCut, NumpyFilesWriter

    from asr_kd.data.stats import estimate_feature_stats

    rng = np.random.default_rng(0)
    arrays = [rng.normal(-5, 2, size=(n, 80)).astype(np.float32) for n in (30, 17, 44)]
    cuts = []
    with NumpyFilesWriter(tmp_path) as writer:
        for i, a in enumerate(arrays):
            key = writer.write(f"c{i}", a)
            dur = a.shape[0] * 0.01
            feats = Features(type="fbank", num_frames=a.shape[0], num_features=80, frame_shift=0.01,
                             sampling_rate=16000, start=0, duration=dur, storage_type=writer.name,
                             storage_path=str(tmp_path), storage_key=key)
            cuts.append(MonoCut(id=f"c{i}", start=0, duration=dur, channel=0, features=feats))
    mean, std = estimate_feature_stats(CutSet.from_cuts(cuts))
    allf = np.concatenate(arrays).astype(np.float64)
    np.testing.assert_allclose(mean.numpy(), allf.mean(0), rtol=0, atol=1e-5)
    np.testing.assert_allclose(std.numpy(), allf.std(0), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="empty"):
        estimate_feature_stats(CutSet.from_cuts([]))
