"""Loss computers: what one training step optimises, pluggable for distillation.

The training loop (``asr_kd.train.trainer``) knows nothing about
transducers or distillation; it calls a *loss computer*::

    loss, info = loss_computer(model, batch, step)

* ``model``: the unwrapped model (a ``Transducer``; under DDP the loop wraps
  model and loss computer together, see ``trainer.StepModule``).
* ``batch``: a batch dict of ``asr_kd.data`` (features (B,T,80),
  feature_lens (B,), texts, cut_ids, cuts[, clean_features]); tensors may
  still be on the CPU -- the loss computer moves what it uses.
* ``step``: global training batch index (0-based), for warm-ups.
* ``loss``: 0-dim tensor to back-propagate, already normalised by the one
  loss-normalisation rule: transducer (and CTC, output-KD) terms are sums over
  the batch divided by ``info["frames"]``, the number of encoder frames of
  this batch, so every term is per encoder frame and its weight does not
  depend on batch size or utterance length; the hidden-layer MSE is a mean
  over frames and dimensions.
* ``info``: python floats for logging.  ``info["frames"]`` is required (the
  normaliser, > 0).  Every other entry is a per-frame average of this batch;
  trackers weight entries by ``frames`` when aggregating over batches and
  ranks.  Under DDP the loop rescales ``loss`` by
  ``frames * world_size / sum_ranks(frames)`` so that averaging gradients
  over ranks gives exactly sum_all / frames_all.

Optional hooks (looked up with ``getattr``):

* ``parameters()`` -> iterable of extra trainable parameters (e.g. a KD
  projection).  They are added to the optimiser and synchronised by DDP.
  Frozen modules (a teacher) must not be returned.
* ``state_dict()`` / ``load_state_dict(sd)`` -> stored under
  ``"loss_computer"`` in training checkpoints.
* ``train(mode: bool)`` -> called with the model's mode (train/validation).
* ``needs_clean_features: bool`` -> ask the data module for ``clean_features``.

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

import argparse
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = [
    "LossComputer",
    "TransducerLossConfig",
    "TransducerLossComputer",
    "loss_scales",
    "add_loss_arguments",
    "build_loss_computer",
    "batch_to_device",
]


@runtime_checkable
class LossComputer(Protocol):
    """``(model, batch, step) -> (loss, info)``; see the module docstring for the contract."""

    def __call__(self, model: nn.Module, batch: dict[str, Any], step: int) -> tuple[Tensor, dict[str, float]]:
        ...


@dataclass
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
            raise ValueError(f"losses.py: delay_penalty must be >= 0, got {self.delay_penalty}")
        if self.prune_range < 2:
            raise ValueError(f"losses.py: prune_range must be >= 2, got {self.prune_range}")
        if not 0.0 <= self.simple_loss_scale <= 1.0 or not 0.0 <= self.pruned_scale_start <= 1.0:
            raise ValueError("losses.py: simple_loss_scale and pruned_scale_start must lie in [0, 1]")
        if self.warm_step < 0:
            raise ValueError(f"losses.py: warm_step must be >= 0, got {self.warm_step}")


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
            raise KeyError(f"losses.py: batch has no {k!r} (keys: {sorted(batch)})")
        out.append(batch[k].to(device, non_blocking=True))
    return out


class TransducerLossComputer:
    """Simple + pruned transducer loss with warmed-up scales.

    Args:
      encode: texts -> token ids (``Tokenizer.encode``); a batch may instead
        carry ``batch["tokens"]`` (list of id lists), which wins.
      cfg: TransducerLossConfig.

    For composition (distillation): ``forward_model`` runs the model and
    returns its ``TransducerOutput``; ``transducer_loss`` turns it into
    ``(loss, info)``.  ``__call__`` is the two in sequence.
    """

    needs_clean_features = False

    def __init__(self, encode: Callable[[list[str]], list[list[int]]], cfg: TransducerLossConfig,
                 ctc_head: Optional[nn.Linear] = None, ctc_scale: float = 0.0, blank_id: int = 0) -> None:
        if ctc_scale < 0:
            raise ValueError(f"losses.py: ctc_scale must be >= 0, got {ctc_scale}")
        if ctc_scale > 0 and ctc_head is None:
            raise ValueError("losses.py: ctc_scale > 0 needs a ctc_head")
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

    def parameters(self) -> Iterator[nn.Parameter]:
        return iter(self.ctc_head.parameters()) if self.ctc_head is not None else iter(())

    def state_dict(self) -> dict[str, Any]:
        return {"ctc_head": self.ctc_head.state_dict()} if self.ctc_head is not None else {}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if self.ctc_head is not None and "ctc_head" in sd:
            self.ctc_head.load_state_dict(sd["ctc_head"])

    def train(self, mode: bool = True) -> None:
        if self.ctc_head is not None:
            self.ctc_head.train(mode)


def add_loss_arguments(parser: argparse.ArgumentParser) -> None:
    """The transducer-loss flags (see TransducerLossConfig)."""
    g = parser.add_argument_group("transducer loss")
    g.add_argument("--prune-range", type=int, default=5, help="pruned-loss symbol range R (>= 2) (default: %(default)s)")
    g.add_argument("--am-scale", type=float, default=0.0, help="am_only_scale of the smoothed simple loss (default: %(default)s)")
    g.add_argument("--lm-scale", type=float, default=0.25, help="lm_only_scale of the smoothed simple loss (default: %(default)s)")
    g.add_argument("--simple-loss-scale", type=float, default=0.5,
                   help="weight of the simple loss after the warm-up (starts at 1) (default: %(default)s)")
    g.add_argument("--pruned-scale-start", type=float, default=0.1,
                   help="weight of the pruned loss at step 0 (ends at 1) (default: %(default)s)")
    g.add_argument("--warm-step", type=int, default=2000,
                   help="batches over which the two loss weights reach their final values (default: %(default)s)")
    g.add_argument("--delay-penalty", type=float, default=0.0,
                   help="k2 delay penalty on both transducer losses, applied from --warm-step on "
                        "(0: off; the k2 authors tried 0.0015-0.01) (default: %(default)s)")
    g.add_argument("--ctc-scale", type=float, default=0.0,
                   help="weight of an auxiliary CTC loss on the encoder output (0: off) (default: %(default)s)")


def transducer_loss_config(args: argparse.Namespace) -> TransducerLossConfig:
    return TransducerLossConfig(
        prune_range=args.prune_range,
        am_scale=args.am_scale,
        lm_scale=args.lm_scale,
        simple_loss_scale=args.simple_loss_scale,
        pruned_scale_start=args.pruned_scale_start,
        warm_step=args.warm_step,
        delay_penalty=float(getattr(args, "delay_penalty", 0.0)),
    )


def build_loss_computer(args: argparse.Namespace, model: nn.Module, tokenizer: Optional[Any] = None) -> LossComputer:
    """The loss computer for these arguments.

    Without distillation flags (``--kd-stage`` absent or "none"): a
    ``TransducerLossComputer``.  Otherwise ``asr_kd.train.kd.build_kd_loss_computer(args,
    model, base)`` receives the transducer loss computer ``base`` to build on.
    ``model`` is already on its training device.
    """
    if tokenizer is None:
        from asr_kd.data.tokenizer import Tokenizer

        tokenizer = Tokenizer(args.bpe_model)
    ctc_scale = float(getattr(args, "ctc_scale", 0.0))
    ctc_head = None
    if ctc_scale > 0:
        device = next(model.parameters()).device
        ctc_head = nn.Linear(model.encoder.output_dim, model.vocab_size).to(device)
    base = TransducerLossComputer(tokenizer.encode, transducer_loss_config(args), ctc_head=ctc_head,
                                  ctc_scale=ctc_scale, blank_id=model.blank_id)
    stage = getattr(args, "kd_stage", None)
    if stage in (None, "none", ""):
        return base
    from asr_kd.train import kd  # provided by the distillation integration

    return kd.build_kd_loss_computer(args, model, base)
