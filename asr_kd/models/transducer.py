"""Transducer (Conformer or Zipformer encoder) trained with the pruned RNN-T loss (k2 semantics).

The encoder is ``TransducerConfig.encoder_type``: "conformer" (``EncoderConfig``,
``conformer.py``) or "zipformer" (``ZipformerConfig``, ``zipformer/``); both have
the interface described in ``encoders.py``.

Training forward (all sums over the batch):

1. ``encoder_out = Enc(features)`` (B, T, De), lens T_b; ``decoder_out =
   Dec([blank] + y)`` (B, S+1, Dd).
2. Simple loss: a "trivial joiner" lattice with
   ``lm = simple_lm_proj(decoder_out)`` (B, S+1, V) and ``am =
   simple_am_proj(encoder_out)`` (B, T, V); logits(t, s) = am_t + lm_s,
   smoothed with ``lm_only_scale`` / ``am_only_scale``
   (``asr_kd.rnnt.rnnt_loss_smoothed``).  Its arc occupancies
   (px_grad (B,S,T+1), py_grad (B,S+1,T)) locate the likely alignments.
3. ``ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, prune_range)``
   (B, T, R): for every frame t, R consecutive symbol positions
   ``ranges[b,t,0] .. ranges[b,t,0]+R-1``.
4. Pruned loss: the full joiner evaluated only on those nodes,
   ``logits[b,t,r] = Joiner(enc_t, dec_{ranges[b,t,r]})`` (B, T, R, V),
   then ``rnnt_loss_pruned``.

Node occupancy.  A lattice node (t, s) is left by exactly one arc on every
path that visits it (the symbol arc px[s, t] or the blank arc py[s, t]), so
its occupancy -- the posterior probability that the alignment passes
through it under the simple lattice -- is

    occ(t, s) = px_grad[s, t] + py_grad[s, t]        (px_grad[S, t] := 0),

and summing over all nodes with t < T_b gives S_b + T_b.  ``node_occupancy``
gathers occ on ``ranges`` (B, T, R), zero at invalid nodes (t >= T_b or
position > S_b), detached.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from asr_kd import rnnt
from asr_kd.models.decoder import Decoder
from asr_kd.models.encoders import (ENCODER_TYPES, AnyEncoderConfig, build_encoder, encoder_config_class,
                                    min_input_frames)
from asr_kd.models.joiner import Joiner

__all__ = ["TransducerConfig", "TransducerOutput", "Transducer", "build_transducer", "node_occupancy", "valid_nodes"]


@dataclass
class TransducerConfig:
    """Everything needed to rebuild a ``Transducer`` (stored in checkpoints via to_dict).

    ``encoder_type`` ("conformer" | "zipformer") names the class of ``encoder``
    (``EncoderConfig`` | ``ZipformerConfig``); a mismatch is a ValueError.
    ``to_dict`` writes ``encoder_type`` only when it is not "conformer", so a
    Conformer config's dict is the one older versions wrote (resume, averaging
    and ``--continue-from`` compare these dicts) and ``from_dict`` reads a dict
    without the key as a Conformer.
    """

    encoder: AnyEncoderConfig
    vocab_size: int
    decoder_dim: int = 256
    joiner_dim: int = 256
    blank_id: int = 0
    context_size: int = 2
    encoder_type: str = "conformer"

    def __post_init__(self) -> None:
        if self.encoder_type not in ENCODER_TYPES:
            raise ValueError(f"TransducerConfig: encoder_type must be one of {list(ENCODER_TYPES)}, "
                             f"got {self.encoder_type!r}")
        if not isinstance(self.encoder, encoder_config_class(self.encoder_type)):
            wanted, got = encoder_config_class(self.encoder_type).__name__, type(self.encoder).__name__
            raise ValueError(f"TransducerConfig: encoder_type {self.encoder_type!r} needs encoder={wanted}(...), "
                             f"got {got} (pass the matching encoder_type)")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["encoder"] = self.encoder.to_dict()
        if self.encoder_type == "conformer":
            del d["encoder_type"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TransducerConfig":
        d = dict(d)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"model config: unknown TransducerConfig keys {sorted(unknown)}")
        kind = d.pop("encoder_type", "conformer")
        config_cls = encoder_config_class(kind)
        enc = d.pop("encoder")
        return cls(encoder=enc if isinstance(enc, config_cls) else config_cls.from_dict(enc), encoder_type=kind, **d)


@dataclass
class TransducerOutput:
    """What ``Transducer.forward`` returns.

    simple_loss, pruned_loss: scalars, summed over the batch.
    num_frames: 0-dim int64 tensor, sum of encoder_lens (the normaliser).
    encoder_out (B,T,De); encoder_lens (B,); decoder_out (B,S+1,Dd) unprojected;
    symbols (B,S) int64 (blank-padded); boundary (B,4) rows [0,0,S_b,T_b];
    ranges (B,T,R) int64; logits (B,T,R,V) pruned joiner output;
    node_occupancy (B,T,R) detached; hidden: encoder layer outputs (B,T,De).
    """

    simple_loss: Tensor
    pruned_loss: Tensor
    num_frames: Tensor
    encoder_out: Tensor
    encoder_lens: Tensor
    decoder_out: Tensor
    symbols: Tensor
    boundary: Tensor
    ranges: Tensor
    logits: Tensor
    node_occupancy: Tensor
    hidden: list[Tensor] = field(default_factory=list)


def _full_precision(x: Tensor) -> Tensor:
    """Losses run in float32 at least (half-precision inputs under AMP are upcast)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def valid_nodes(ranges: Tensor, boundary: Tensor) -> Tensor:
    """(B, T, R) bool: pruned node (b, t, r) lies in the lattice, t < T_b and ranges[b, t, r] <= S_b."""
    frame = torch.arange(ranges.size(1), device=ranges.device)
    return (frame[None, :, None] < boundary[:, 3, None, None]) & (ranges <= boundary[:, 2, None, None])


