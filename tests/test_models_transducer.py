"""Decoder, joiner, Transducer.forward (losses, ranges, occupancy), presets, a tiny fit."""

from __future__ import annotations

import pytest
import torch

from asr_kd.models import (
    PRESETS,
    Decoder,
    EncoderConfig,
    Joiner,
    TransducerConfig,
    build_transducer,
    preset_config,
)

F = 20
V = 12


def _model(causal: bool = False, dropout: float = 0.0) -> torch.nn.Module:
    enc = EncoderConfig(
        num_features=F,
        d_model=32,
        num_layers=2,
        num_heads=4,
        ff_dim=64,
        conv_kernel=5,
        dropout=dropout,
        causal=causal,
        chunk_sizes=(4,),
        left_contexts=(8,),
        subsampling_channels=4,
    )
    return build_transducer(TransducerConfig(encoder=enc, vocab_size=V, decoder_dim=24, joiner_dim=24))


def _batch() -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(3, 83, F, generator=g)
    lens = torch.tensor([83, 71, 47])  # 20, 17, 11 encoder frames
    y = [[1, 5, 7, 2, 9], [3, 3, 4], []]  # includes an empty transcript
    return feats, lens, y


def test_decoder_context_matches_padded_sequence() -> None:
    dec = Decoder(V, 16, blank_id=0, context_size=2)
    with torch.no_grad():
        dec.embedding.weight.normal_()
        dec.embedding.weight[0].zero_()
    y = torch.tensor([[0, 4, 7, 2], [0, 1, 1, 3]])
    full = dec(y)
    assert full.shape == (2, 4, 16)
    for u in range(4):
        ctx = torch.cat((torch.zeros(2, 1, dtype=torch.int64), y), dim=1)[:, u : u + 2]
        torch.testing.assert_close(dec(ctx, need_pad=False)[:, 0], full[:, u])
    with pytest.raises(ValueError):
        dec(y, need_pad=False)
    assert torch.all(dec.embedding.weight[0] == 0)  # blank = "no context"
    assert Decoder(V, 8, context_size=1)(y).shape == (2, 4, 8)


def test_joiner_broadcasts_over_pruned_and_full_lattices() -> None:
    j = Joiner(32, 24, 16, V)
    enc, dec = torch.randn(2, 5, 32), torch.randn(2, 4, 24)
    full = j(enc[:, :, None], dec[:, None])
    assert full.shape == (2, 5, 4, V)
    pruned = j(j.encoder_proj(enc)[:, :, None].expand(2, 5, 3, 16), torch.randn(2, 5, 3, 16), project_input=False)
    assert pruned.shape == (2, 5, 3, V)
    manual = j.output_linear(torch.tanh(j.encoder_proj(enc[:, 1]) + j.decoder_proj(dec[:, 2])))
    torch.testing.assert_close(full[:, 1, 2], manual)


