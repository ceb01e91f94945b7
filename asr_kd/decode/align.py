"""Forced alignment with a transducer: the best path through the RNN-T lattice.

Fallback source of reference word times when a corpus has no word
alignments. **Caveat**: times from a model favour students that copy that
model's timing (e.g. a student distilled from the aligning teacher), so
corpus times are always preferred; ``asr_kd.bin.decode`` records which source
was used in ``results.json`` (``ref_times``).

Lattice (regular RNN-T, any number of symbols per frame): nodes ``(t, u)``,
``0 ≤ t < T``, ``0 ≤ u ≤ U``, with joiner log-probabilities
``ℓ(t, u, ·) = log_softmax(z(enc_t, dec(y_≤u)))``;
a symbol arc ``(t, u) → (t, u+1)`` scores ``ℓ(t, u, y_{u+1})`` (token ``u+1``
emitted at frame ``t``) and a blank arc ``(t, u) → (t+1, u)`` scores
``ℓ(t, u, ∅)``. The Viterbi recursion

    δ(0, 0) = 0
    δ(t, u) = max( δ(t−1, u) + ℓ(t−1, u, ∅),  δ(t, u−1) + ℓ(t, u−1, y_u) )

ends with ``δ(T−1, U) + ℓ(T−1, U, ∅)``; backtracking gives the frame of
every token. Memory: the (T, U+1, V) joiner output of one utterance.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .search import decoder_context

__all__ = ["forced_align"]


@torch.no_grad()
def forced_align(model: nn.Module, encoder_out: Tensor, tokens: Sequence[int]) -> Tuple[List[int], float]:
    """Emission frame of each token on the Viterbi path, and the path's log-probability.

    Args:
      model: transducer (decoder, joiner, blank_id as in :mod:`asr_kd.decode.search`).
      encoder_out: (T, D) encoder output of one utterance (valid frames only).
      tokens: the U reference token ids (no blank).
    Raises:
      ValueError when ``T == 0`` and ``U > 0`` (no path exists).
    """
    num_t = int(encoder_out.size(0))
    toks = [int(t) for t in tokens]
    num_u = len(toks)
    blank = int(model.blank_id)
    if num_t == 0:
        if num_u:
            raise ValueError(f"forced_align: {num_u} tokens but no encoder frames")
        return [], 0.0
    csize = int(model.decoder.context_size)
    ctx = torch.tensor([decoder_context(toks[:u], csize, blank) for u in range(num_u + 1)],
                       dtype=torch.int64, device=encoder_out.device)
    dec_p = model.joiner.decoder_proj(model.decoder(ctx, need_pad=False)[:, 0])  # (U+1, J)
    enc_p = model.joiner.encoder_proj(encoder_out)  # (T, J)
    logp = model.joiner(enc_p[:, None, :], dec_p[None, :, :], project_input=False)
    logp = logp.double().log_softmax(dim=-1)  # (T, U+1, V)
    blank_lp = logp[:, :, blank].cpu().numpy()  # (T, U+1)
    sym_lp = (logp[:, :num_u, :].gather(2, torch.tensor(toks, device=logp.device)
                                        .view(1, num_u, 1).expand(num_t, num_u, 1))[..., 0]
              .cpu().numpy()) if num_u else np.zeros((num_t, 0))
    delta = np.full((num_t, num_u + 1), -np.inf)
    from_sym = np.zeros((num_t, num_u + 1), dtype=bool)
    for t in range(num_t):
        for u in range(num_u + 1):
            if t == 0 and u == 0:
                delta[0, 0] = 0.0
                continue
            stay = delta[t - 1, u] + blank_lp[t - 1, u] if t > 0 else -np.inf
            emit = delta[t, u - 1] + sym_lp[t, u - 1] if u > 0 else -np.inf
            if emit > stay:
                delta[t, u], from_sym[t, u] = emit, True
            else:
                delta[t, u] = stay
    total = float(delta[num_t - 1, num_u] + blank_lp[num_t - 1, num_u])
    frames = [0] * num_u
    t, u = num_t - 1, num_u
    while u > 0 or t > 0:
        if from_sym[t, u]:
            frames[u - 1] = t
            u -= 1
        else:
            t -= 1
    return frames, total
