"""Global per-bin feature statistics for the model's input normalisation.

The encoder front end maps features to ``(x - mean) / std`` per mel bin
(see :mod:`asr_kd.models.subsampling`); training estimates ``mean`` and
``std`` once, at a fresh start, from a deterministic sample of the
training cuts::

    mean_f = (1/N) sum_{c,t} x_{c,t,f}
    std_f  = sqrt((1/N) sum_{c,t} x_{c,t,f}^2 - mean_f^2)

over all frames ``t`` of the sampled cuts ``c`` (N frames in all). The
sample is every k-th cut of the manifest (two streaming passes: a lazy
manifest is never loaded whole), so the same manifest always gives
the same statistics (a teacher and its students trained on one manifest get
identical values).
"""
from __future__ import annotations

import itertools
import logging
from typing import Any, Tuple

import torch

from .dataset import load_cut_features

log = logging.getLogger(__name__)

__all__ = ["estimate_feature_stats"]


def estimate_feature_stats(cuts: Any, max_cuts: int = 500, on_the_fly: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """(mean (F,), std (F,)) float32 over the frames of up to ``max_cuts`` evenly spaced cuts.

    Raises ValueError when the manifest holds no cut with frames.
    """
    num_cuts = sum(1 for _ in cuts)  # streams a lazy manifest: nothing is held in memory
    if not num_cuts:
        raise ValueError("estimate_feature_stats: the cut set is empty")
    stride = max(1, num_cuts // max_cuts)
    sample = list(itertools.islice(itertools.islice(cuts, 0, None, stride), max_cuts))
    total = None
    total_sq = None
    frames = 0
    for cut in sample:
        feats = load_cut_features(cut, on_the_fly).double()  # (T, F)
        if feats.numel() == 0:
            continue
        s, sq = feats.sum(0), (feats * feats).sum(0)
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        frames += feats.shape[0]
    if total is None or frames == 0:
        raise ValueError("estimate_feature_stats: no cut with feature frames in the sample")
    mean = total / frames
    std = (total_sq / frames - mean * mean).clamp(min=0.0).sqrt()
    log.info("feature statistics from %d frames of %d cuts: mean %.2f..%.2f, std %.2f..%.2f", frames,
             len(sample), float(mean.min()), float(mean.max()), float(std.min()),
             float(std.max()))
    return mean.float(), std.float()