@pytest.mark.parametrize("causal", [False, True])
def test_forward_losses_grads_and_outputs(causal: bool) -> None:
    model = _model(causal).train()
    feats, lens, y = _batch()
    out = model(feats, lens, y, prune_range=3, return_layers=(0, 1))
    assert out.simple_loss.dim() == 0 and out.pruned_loss.dim() == 0
    assert torch.isfinite(out.simple_loss) and torch.isfinite(out.pruned_loss)
    assert out.simple_loss > 0 and out.pruned_loss > 0
    assert out.encoder_lens.tolist() == [20, 17, 11] and int(out.num_frames) == 48
    assert out.encoder_out.shape == (3, 20, 32) and out.decoder_out.shape == (3, 6, 24)
    assert out.symbols.shape == (3, 5) and out.symbols[2].tolist() == [0] * 5
    assert out.boundary.tolist() == [[0, 0, 5, 20], [0, 0, 3, 17], [0, 0, 0, 11]]
    r = out.ranges.size(-1)
    assert r >= 3 and out.ranges.shape == (3, 20, r) and out.logits.shape == (3, 20, r, V)
    # hidden[i] is block i's (unnormalised) residual output; the encoder output is its final LayerNorm
    assert len(out.hidden) == 2
    torch.testing.assert_close(model.encoder.final_norm(out.hidden[1]), out.encoder_out, rtol=0, atol=0)
    (out.simple_loss + out.pruned_loss).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0

    occ = out.node_occupancy
    assert occ.shape == (3, 20, r) and not occ.requires_grad
    assert (occ >= -1e-6).all()
    frames = torch.arange(20)[None, :, None]
    invalid = (frames >= out.boundary[:, 3, None, None]) | (out.ranges > out.boundary[:, 2, None, None])
    assert (occ[invalid] == 0).all()
    # each utterance's alignment visits T_b + S_b nodes (t < T_b); the ranges hold most of that mass
    per_utt = occ.sum(dim=(1, 2))
    total = (out.boundary[:, 2] + out.boundary[:, 3]).to(per_utt.dtype)
    assert (per_utt <= total + 1e-3).all() and (per_utt >= 0.5 * total).all()


def test_joint_on_ranges_and_external_ranges() -> None:
    model = _model(causal=True).eval()
    feats, lens, y = _batch()
    with torch.no_grad():
        out = model(feats, lens, y, prune_range=3)
        again = model.joint_on_ranges(out.encoder_out, out.decoder_out, out.ranges)
        assert torch.equal(again, out.logits)
        # another model's ranges (here: shifted copies, still monotone) are used as given
        r = out.ranges.size(-1)
        other = torch.clamp(out.ranges[:, :, :1] - 1, min=0) + torch.arange(r)
        ext = model(feats, lens, y, prune_range=3, ranges=other)
        assert torch.equal(ext.ranges, other)
        torch.testing.assert_close(ext.simple_loss, out.simple_loss)
        torch.testing.assert_close(ext.logits, model.joint_on_ranges(out.encoder_out, out.decoder_out, other))
        with pytest.raises(ValueError):
            model(feats, lens, y, ranges=other[:, :5])


def test_bad_labels_and_too_short_input() -> None:
    model = _model()
    feats, lens, _ = _batch()
    with pytest.raises(ValueError, match="utterance 1"):
        model(feats, lens, [[1], [0, 2], [3]])  # blank used as a label
    with pytest.raises(ValueError, match="utterance 0"):
        model(feats, lens, [[V], [1], [3]])
    with pytest.raises(ValueError, match="fewer than 7"):
        model(feats, torch.tensor([83, 5, 47]), [[1], [1], [3]])


def test_config_roundtrip_and_presets() -> None:
    cfg = preset_config("small", "student", vocab_size=500)
    assert cfg.encoder.causal and cfg.encoder.chunk_sizes == (16,) and cfg.encoder.left_contexts == (64,)
    assert TransducerConfig.from_dict(cfg.to_dict()) == cfg
    assert set(PRESETS) == {"tiny", "small", "full", "large"}
    for name, (teacher, student) in PRESETS.items():
        assert not teacher["causal"] and student["causal"]
        EncoderConfig(**teacher), EncoderConfig(**student)
    tiny = build_transducer(preset_config("tiny", "teacher", vocab_size=500))
    assert 1e5 < sum(p.numel() for p in tiny.parameters()) < 5e5
    with pytest.raises(ValueError):
        preset_config("huge", "teacher", 500)


def test_tiny_model_fits_a_tiny_batch() -> None:
    torch.manual_seed(0)
    model = _model(causal=True).train()
    feats, lens, y = _batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(40):
        out = model(feats, lens, y, prune_range=3, lm_scale=0.25, am_scale=0.0)
        loss = (0.5 * out.simple_loss + out.pruned_loss) / out.num_frames
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    print("tiny fit losses", [round(v, 3) for v in losses])
    assert losses[-1] < 0.5 * losses[0], losses
