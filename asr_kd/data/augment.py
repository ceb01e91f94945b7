"""Training-time augmentation: SpecAugment masks and additive noise.

Randomness: every random choice for a batch comes from generators seeded by
:func:`batch_seed` (the base seed, the epoch and the ids of the cuts in the
batch). Augmentation is therefore a pure function of (seed, epoch, batch
content): it does not depend on the number of data-loader workers, on which
worker built the batch, or on whether training was interrupted and resumed.

What the teacher sees: the data loader returns ``clean_features`` (the input
*before* noise and SpecAugment) next to ``features`` (the student's augmented
input). Both have the same frame count, so frame ``t`` of the teacher and of
the student describe the same 10 ms of audio.

SpecAugment here is frequency and time **masking only**. Time warping is off
by default (``time_warp=0``) because it moves frames: after warping, student
frame ``t`` no longer corresponds to teacher frame ``t`` and every frame-level
distillation target (hidden-layer MSE, lattice-node KL) would be misaligned.
"""
from __future__ import annotations

import hashlib
import logging
import math
import random
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import torch

__all__ = ["batch_seed", "SpecAugmentConfig", "SpecAugment", "NoiseMixer"]

log = logging.getLogger(__name__)


def batch_seed(base_seed: int, epoch: int, cut_ids: Iterable[str]) -> int:
    """A 63-bit seed from (base seed, epoch, the set of cut ids), stable across
    processes and Python runs (SHA-256, not ``hash()``)."""
    h = hashlib.sha256()
    h.update(f"{int(base_seed)}|{int(epoch)}|".encode())
    for cid in sorted(cut_ids):
        h.update(cid.encode("utf-8"))
        h.update(b"\0")
    return int.from_bytes(h.digest()[:8], "little") & ((1 << 63) - 1)


@dataclass
class SpecAugmentConfig:
    """SpecAugment policy (Park et al. 2019), masks only by default.

    Frequency: ``num_freq_masks`` bands, each of width uniform in
    ``[0, max_freq_width]`` bins. Time: at most ``max_time_fraction`` of an
    utterance's ``T`` valid frames is masked in total; the number of time
    masks is the smallest count (≤ ``num_time_masks``) whose masks of width
    ≤ ``max_time_width`` can spend that budget, each mask's width is uniform in
    ``[0, min(max_time_width, floor(budget / count))]``. Each utterance is
    augmented with probability ``p``. Masked cells take the mean of that
    utterance's (unmasked) valid features, i.e. 0 after mean normalisation.
    """

    num_freq_masks: int = 2
    max_freq_width: int = 27
    num_time_masks: int = 10
    max_time_width: int = 100
    max_time_fraction: float = 0.15
    p: float = 0.9
    # Maximum warp in frames; 0 = off. Breaks teacher/student frame alignment.
    time_warp: int = 0


