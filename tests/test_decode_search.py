"""Greedy and modified beam search against brute-force references on tiny hand-made modules."""
import itertools
import math

import pytest
import torch
from torch import nn

from asr_kd.decode.search import (
    greedy_search,
    init_beam_states,
    init_greedy_states,
    modified_beam_search,
)


class TinyDecoder(nn.Module):
    """Stateless decoder obeying the asr_kd.models.Decoder interface."""

    def __init__(self, vocab_size: int, dim: int, blank_id: int = 0, context_size: int = 2):
        super().__init__()
        self.vocab_size, self.blank_id, self.context_size = vocab_size, blank_id, context_size
        self.embedding = nn.Embedding(vocab_size, dim)
        self.mix = nn.Linear(dim * context_size, dim)

    def forward(self, y: torch.Tensor, need_pad: bool = True) -> torch.Tensor:
        if need_pad:
            y = nn.functional.pad(y, (self.context_size - 1, 0), value=self.blank_id)
        win = y.unfold(1, self.context_size, 1)  # (N, U, c)
        e = self.embedding(win).flatten(2)
        return torch.tanh(self.mix(e))


class TinyJoiner(nn.Module):
    def __init__(self, enc_dim: int, dec_dim: int, joiner_dim: int, vocab_size: int):
        super().__init__()
        self.encoder_proj = nn.Linear(enc_dim, joiner_dim)
        self.decoder_proj = nn.Linear(dec_dim, joiner_dim)
        self.output_linear = nn.Linear(joiner_dim, vocab_size)

    def forward(self, enc, dec, project_input: bool = True):
        if project_input:
            enc, dec = self.encoder_proj(enc), self.decoder_proj(dec)
        return self.output_linear(torch.tanh(enc + dec))


class TinyModel(nn.Module):
    def __init__(self, vocab_size=5, enc_dim=6, dec_dim=5, joiner_dim=7, context_size=2,
                 scale=3.0):
        super().__init__()
        self.blank_id, self.vocab_size = 0, vocab_size
        self.decoder = TinyDecoder(vocab_size, dec_dim, 0, context_size)
        self.joiner = TinyJoiner(enc_dim, dec_dim, joiner_dim, vocab_size)
        with torch.no_grad():  # sharper distributions: several symbols per frame happen
            self.joiner.output_linear.weight.mul_(scale)
        self.eval()


def ref_greedy(model, enc, T, max_sym):
    c = model.decoder.context_size
    ctx, toks, frames = [0] * c, [], []
    with torch.no_grad():
        for t in range(T):
            for _ in range(max_sym):
                d = model.decoder(torch.tensor([ctx]), need_pad=False)[0, 0]
                z = model.joiner(enc[t], d)
                k = int(z.argmax())
                if k == 0:
                    break
                toks.append(k)
                frames.append(t)
                ctx = (ctx + [k])[-c:]
    return toks, frames


def exact_sequence_logprobs(model, enc, T):
    """Sum over all one-symbol-per-frame alignments, grouped by token sequence."""
    V, c = model.vocab_size, model.decoder.context_size
    out = {}
    with torch.no_grad():
        for path in itertools.product(range(V), repeat=T):
            ctx, toks, lp = [0] * c, [], 0.0
            for t, s in enumerate(path):
                d = model.decoder(torch.tensor([ctx]), need_pad=False)[0, 0]
                logp = model.joiner(enc[t], d).double().log_softmax(-1)
                lp += float(logp[s])
                if s != 0:
                    toks.append(s)
                    ctx = (ctx + [s])[-c:]
            key = tuple(toks)
            prev = out.get(key, -math.inf)
            hi = max(prev, lp)
            out[key] = hi + math.log(math.exp(prev - hi) + math.exp(lp - hi))
    return out


@pytest.mark.parametrize("max_sym", [1, 3])
def test_greedy_matches_per_utterance_loop(max_sym):
    model = TinyModel()
    enc = torch.randn(3, 9, 6)
    lens = torch.tensor([9, 4, 7])
    res = greedy_search(model, enc, lens, max_symbols_per_frame=max_sym)
    emitted = 0
    for b in range(3):
        toks, frames = ref_greedy(model, enc[b], int(lens[b]), max_sym)
        assert res[b].tokens == toks
        assert res[b].frames == frames
        emitted += len(toks)
    assert emitted > 0
    if max_sym == 3:  # the tiny model does emit several symbols in one frame
        assert any(len(set(r.frames)) < len(r.frames) for r in res)


def test_greedy_resumes_across_chunks():
    model = TinyModel()
    enc = torch.randn(2, 10, 6)
    lens = torch.tensor([10, 10])
    full = greedy_search(model, enc, lens, max_symbols_per_frame=2)
    states = init_greedy_states(model, 2, torch.device("cpu"))
    for s, e in [(0, 3), (3, 4), (4, 10)]:
        part = greedy_search(model, enc[:, s:e], torch.full((2,), e - s), 2, states=states)
    assert [r.tokens for r in part] == [r.tokens for r in full]
    assert [r.frames for r in part] == [r.frames for r in full]


