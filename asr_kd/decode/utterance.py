"""Whole-utterance decoding: one batched encoder call per utterance, offline or simulated streaming.

(True chunk-by-chunk streaming with state caches is ``streaming.py``.)

* ``offline``: the encoder's own configuration over the whole utterance
  (full context for a teacher; for a chunk-wise student the chunk size and
  left context it was trained with, i.e. the first entries of its config).
  Every token is available at the end of the utterance.
* ``simulated-streaming``: the masked full-utterance forward
  ``encoder(features, lens, chunk_size=K, left_context=L)``: frame ``t`` of
  chunk ``⌊t/K⌋`` attends to frames ``[⌊t/K⌋K − L, (⌊t/K⌋+1)K)``. It gives the
  same encoder output as true streaming (``streaming.py``) and the same
  availability times (``timing.token_times``), in one batched call.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .search import SearchResult, greedy_search, modified_beam_search

__all__ = ["MODES", "METHODS", "encode", "search"]

MODES = ("offline", "simulated-streaming", "streaming")
METHODS = ("greedy", "modified_beam_search")


@torch.no_grad()
def encode(model: nn.Module, features: Tensor, feature_lens: Tensor, mode: str = "offline",
           chunk_size: Optional[int] = None, left_context: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """Encoder output (B, T', D) and lengths (B,) for ``offline`` or ``simulated-streaming``.

    Args:
      features: (B, T, F) padded features; feature_lens: (B,) valid frames (>= 7 each).
      chunk_size / left_context: K and L in encoder frames (simulated streaming only;
        L = None uses the model's configured default).
    """
    enc = model.encoder
    if mode == "offline":
        out = enc(features, feature_lens)
    elif mode == "simulated-streaming":
        if not enc.cfg.causal:
            raise ValueError("simulated streaming needs a causal (chunk-wise) encoder; "
                             "this model is full-context (decode it with --mode offline)")
        if chunk_size is None or chunk_size <= 0:
            raise ValueError(f"simulated streaming needs a chunk size > 0, got {chunk_size}")
        out = enc(features, feature_lens, chunk_size=chunk_size, left_context=left_context)
    else:
        raise ValueError(f"encode(): mode must be offline or simulated-streaming, got {mode!r}")
    return out.out, out.lens


@torch.no_grad()
def search(model: nn.Module, encoder_out: Tensor, encoder_lens: Tensor, method: str = "greedy",
           beam: int = 4, max_symbols_per_frame: int = 1) -> List[SearchResult]:
    """Run ``method`` ("greedy" | "modified_beam_search") over a batch of encoder output."""
    if method == "greedy":
        return greedy_search(model, encoder_out, encoder_lens, max_symbols_per_frame)
    if method == "modified_beam_search":
        return modified_beam_search(model, encoder_out, encoder_lens, beam)
    raise ValueError(f"unknown decoding method {method!r}; choose from {METHODS}")
