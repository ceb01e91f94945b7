"""True streaming (Stream/StreamingDecoder) against simulated streaming on a tiny random model."""
import logging

import numpy as np
import pytest
import torch

from asr_kd.data.features import FEATURE_PAD_VALUE, compute_online_fbank
from asr_kd.decode import (
    StreamingDecoder,
    encode,
    min_samples_for_output,
    search,
    token_times,
)
from asr_kd.decode.timing import chunk_latency_overhead_ms
from asr_kd.models import build_transducer, preset_config

VOCAB = 16


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    m = build_transducer(preset_config("tiny", "student", vocab_size=VOCAB)).eval()
    # Random weights give an almost frame-independent joiner: either blank or a token wins
    # everywhere. Amplify the encoder's influence and set the blank bias at the median
    # blank margin so that about half the frames emit a token.
    with torch.no_grad():
        m.joiner.encoder_proj.weight.mul_(4.0)
        f = compute_online_fbank(_wave(23000, 0))[None]
        enc = m.encoder(f, torch.tensor([f.size(1)]), chunk_size=4, left_context=8).out[0]
        dec = m.joiner.decoder_proj(m.decoder(torch.zeros(1, 2, dtype=torch.long), need_pad=False)[:, 0])
        z = m.joiner(m.joiner.encoder_proj(enc), dec, project_input=False)
        m.joiner.output_linear.bias[0] -= (z[:, 0] - z[:, 1:].max(-1).values).median()
    return m


def _wave(n, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000.0
    x = 0.2 * np.sin(2 * np.pi * (200 + 300 * rng.random()) * t) * (np.sin(2 * np.pi * 2.5 * t) > 0)
    return (x + 0.02 * rng.standard_normal(n)).astype(np.float32)


WAVES = [_wave(23000, 0), _wave(14100, 1), _wave(3000, 2)]  # the last is shorter than one chunk


def simulated(model, wavs, K, L, method="greedy", beam=4):
    feats = [compute_online_fbank(w) for w in wavs]
    lens = torch.tensor([f.size(0) for f in feats])
    x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True, padding_value=FEATURE_PAD_VALUE)
    enc, enc_lens = encode(model, x, lens, "simulated-streaming", K, L)
    return search(model, enc, enc_lens, method, beam)


@pytest.mark.parametrize("K,L", [(4, 8), (2, 2), (3, -1)])
def test_streaming_equals_simulated_greedy(model, K, L):
    dec = StreamingDecoder(model, K, L)
    whole = dec.decode_waveforms(WAVES)
    pieces = dec.decode_waveforms(WAVES, piece_samples=160)  # 10 ms pieces
    sim = simulated(model, WAVES, K, L)
    total = frames_with_token = frames = 0
    for w, a, b, s in zip(WAVES, whole, pieces, sim):
        assert a.tokens == s.tokens and a.frames == s.frames
        assert b.tokens == a.tokens and b.frames == a.frames
        assert b.availability_s == a.availability_s
        emis, avail = token_times(s.frames, len(w), K)
        assert a.emission_s == pytest.approx(emis) and a.availability_s == pytest.approx(avail)
        assert all(av >= em for av, em in zip(a.availability_s, a.emission_s))
        total += len(a.tokens)
        frames_with_token += len(set(a.frames))
        frames += (compute_online_fbank(w).size(0) - 3) // 4
    assert total > 5
    assert frames_with_token < 0.9 * frames  # blank wins on some frames: a real test of timing
    assert whole[2].tokens  # the sub-chunk utterance was padded and decoded


def test_streaming_equals_simulated_beam(model):
    dec = StreamingDecoder(model, 4, 8, method="modified_beam_search", beam=3)
    res = dec.decode_waveforms(WAVES[:2], piece_samples=1000)
    sim = simulated(model, WAVES[:2], 4, 8, "modified_beam_search", 3)
    for a, s in zip(res, sim):
        assert (a.tokens, a.frames) == (s.tokens, s.frames)


@pytest.mark.parametrize("L", [8, -1])
def test_irregular_pieces_and_interleaved_streams(model, L):
    """Streams fed unevenly and stepped at different times decode as if alone."""
    assert_interleaved_streams_decode_as_alone(StreamingDecoder(model, 4, L), WAVES)


def assert_interleaved_streams_decode_as_alone(dec: StreamingDecoder, waves, seed: int = 5) -> None:
    """Feed ``waves`` to streams in random pieces, stepping them together (so they drift
    apart and are batched at different offsets); each result equals decoding it alone."""
    ref = dec.decode_waveforms(waves)
    rng = np.random.default_rng(seed)
    streams = [dec.create_stream(str(i)) for i in range(len(waves))]
    pos = [0] * len(waves)
    while any(p < len(w) for p, w in zip(pos, waves)):
        for i, w in enumerate(waves):
            if pos[i] < len(w) and rng.random() < 0.7:
                n = int(rng.integers(1, 2500))
                streams[i].accept_waveform(w[pos[i]:pos[i] + n])
                pos[i] += n
        dec.step(streams)  # one chunk at most per stream: streams drift apart
    for s in streams:
        s.input_finished()
    dec.decode_ready(streams)
    for s, r in zip(streams, ref):
        out = s.result()
        assert s.is_finished
        assert (out.tokens, out.frames, out.availability_s) == (r.tokens, r.frames, r.availability_s)


def test_degenerate_audio_gives_empty_hypothesis(model, caplog):
    dec = StreamingDecoder(model, 4, 8)
    short = min_samples_for_output(model.encoder) - 1
    assert short == 1039
    with caplog.at_level(logging.INFO):
        res = dec.decode_waveforms([np.zeros(0, np.float32), _wave(short, 3), np.zeros(8000, np.float32)])
    assert [r.tokens for r in res] == [[], [], []]
    assert "empty audio" in res[0].note
    assert "fewer than the encoder needs" in res[1].note
    assert "silence" in res[2].note
    assert "silence" in caplog.text
    # one sample more than the minimum decodes (possibly to nothing) without error
    dec.decode_waveforms([_wave(short + 1, 4)])


def test_bad_inputs(model):
    with pytest.raises(ValueError, match="causal"):
        StreamingDecoder(build_transducer(preset_config("tiny", "teacher", vocab_size=VOCAB)), 4, 8)
    dec = StreamingDecoder(model, 4, 8)
    s = dec.create_stream("x")
    with pytest.raises(ValueError, match="mono"):
        s.accept_waveform(np.zeros((2, 10), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        s.accept_waveform(np.array([0.0, np.nan], np.float32))
    s.input_finished()
    with pytest.raises(RuntimeError):
        s.accept_waveform(np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="causal"):
        encode(build_transducer(preset_config("tiny", "teacher", vocab_size=VOCAB)),
               torch.zeros(1, 20, 80), torch.tensor([20]), "simulated-streaming", 4, 8)


def test_pipeline_overhead_constant():
    # 3 look-ahead feature frames (30 ms) - 1 hop (10 ms) + half hop + half window (17.5 ms)
    assert chunk_latency_overhead_ms(16) == pytest.approx(37.5)
    assert chunk_latency_overhead_ms(4) == pytest.approx(37.5)