def test_beam_one_equals_greedy_one_symbol():
    model = TinyModel()
    enc = torch.randn(3, 8, 6)
    lens = torch.tensor([8, 5, 8])
    g = greedy_search(model, enc, lens, max_symbols_per_frame=1)
    m = modified_beam_search(model, enc, lens, beam=1)
    assert [r.tokens for r in m] == [r.tokens for r in g]
    assert [r.frames for r in m] == [r.frames for r in g]


def test_wide_beam_is_exact_and_narrow_beam_is_bounded():
    torch.manual_seed(3)
    model = TinyModel(vocab_size=3, scale=1.0)
    T = 5
    enc = torch.randn(2, T, 6)
    lens = torch.tensor([T, 4])
    states = init_beam_states(model, 2, torch.device("cpu"))
    best = modified_beam_search(model, enc, lens, beam=10_000, states=states)
    narrow = modified_beam_search(model, enc, lens, beam=2)
    for b in range(2):
        exact = exact_sequence_logprobs(model, enc[b], int(lens[b]))
        got = {h.tokens: h.log_prob for h in states[b].hyps}
        assert set(got) == set(exact)
        for k in exact:
            assert got[k] == pytest.approx(exact[k], abs=1e-5)
        top = max(exact.values())
        assert best[b].score == pytest.approx(top, abs=1e-5)
        assert exact[tuple(best[b].tokens)] == pytest.approx(top, abs=1e-5)
        # Pruning only drops alignments: a narrow beam's score is a lower bound.
        assert narrow[b].score <= exact[tuple(narrow[b].tokens)] + 1e-5
        for h in states[b].hyps:  # one symbol per frame: strictly increasing frames
            assert list(h.frames) == sorted(set(h.frames)) and len(h.frames) == len(h.tokens)
            assert all(0 <= f < int(lens[b]) for f in h.frames)


def test_beam_resumes_across_chunks():
    model = TinyModel()
    enc = torch.randn(2, 9, 6)
    lens = torch.tensor([9, 9])
    full = modified_beam_search(model, enc, lens, beam=3)
    states = init_beam_states(model, 2, torch.device("cpu"))
    for s, e in [(0, 4), (4, 9)]:
        part = modified_beam_search(model, enc[:, s:e], torch.full((2,), e - s), 3, states=states)
    assert [(r.tokens, r.frames) for r in part] == [(r.tokens, r.frames) for r in full]
    assert [r.score for r in part] == pytest.approx([r.score for r in full])


def test_empty_input_gives_empty_hypothesis():
    model = TinyModel()
    enc = torch.zeros(2, 0, 6)
    lens = torch.zeros(2, dtype=torch.int64)
    assert [r.tokens for r in greedy_search(model, enc, lens)] == [[], []]
    assert [r.tokens for r in modified_beam_search(model, enc, lens, beam=4)] == [[], []]


def test_bad_arguments():
    model = TinyModel()
    enc = torch.randn(1, 3, 6)
    with pytest.raises(ValueError):
        greedy_search(model, enc, torch.tensor([3]), max_symbols_per_frame=0)
    with pytest.raises(ValueError):
        modified_beam_search(model, enc, torch.tensor([3]), beam=0)
    with pytest.raises(ValueError):
        greedy_search(model, enc, torch.tensor([3, 3]))


def brute_force_alignment(model, enc, tokens):
    """Best path over every interleaving of U symbol arcs and T blank arcs (last arc blank)."""
    T, U, c = enc.size(0), len(tokens), model.decoder.context_size
    best = (-math.inf, None)
    with torch.no_grad():
        for sym_pos in itertools.combinations(range(T - 1 + U), U):
            t, u, lp, frames = 0, 0, 0.0, []
            for step in range(T - 1 + U + 1):
                ctx = ([0] * c + list(tokens[:u]))[-c:]
                d = model.decoder(torch.tensor([ctx]), need_pad=False)[0, 0]
                logp = model.joiner(enc[t], d).double().log_softmax(-1)
                if step in sym_pos:
                    lp += float(logp[tokens[u]])
                    frames.append(t)
                    u += 1
                else:
                    lp += float(logp[0])
                    t += 1
            if lp > best[0]:
                best = (lp, frames)
    return best


@pytest.mark.parametrize("T,tokens", [(4, [1, 2]), (3, [3, 3, 1]), (5, []), (1, [2])])
def test_forced_align_is_the_best_path(T, tokens):
    from asr_kd.decode.align import forced_align

    model = TinyModel(scale=1.0)
    enc = torch.randn(T, 6)
    frames, score = forced_align(model, enc, tokens)
    ref_score, ref_frames = brute_force_alignment(model, enc, tokens)
    assert score == pytest.approx(ref_score, abs=1e-5)
    assert frames == ref_frames
    with pytest.raises(ValueError):
        forced_align(model, torch.zeros(0, 6), [1])