def node_occupancy(px_grad: Tensor, py_grad: Tensor, ranges: Tensor, boundary: Tensor) -> Tensor:
    """Occupancy of the pruned nodes (see module docstring).

    Args:
      px_grad: (B, S, T+1) symbol-arc occupancies.
      py_grad: (B, S+1, T) blank-arc occupancies.
      ranges: (B, T, R) int64 absolute symbol positions.
      boundary: (B, 4) rows [0, 0, S_b, T_b].

    Returns:
      (B, T, R) detached, 0 where t >= T_b or ranges > S_b.
    """
    b, s1, t = py_grad.shape
    occ = py_grad.detach().clone()
    if s1 > 1:
        occ[:, : s1 - 1] += px_grad.detach()[:, :, :t]
    occ = occ.transpose(1, 2)  # (B, T, S+1)
    gathered = occ.gather(2, ranges.clamp(max=s1 - 1))
    return gathered * valid_nodes(ranges, boundary)


class Transducer(nn.Module):
    """Encoder (``cfg.encoder_type``) + stateless decoder + joiner, with simple-loss projections."""

    def __init__(self, cfg: TransducerConfig) -> None:
        super().__init__()
        self.config = cfg
        self.blank_id = cfg.blank_id
        self.vocab_size = cfg.vocab_size
        self.encoder = build_encoder(cfg.encoder)
        self.decoder = Decoder(cfg.vocab_size, cfg.decoder_dim, cfg.blank_id, cfg.context_size)
        self.joiner = Joiner(self.encoder.output_dim, cfg.decoder_dim, cfg.joiner_dim, cfg.vocab_size)
        self.simple_am_proj = nn.Linear(self.encoder.output_dim, cfg.vocab_size)
        self.simple_lm_proj = nn.Linear(cfg.decoder_dim, cfg.vocab_size)

    def _symbols(self, y: Sequence[Sequence[int]], device: torch.device) -> tuple[Tensor, Tensor]:
        """Pad label lists to (B, S) int64 with blank; return (symbols, lengths (B,))."""
        lens = [len(seq) for seq in y]
        s = max(lens, default=0)
        symbols = torch.full((len(y), s), self.blank_id, dtype=torch.int64)
        for i, seq in enumerate(y):
            if len(seq) == 0:
                continue
            row = torch.as_tensor(list(seq), dtype=torch.int64)
            if int(row.min()) < 0 or int(row.max()) >= self.vocab_size or bool((row == self.blank_id).any()):
                raise ValueError(
                    f"transducer labels: utterance {i} of the batch has token ids outside "
                    f"[0, {self.vocab_size}) or equal to blank ({self.blank_id}): {list(seq)}"
                )
            symbols[i, : len(seq)] = row
        return symbols.to(device), torch.as_tensor(lens, dtype=torch.int64, device=device)

    def joint_on_ranges(self, encoder_out: Tensor, decoder_out: Tensor, ranges: Tensor) -> Tensor:
        """Joiner logits on the pruned nodes, (B, T, R, V).

        Args:
          encoder_out: (B, T, De) this model's encoder output.
          decoder_out: (B, S+1, Dd) this model's unprojected decoder output.
          ranges: (B, T, R) int64 symbol positions (possibly another model's).
        """
        am, lm = rnnt.do_rnnt_pruning(
            self.joiner.encoder_proj(encoder_out), self.joiner.decoder_proj(decoder_out), ranges
        )
        return self.joiner(am, lm, project_input=False)

    def forward(
        self,
        features: Tensor,
        feature_lens: Tensor,
        y: Sequence[Sequence[int]],
        prune_range: int = 5,
        am_scale: float = 0.0,
        lm_scale: float = 0.25,
        chunk_size: Optional[int] = None,
        left_context: Optional[int] = None,
        return_layers: Sequence[int] = (),
        ranges: Optional[Tensor] = None,
        delay_penalty: float = 0.0,
    ) -> TransducerOutput:
        """Simple and pruned transducer losses plus what distillation needs.

        Args:
          features: (B, T_f, F); feature_lens: (B,) int64.
          y: B label sequences (token ids, no blank).
          prune_range: s_range of ``get_rnnt_prune_ranges`` (>= 2; k2 may widen it).
          am_scale / lm_scale: am_only_scale / lm_only_scale of the smoothed simple loss.
          chunk_size / left_context: passed to the encoder (causal models).
          return_layers: encoder layers whose outputs go to ``hidden``.
          ranges: (B, T, R) int64 to use instead of this model's own ranges
            (e.g. a teacher's); must match the encoder's T.
          delay_penalty: k2's delay penalty on both losses (0: off); the ranges
            then come from the occupancies of the penalised simple lattice.

        Returns:
          TransducerOutput (see its docstring).
        """
        if len(y) != features.size(0):
            raise ValueError(f"transducer batch: {features.size(0)} feature rows but {len(y)} label sequences")
        enc = self.encoder(features, feature_lens, chunk_size, left_context, return_layers)
        encoder_out, encoder_lens = enc.out, enc.lens
        too_short = (encoder_lens < 1).nonzero().flatten().tolist()
        if too_short:
            raise ValueError(
                f"transducer batch: utterances {too_short} of the batch have fewer than "
                f"{min_input_frames(self.encoder)} feature frames "
                f"(feature_lens {feature_lens[too_short].tolist()}): no encoder output"
            )
        device = encoder_out.device
        symbols, symbol_lens = self._symbols(y, device)
        blank_col = torch.full((symbols.size(0), 1), self.blank_id, dtype=torch.int64, device=device)
        decoder_out = self.decoder(torch.cat((blank_col, symbols), dim=1))  # (B, S+1, Dd)
        boundary = torch.zeros(symbols.size(0), 4, dtype=torch.int64, device=device)
        boundary[:, 2] = symbol_lens
        boundary[:, 3] = encoder_lens

        lm = _full_precision(self.simple_lm_proj(decoder_out))
        am = _full_precision(self.simple_am_proj(encoder_out))
        with torch.autocast(device_type=device.type, enabled=False):
            simple_loss, (px_grad, py_grad) = rnnt.rnnt_loss_smoothed(
                lm=lm,
                am=am,
                symbols=symbols,
                termination_symbol=self.blank_id,
                lm_only_scale=lm_scale,
                am_only_scale=am_scale,
                boundary=boundary,
                delay_penalty=delay_penalty,
                reduction="sum",
                return_grad=True,
            )
        if ranges is None:
            ranges = rnnt.get_rnnt_prune_ranges(px_grad, py_grad, boundary, prune_range)
        elif ranges.dim() != 3 or ranges.shape[:2] != encoder_out.shape[:2]:
            raise ValueError(
                f"transducer: the given pruning ranges must be (B, T, R) = {tuple(encoder_out.shape[:2])} + (R,), "
                f"got {tuple(ranges.shape)}"
            )
        logits = self.joint_on_ranges(encoder_out, decoder_out, ranges)
        with torch.autocast(device_type=device.type, enabled=False):
            pruned_loss = rnnt.rnnt_loss_pruned(
                logits=_full_precision(logits),
                symbols=symbols,
                ranges=ranges,
                termination_symbol=self.blank_id,
                boundary=boundary,
                delay_penalty=delay_penalty,
                reduction="sum",
            )
        return TransducerOutput(
            simple_loss=simple_loss,
            pruned_loss=pruned_loss,
            num_frames=encoder_lens.sum(),
            encoder_out=encoder_out,
            encoder_lens=encoder_lens,
            decoder_out=decoder_out,
            symbols=symbols,
            boundary=boundary,
            ranges=ranges,
            logits=logits,
            node_occupancy=node_occupancy(px_grad, py_grad, ranges, boundary),
            hidden=enc.hidden,
        )


def build_transducer(cfg: TransducerConfig) -> Transducer:
    """Construct a freshly initialised ``Transducer`` from its config."""
    return Transducer(cfg)