class SpecAugment:
    """Apply :class:`SpecAugmentConfig` masks to a padded batch (returns a copy)."""

    def __init__(self, cfg: Optional[SpecAugmentConfig] = None) -> None:
        self.cfg = cfg or SpecAugmentConfig()
        if self.cfg.time_warp < 0 or self.cfg.max_freq_width < 0 or self.cfg.max_time_width < 0:
            raise ValueError(f"negative SpecAugment size in {self.cfg}")

    def time_masks_for(self, num_frames: int) -> Tuple[int, int]:
        """(number of time masks, max width of each) for an utterance of ``num_frames``."""
        c = self.cfg
        budget = c.max_time_fraction * num_frames
        if c.num_time_masks <= 0 or c.max_time_width <= 0 or budget < 1:
            return 0, 0
        count = min(c.num_time_masks, max(1, math.ceil(budget / c.max_time_width)))
        width = min(c.max_time_width, int(budget // count))
        return count, width

    def __call__(self, features: torch.Tensor, lengths: torch.Tensor,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Args:
          features: (B, T, F) padded features; frames >= lengths[b] are padding
            and are never changed.
          lengths: (B,) number of valid frames.
          generator: source of randomness (see :func:`batch_seed`).
        Returns:
          (B, T, F) new tensor: ``features`` with masked cells set to the
          per-utterance mean; only whole frequency bands and whole frames within
          the valid region differ from the input.
        """
        if features.dim() != 3:
            raise ValueError(f"expected features (B, T, F), got {tuple(features.shape)}")
        out = features.clone()
        num_bins = features.size(2)
        c = self.cfg

        def randint(low: int, high: int) -> int:  # inclusive bounds
            return int(torch.randint(low, high + 1, (1,), generator=generator))

        for b in range(features.size(0)):
            t_valid = int(lengths[b])
            if t_valid <= 0:
                continue
            if float(torch.rand(1, generator=generator)) >= c.p:
                continue
            x = out[b, :t_valid]
            if c.time_warp > 0:
                x = _time_warp(x, c.time_warp, randint)
                out[b, :t_valid] = x
            fill = x.mean()
            for _ in range(c.num_freq_masks):
                w = randint(0, min(c.max_freq_width, num_bins))
                if w == 0:
                    continue
                f0 = randint(0, num_bins - w)
                out[b, :t_valid, f0:f0 + w] = fill
            count, max_w = self.time_masks_for(t_valid)
            for _ in range(count):
                w = randint(0, max_w)
                if w == 0:
                    continue
                t0 = randint(0, t_valid - w)
                out[b, t0:t0 + w, :] = fill
        return out


def _time_warp(x: torch.Tensor, max_warp: int, randint) -> torch.Tensor:
    """Piecewise-linear warp of (T, F) ``x``: the frame at a random centre c
    moves to c + w (|w| ≤ max_warp); both sides are linearly resampled."""
    t = x.size(0)
    if t <= 2 * max_warp + 2:
        return x
    c = randint(max_warp + 1, t - max_warp - 1)
    w = randint(-max_warp, max_warp)
    if w == 0:
        return x
    xt = x.t().unsqueeze(0)  # (1, F, T)
    left = torch.nn.functional.interpolate(xt[:, :, :c], size=c + w, mode="linear", align_corners=False)
    right = torch.nn.functional.interpolate(xt[:, :, c:], size=t - c - w, mode="linear",
                                            align_corners=False)
    return torch.cat([left, right], dim=2)[0].t()


class NoiseMixer:
    """Additive noise from a CutSet of noise cuts at a random SNR.

    For each cut, with probability ``prob``: pick a noise cut, take a random
    window of the cut's duration from it (repeating a short noise end to end),
    and mix it into the whole cut at an SNR drawn uniformly from ``snr_range``
    (dB). The result is a lhotse ``MixedCut`` keeping the cut's id and
    supervisions; its audio (on-the-fly features) or features (stored
    features: lhotse adds the energies) are mixed when loaded.
    """

    def __init__(self, noise_cuts, snr_range: Tuple[float, float] = (10.0, 20.0),
                 prob: float = 0.5) -> None:
        from lhotse import CutSet

        if not isinstance(noise_cuts, CutSet):
            noise_cuts = CutSet.from_file(noise_cuts)
        self.noise: List = list(noise_cuts)
        if not self.noise:
            raise ValueError("the noise CutSet is empty")
        if snr_range[0] > snr_range[1]:
            raise ValueError(f"snr_range must be (low, high), got {snr_range}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"noise prob must be in [0, 1], got {prob}")
        self.snr_range = (float(snr_range[0]), float(snr_range[1]))
        self.prob = float(prob)

    def check_compatible(self, needs_features: bool) -> None:
        """Stored-feature training mixes in the feature domain: noise cuts need features."""
        for n in self.noise:
            if needs_features and not n.has_features:
                raise ValueError(
                    f"noise cut {n.id!r} has no features, but training reads stored features; "
                    "compute them (asr_kd.bin.compute_fbank) or use on-the-fly features"
                )
            if not needs_features and not n.has_recording:
                raise ValueError(f"noise cut {n.id!r} has no recording to mix audio from")

    def _noise_window(self, noise, duration: float, rng: random.Random):
        from lhotse.cut import append_cuts

        if noise.duration < duration:
            reps = int(math.ceil(duration / noise.duration))
            noise = append_cuts([noise] * reps)
        offset = rng.uniform(0.0, max(0.0, noise.duration - duration))
        return noise.truncate(offset=offset, duration=duration, preserve_id=True)

    def __call__(self, cut, rng: random.Random):
        """Return ``cut`` or a noisy copy of it (same id, duration and supervisions)."""
        if rng.random() >= self.prob:
            return cut
        noise = self.noise[rng.randrange(len(self.noise))]
        snr = rng.uniform(*self.snr_range)
        window = self._noise_window(noise, cut.duration, rng)
        return cut.mix(window, offset_other_by=0.0, snr=snr, preserve_id="left")

    def apply(self, cuts: Sequence, rng: random.Random) -> List:
        return [self(c, rng) for c in cuts]
