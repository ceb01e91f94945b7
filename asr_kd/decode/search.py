"""Transducer search over encoder output: greedy and modified beam search.

Both work on a batch of encoder outputs and can be *resumed*: the per-utterance
state (hypotheses, decoder output, frames consumed) is kept in
:class:`GreedyState` / :class:`BeamState` objects, so the streaming decoder
feeds one chunk of encoder frames at a time and gets exactly what a single
call on the concatenated frames would give.

Model interface used (``asr_kd.models``; any modules obeying it work):

* ``model.blank_id``; ``model.decoder.context_size``;
* ``model.decoder(y (N, context_size) int64, need_pad=False) -> (N, 1, Dd)``;
* ``model.joiner.encoder_proj`` (D -> J), ``model.joiner.decoder_proj`` (Dd -> J);
* ``model.joiner(enc_p, dec_p, project_input=False) -> (..., V)`` logits.

The decoder context of a hypothesis ``y_1..y_u`` is its last
``context_size`` tokens, left-padded with blank.

Greedy search, per utterance and encoder frame ``t``: repeat at most
``max_symbols_per_frame`` times: ``k = argmax_v z(t, ctx)``; stop at blank,
otherwise append ``k`` (emitted at frame ``t``) and update the context.

Modified beam search (one symbol per frame: the lattice where each frame
either emits blank or exactly one token and then moves on). With ``H`` the
hypotheses kept after frame ``t-1`` (at most ``beam``), each with a score
``s_h`` (log-probability summed over the alignments merged into it), the
candidates at frame ``t`` are ``(h, blank)`` with score ``s_h + log p_t(∅|h)``
(sequence unchanged) and ``(h, v)`` with ``s_h + log p_t(v|h)`` (sequence
``h + v``). Candidates with the same token sequence are merged **before**
pruning with ``log-add`` (the only way two candidates collide is ``(h, ∅)``
and ``(h[:-1], h[-1])``), and the ``beam`` best distinct sequences are kept.
With a beam wide enough to keep every sequence the scores are exact sequence
log-probabilities under this lattice; with ``beam=1`` the search is greedy
search with ``max_symbols_per_frame=1``. The emission frames of a merged
hypothesis are those of its higher-scoring contributor. The result is the
highest-scoring hypothesis after the last frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = [
    "SearchResult",
    "GreedyState",
    "BeamState",
    "BeamHyp",
    "decoder_context",
    "init_greedy_states",
    "init_beam_states",
    "greedy_search",
    "modified_beam_search",
]


@dataclass
class SearchResult:
    """One utterance's best hypothesis.

    Attributes:
      tokens: token ids (no blanks).
      frames: encoder frame index at which each token was emitted (same length,
        non-decreasing; absolute within the utterance).
      score: log-probability of the hypothesis (beam search) or the sum of the
        chosen symbols' log-probabilities (greedy: not computed, 0.0).
    """

    tokens: List[int]
    frames: List[int]
    score: float = 0.0


def decoder_context(tokens: Sequence[int], context_size: int, blank_id: int) -> List[int]:
    """Last ``context_size`` tokens, left-padded with ``blank_id``."""
    ctx = list(tokens[-context_size:]) if context_size > 0 else []
    return [blank_id] * (context_size - len(ctx)) + ctx


def _run_decoder(model: nn.Module, contexts: List[List[int]], device: torch.device) -> Tensor:
    """Projected decoder outputs (N, J) for N contexts of ``context_size`` ids each."""
    y = torch.tensor(contexts, dtype=torch.int64, device=device)
    if y.dim() == 1:  # context_size == 0
        y = y.view(len(contexts), 0)
    out = model.decoder(y, need_pad=False)  # (N, 1, Dd)
    return model.joiner.decoder_proj(out[:, 0])


def _context_size(model: nn.Module) -> int:
    return int(getattr(model.decoder, "context_size"))


# ----------------------------------------------------------------------------------------------
# Greedy search


@dataclass
class GreedyState:
    """Resumable greedy-search state of one utterance/stream.

    ``dec_p`` (J,) is the projected decoder output for the current context;
    ``num_frames`` counts the encoder frames consumed so far (the offset of the
    next frame).
    """

    tokens: List[int] = field(default_factory=list)
    frames: List[int] = field(default_factory=list)
    dec_p: Optional[Tensor] = None
    num_frames: int = 0

    def result(self) -> SearchResult:
        return SearchResult(list(self.tokens), list(self.frames), 0.0)


def init_greedy_states(model: nn.Module, batch_size: int, device: torch.device) -> List[GreedyState]:
    """Fresh states (empty hypothesis, all-blank context)."""
    ctx = decoder_context([], _context_size(model), int(model.blank_id))
    with torch.no_grad():
        dec_p = _run_decoder(model, [ctx], device)[0]
    return [GreedyState(dec_p=dec_p.clone()) for _ in range(batch_size)]


@torch.no_grad()
def greedy_search(model: nn.Module, encoder_out: Tensor, encoder_lens: Tensor,
                  max_symbols_per_frame: int = 1,
                  states: Optional[List[GreedyState]] = None) -> List[SearchResult]:
    """Batched greedy search.

    Args:
      model: transducer (see the module docstring for what is used).
      encoder_out: (B, T, D) encoder output; frames ``>= encoder_lens[b]`` are ignored.
      encoder_lens: (B,) valid frames per utterance.
      max_symbols_per_frame: tokens one frame may emit (>= 1).
      states: states to resume (streaming); fresh ones when None. They are
        updated in place.
    Returns:
      one :class:`SearchResult` per utterance (the hypothesis so far when resuming).
    """
    if max_symbols_per_frame < 1:
        raise ValueError(f"max_symbols_per_frame must be >= 1, got {max_symbols_per_frame}")
    batch, num_t, _ = encoder_out.shape
    if encoder_lens.shape != (batch,):
        raise ValueError(f"encoder_lens must have shape ({batch},), got {tuple(encoder_lens.shape)}")
    device = encoder_out.device
    if states is None:
        states = init_greedy_states(model, batch, device)
    if len(states) != batch:
        raise ValueError(f"{len(states)} states for a batch of {batch}")
    blank = int(model.blank_id)
    csize = _context_size(model)
    lens = [int(x) for x in encoder_lens.tolist()]
    enc_p = model.joiner.encoder_proj(encoder_out)  # (B, T, J)
    dec_p = torch.stack([s.dec_p for s in states])  # (B, J)
    for t in range(min(num_t, max(lens, default=0))):
        rows = [b for b in range(batch) if t < lens[b]]
        for _ in range(max_symbols_per_frame):
            idx = torch.tensor(rows, dtype=torch.int64, device=device)
            logits = model.joiner(enc_p[idx, t], dec_p[idx], project_input=False)  # (n, V)
            best = logits.argmax(dim=-1).tolist()
            emitted = [b for b, k in zip(rows, best) if k != blank]
            if not emitted:
                break
            for b, k in zip(rows, best):
                if k != blank:
                    s = states[b]
                    s.tokens.append(int(k))
                    s.frames.append(s.num_frames + t)
            ctx = [decoder_context(states[b].tokens, csize, blank) for b in emitted]
            new = _run_decoder(model, ctx, device)
            dec_p[torch.tensor(emitted, dtype=torch.int64, device=device)] = new
            rows = emitted
    for b, s in enumerate(states):
        s.dec_p = dec_p[b].clone()
        s.num_frames += lens[b]
    return [s.result() for s in states]


# ----------------------------------------------------------------------------------------------
# Modified beam search


@dataclass
class BeamHyp:
    """One beam hypothesis: tokens, their emission frames, score, decoder output (J,)."""

    tokens: Tuple[int, ...]
    frames: Tuple[int, ...]
    log_prob: float
    dec_p: Tensor


@dataclass
class BeamState:
    """Resumable beam-search state of one utterance/stream (hyps sorted best first)."""

    hyps: List[BeamHyp] = field(default_factory=list)
    num_frames: int = 0

    def best(self) -> SearchResult:
        # Highest score; ties broken by the token sequence for determinism.
        h = max(self.hyps, key=lambda x: (x.log_prob, tuple(-v for v in x.tokens)))
        return SearchResult(list(h.tokens), list(h.frames), float(h.log_prob))


def init_beam_states(model: nn.Module, batch_size: int, device: torch.device) -> List[BeamState]:
    ctx = decoder_context([], _context_size(model), int(model.blank_id))
    with torch.no_grad():
        dec_p = _run_decoder(model, [ctx], device)[0]
    return [BeamState([BeamHyp((), (), 0.0, dec_p.clone())]) for _ in range(batch_size)]


@torch.no_grad()
def modified_beam_search(model: nn.Module, encoder_out: Tensor, encoder_lens: Tensor,
                         beam: int = 4,
                         states: Optional[List[BeamState]] = None) -> List[SearchResult]:
    """Batched modified beam search (one symbol per frame, merged hypotheses).

    Args:
      encoder_out: (B, T, D); encoder_lens: (B,).
      beam: hypotheses kept per utterance after each frame (>= 1).
      states: states to resume (streaming); fresh ones when None; updated in place.
    Returns:
      the best hypothesis of each utterance (:meth:`BeamState.best`).
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    batch, num_t, _ = encoder_out.shape
    if encoder_lens.shape != (batch,):
        raise ValueError(f"encoder_lens must have shape ({batch},), got {tuple(encoder_lens.shape)}")
    device = encoder_out.device
    if states is None:
        states = init_beam_states(model, batch, device)
    if len(states) != batch:
        raise ValueError(f"{len(states)} states for a batch of {batch}")
    blank = int(model.blank_id)
    csize = _context_size(model)
    lens = [int(x) for x in encoder_lens.tolist()]
    enc_p = model.joiner.encoder_proj(encoder_out)  # (B, T, J)
    neg_inf = float("-inf")

    for t in range(min(num_t, max(lens, default=0))):
        active = [b for b in range(batch) if t < lens[b]]
        width = max(len(states[b].hyps) for b in active)
        # Flatten the hypotheses of the active utterances: row r <-> (slot a, hyp j).
        row_of: List[Tuple[int, int]] = []
        for a, b in enumerate(active):
            row_of.extend((a, j) for j in range(len(states[b].hyps)))
        flat_hyps = [states[active[a]].hyps[j] for a, j in row_of]
        b_idx = torch.tensor([active[a] for a, _ in row_of], dtype=torch.int64, device=device)
        dec = torch.stack([h.dec_p for h in flat_hyps])  # (n, J)
        logits = model.joiner(enc_p[b_idx, t], dec, project_input=False)  # (n, V)
        logp = logits.float().log_softmax(dim=-1)
        vocab = logp.size(-1)
        base = torch.tensor([h.log_prob for h in flat_hyps], dtype=torch.float64, device=device)
        scores = base[:, None] + logp.double()  # (n, V)
        # Merge (h, blank) with (h[:-1], h[-1]) when both are in the beam.
        groups: List[List[int]] = [[] for _ in active]
        for r, (a, _) in enumerate(row_of):
            groups[a].append(r)
        merged_frames: Dict[int, Tuple[int, ...]] = {}  # row -> frames of a better extension
        for a, b in enumerate(active):
            rows = groups[a]
            by_seq = {flat_hyps[r].tokens: r for r in rows}
            for r in rows:
                toks = flat_hyps[r].tokens
                if not toks:
                    continue
                p = by_seq.get(toks[:-1])
                if p is None:
                    continue
                ext = scores[p, toks[-1]].clone()
                stay = scores[r, blank].clone()
                scores[r, blank] = torch.logaddexp(stay, ext)
                scores[p, toks[-1]] = neg_inf
                if bool(ext > stay):
                    merged_frames[r] = flat_hyps[p].frames + (states[b].num_frames + t,)
        padded = torch.full((len(active), width, vocab), neg_inf, dtype=torch.float64, device=device)
        padded[torch.tensor([a for a, _ in row_of]), torch.tensor([j for _, j in row_of])] = scores
        k = min(beam, width * vocab)
        top_v, top_i = padded.view(len(active), -1).topk(k, dim=-1)
        top_v, top_i = top_v.tolist(), top_i.tolist()
        row_index = {rj: r for r, rj in enumerate(row_of)}
        new_hyps: List[List[BeamHyp]] = []
        pending: List[Tuple[int, int, Tuple[int, ...]]] = []  # (slot, position, tokens)
        for a, b in enumerate(active):
            kept: List[BeamHyp] = []
            offset = states[b].num_frames + t
            for v, flat in zip(top_v[a], top_i[a]):
                if v == neg_inf:
                    break
                j, tok = divmod(flat, vocab)
                r = row_index[(a, j)]
                h = flat_hyps[r]
                if tok == blank:
                    kept.append(BeamHyp(h.tokens, merged_frames.get(r, h.frames), v, h.dec_p))
                else:
                    toks = h.tokens + (tok,)
                    kept.append(BeamHyp(toks, h.frames + (offset,), v, h.dec_p))
                    pending.append((a, len(kept) - 1, toks))
            new_hyps.append(kept)
        if pending:
            ctx = [decoder_context(list(toks), csize, blank) for _, _, toks in pending]
            out = _run_decoder(model, ctx, device)
            for (a, pos, _), d in zip(pending, out):
                new_hyps[a][pos].dec_p = d
        for a, b in enumerate(active):
            states[b].hyps = new_hyps[a]
    for b, s in enumerate(states):
        s.num_frames += lens[b]
    return [s.best() for s in states]
