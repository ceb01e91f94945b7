"""The transducer loss computer: simple + pruned losses with warmed-up scales, optional CTC.

What a loss computer is and what the training loop asks of it is stated by
``asr_kd.train.loss_computer.LossComputer``; distillation builds on this one
(``asr_kd.train.kd``); ``asr_kd.train.loss_factory.build_loss_computer`` picks
and builds one from typed settings.

Transducer loss (``TransducerLossComputer``): with simple and pruned losses
L_s, L_p summed over the batch and N encoder frames,

    loss = (a(step) * L_s + c(step) * L_p) / N

Warm-up of the two scales.  At initialisation the pruning ranges taken from
the simple lattice are close to arbitrary, so the pruned loss sees mostly
irrelevant nodes; the simple loss must first learn a rough alignment.  With
``r = min(1, step / W)`` (W = ``--warm-step``) and a smooth ramp
``h(r) = r^2 (3 - 2 r)`` (zero slope at both ends, so neither scale jumps):

    a(step) = 1 - (1 - simple_loss_scale) * h(r)        1   -> simple_loss_scale
    c(step) = pruned_scale_start + (1 - pruned_scale_start) * h(r)   p0 -> 1

Defaults: simple_loss_scale 0.5, pruned_scale_start 0.1, W 2000 batches.

Optional CTC auxiliary loss (``--ctc-scale`` = w > 0): a linear head on the
encoder output, ``log_softmax(W_ctc h_t)`` over the same vocabulary (blank
id 0), and the CTC negative log-likelihood L_ctc summed over the batch:

    loss = (a(step) * L_s + c(step) * L_p + w * L_ctc) / N

Why: a transducer trained from scratch on a few hours of audio first learns
its prediction network (the label prior) and only slowly makes the encoder
carry acoustic information; CTC has no label context, so its gradient
reaches the encoder only through acoustics. The head lives in the loss
computer (``parameters()``/``state_dict()``), not in the model: inference
and export never see it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from asr_kd.train.loss_computer import LossComputer

__all__ = [
    "TransducerLossConfig",
    "TransducerLossComputer",
    "loss_scales",
    "batch_to_device",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransducerLossConfig:
    """Transducer loss options (the --prune-range ... flags).

    Attributes:
      prune_range: s_range for the pruned loss (>= 2).
      am_scale / lm_scale: am_only_scale / lm_only_scale of the smoothed simple loss.
      simple_loss_scale: final weight a of the simple loss.
      pruned_scale_start: initial weight c of the pruned loss.
      warm_step: W, batches over which the weights move to their final values.
      delay_penalty: k2's delay penalty lambda on both transducer losses (every
        emission at frame t gains lambda * ((T_b - 1) / 2 - t), favouring early
        emission; 0 = off). Applied only from step W on: the k2 authors report
        that applying it from the first batch can stop training from converging.
    """

    prune_range: int = 5
    am_scale: float = 0.0
    lm_scale: float = 0.25
    simple_loss_scale: float = 0.5
    pruned_scale_start: float = 0.1
    warm_step: int = 2000
    delay_penalty: float = 0.0

    def __post_init__(self) -> None:
        if not self.delay_penalty >= 0.0:
            raise ValueError(f"--delay-penalty must be >= 0, got {self.delay_penalty}")
        if self.prune_range < 2:
            raise ValueError(f"--prune-range must be >= 2, got {self.prune_range}")
        if not 0.0 <= self.simple_loss_scale <= 1.0 or not 0.0 <= self.pruned_scale_start <= 1.0:
            raise ValueError(f"--simple-loss-scale and --pruned-scale-start must lie in [0, 1], "
                             f"got {self.simple_loss_scale}, {self.pruned_scale_start}")
        if self.warm_step < 0:
            raise ValueError(f"--warm-step must be >= 0, got {self.warm_step}")


def loss_scales(step: int, cfg: TransducerLossConfig) -> tuple[float, float]:
    """(a, c): simple and pruned loss weights at ``step`` (module docstring)."""
    r = 1.0 if cfg.warm_step == 0 else min(1.0, max(0.0, step / cfg.warm_step))
    h = r * r * (3.0 - 2.0 * r)
    simple = 1.0 - (1.0 - cfg.simple_loss_scale) * h
    pruned = cfg.pruned_scale_start + (1.0 - cfg.pruned_scale_start) * h
    return simple, pruned


def batch_to_device(batch: dict[str, Any], device: torch.device, keys: Sequence[str]) -> list[Tensor]:
    """The tensors ``batch[k]`` for ``k`` in ``keys``, moved to ``device`` (non-blocking)."""
    out = []
    for k in keys:
        if k not in batch:
            raise KeyError(f"batch has no {k!r} (keys: {sorted(batch)})")
        out.append(batch[k].to(device, non_blocking=True))
    return out


class TransducerLossComputer(LossComputer):
    """Simple + pruned transducer loss with warmed-up scales.

    Args:
      encode: texts -> token ids (``Tokenizer.encode``); a batch may instead
        carry ``batch["tokens"]`` (list of id lists), which wins.
      cfg: TransducerLossConfig.

    For composition (distillation): ``forward_model`` runs the model and
    returns its ``TransducerOutput``; ``transducer_loss`` turns it into
    ``(loss, info)``.  ``__call__`` is the two in sequence.

    Trainable state (``LossComputer`` hooks): the CTC head, named ``ctc_head``
    (checkpoint state ``{"ctc_head": ...}``, parameter names ``ctc_head.<n>``).
    """

    def __init__(self, encode: Callable[[list[str]], list[list[int]]], cfg: TransducerLossConfig,
                 ctc_head: Optional[nn.Linear] = None, ctc_scale: float = 0.0, blank_id: int = 0) -> None:
        if ctc_scale < 0:
            raise ValueError(f"--ctc-scale must be >= 0, got {ctc_scale}")
        if ctc_scale > 0 and ctc_head is None:
            raise ValueError("TransducerLossComputer: ctc_scale > 0 needs a ctc_head")
        self.encode = encode
        self.cfg = cfg
        self.ctc_head = ctc_head
        self.ctc_scale = ctc_scale
        self.blank_id = blank_id

    def tokens(self, batch: dict[str, Any]) -> list[list[int]]:
        if "tokens" in batch:
            return [list(t) for t in batch["tokens"]]
        return self.encode(list(batch["texts"]))

    def delay_penalty_at(self, step: int) -> float:
        """The delay penalty in force at ``step``: 0 before the loss warm-up has ended."""
        return self.cfg.delay_penalty if step >= self.cfg.warm_step else 0.0

    def forward_model(self, model: nn.Module, batch: dict[str, Any], step: int, **forward_kwargs: Any):
        """``model(features, feature_lens, tokens, prune_range, am_scale, lm_scale, **forward_kwargs)``.

        ``delay_penalty`` is passed only when it is in force (``delay_penalty_at(step) > 0``).
        """
        device = next(model.parameters()).device
        features, feature_lens = batch_to_device(batch, device, ("features", "feature_lens"))
        tokens = self.tokens(batch)
        delay_penalty = self.delay_penalty_at(step)
        if delay_penalty > 0:
            forward_kwargs["delay_penalty"] = delay_penalty
        out = model(
            features,
            feature_lens,
            tokens,
            prune_range=self.cfg.prune_range,
            am_scale=self.cfg.am_scale,
            lm_scale=self.cfg.lm_scale,
            **forward_kwargs,
        )
        if self.ctc_scale > 0:
            out.ctc_loss = self.ctc_loss(out.encoder_out, out.encoder_lens, tokens)
        return out

    def ctc_loss(self, encoder_out: Tensor, encoder_lens: Tensor, tokens: list[list[int]]) -> Tensor:
        """CTC NLL summed over the batch; encoder_out (B,T,D), encoder_lens (B,)."""
        assert self.ctc_head is not None
        log_probs = self.ctc_head(encoder_out).float().log_softmax(-1).transpose(0, 1)  # (T,B,V)
        targets = torch.tensor([t for seq in tokens for t in seq], dtype=torch.int64, device=encoder_out.device)
        target_lens = torch.tensor([len(seq) for seq in tokens], dtype=torch.int64, device=encoder_out.device)
        # zero_infinity: an utterance with more tokens (plus repeats) than frames has no
        # CTC path; it then contributes nothing instead of inf (the transducer loss still trains it).
        return nn.functional.ctc_loss(log_probs, targets, encoder_lens, target_lens, blank=self.blank_id,
                                      reduction="sum", zero_infinity=True)

    def transducer_loss(self, out: Any, step: int) -> tuple[Tensor, dict[str, float]]:
        """(a L_s + c L_p) / N and the per-frame info dict (keys: frames, loss, simple_loss, pruned_loss)."""
        frames = out.num_frames.to(torch.float32).clamp(min=1.0)
        a, c = loss_scales(step, self.cfg)
        total = a * out.simple_loss + c * out.pruned_loss
        ctc = getattr(out, "ctc_loss", None)
        if ctc is not None:
            total = total + self.ctc_scale * ctc
        loss = total / frames
        n = float(frames)
        info = {
            "frames": n,
            "loss": float(loss.detach()),
            "simple_loss": float(out.simple_loss.detach()) / n,
            "pruned_loss": float(out.pruned_loss.detach()) / n,
        }
        if ctc is not None:
            info["ctc_loss"] = float(ctc.detach()) / n
        return loss, info

    def __call__(self, model: nn.Module, batch: dict[str, Any], step: int) -> tuple[Tensor, dict[str, float]]:
        return self.transducer_loss(self.forward_model(model, batch, step), step)

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"ctc_head": self.ctc_head} if self.ctc_head is not None else {}

    def state_dict(self) -> dict[str, Any]:
        return {"ctc_head": self.ctc_head.state_dict()} if self.ctc_head is not None else {}

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        if self.ctc_head is not None and "ctc_head" in sd:
            self.ctc_head.load_state_dict(sd["ctc_head"])

    def carry_state_dict(self, sd: Mapping[str, Any], where: str) -> None:
        """The CTC head of another run (its state, or the ``base`` part of a KD run's state)."""
        if self.ctc_head is None:
            return
        old = sd.get("base", sd) if isinstance(sd, Mapping) else {}
        if old.get("ctc_head"):
            self.ctc_head.load_state_dict(old["ctc_head"])
            log.info("--continue-from: CTC head carried from %s", where)
        else:
            log.warning("--continue-from: %s has no CTC head; this run's starts fresh", where)
