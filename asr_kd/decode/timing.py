"""Emission and availability times of tokens (definitions in docs/decoding.md, "Timestamps").

Units: feature frames are ``hop = 10 ms`` (160 samples at 16 kHz) with a
``win = 25 ms`` (400 samples) window; encoder frames are ``4`` feature frames
(40 ms). With ``snip_edges=False`` feature frame ``m`` covers samples
``[m·hop + hop/2 − win/2, m·hop + hop/2 + win/2)``, so it is computable once
``m·hop + hop/2 + win/2`` samples (``m·160 + 280``) have arrived, or at the end
of the input (the front end reflects the signal at its edge).

* Emission time of a token emitted at encoder frame ``f``: ``f · 40 ms``.
* Availability time (chunk-wise decoding, chunk size ``K`` encoder frames):
  the token was produced while decoding chunk ``c = ⌊f / K⌋``, which consumes
  feature frames ``4Kc .. 4Kc + 4K + 2`` (``chunk_input_frames``), so

      a = min( end_sample(4K(c+1) + 2), N ) / 16000

  where ``N`` is the utterance length in samples: the audio the decoder had
  to receive before it could emit the token, front-end look-ahead (the 3
  frames of the subsampling convolution plus half a window) included. A
  chunk whose frames reach past the audio (the padded final chunk, or the
  last frames that need the end-of-input reflection) is available at the end
  of the utterance. The streaming pipeline computes the same quantity from
  the audio it actually consumed (see :mod:`asr_kd.decode.streaming`), so the
  two agree exactly and do not depend on how the audio was cut into pieces.
* Offline decoding: ``a = N / 16000`` for every token.

The *pipeline overhead* (:func:`chunk_latency_overhead_ms`) is the wait
between the end of a chunk's nominal span ``4K(c+1)`` feature frames and its
availability: ``end_sample(4K(c+1)+2)/sr − 4K(c+1)·hop`` = 3 frames of
subsampling look-ahead minus one hop plus ``hop/2 + win/2`` = 37.5 ms, on
top of the chunk's own duration (a token emitted at the start of a chunk
waits ``40K`` ms more than one emitted at its end).
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

from asr_kd.data.features import FBANK_OPTS, FbankOptions

__all__ = [
    "encoder_frame_shift_s",
    "feature_frame_end_sample",
    "chunk_end_sample",
    "token_times",
    "chunk_latency_overhead_ms",
]

#: Subsampling factor of the encoder (10 ms features -> 40 ms frames).
SUBSAMPLING = 4


def _encoder_class() -> Any:
    from asr_kd.models.conformer import ConformerEncoder

    return ConformerEncoder


def _hop_win(opts: FbankOptions) -> Tuple[int, int]:
    hop = int(round(opts.frame_shift_s * opts.sampling_rate))
    win = int(round(opts.frame_length_s * opts.sampling_rate))
    return hop, win


def encoder_frame_shift_s(opts: FbankOptions = FBANK_OPTS, subsampling: int = SUBSAMPLING) -> float:
    """Seconds per encoder frame (0.04)."""
    return subsampling * opts.frame_shift_s


def feature_frame_end_sample(m: int, opts: FbankOptions = FBANK_OPTS) -> int:
    """One past the last sample feature frame ``m`` reads (``m·160 + 280``)."""
    hop, win = _hop_win(opts)
    if opts.snip_edges:
        return m * hop + win
    return m * hop + hop // 2 + win // 2


def chunk_end_sample(chunk_index: int, chunk_size: int, opts: FbankOptions = FBANK_OPTS,
                     encoder: Any = None) -> int:
    """Samples needed before chunk ``chunk_index`` (of ``chunk_size`` encoder frames) can run.

    The chunk reads feature frames ``c·shift .. c·shift + input − 1`` with
    ``shift = encoder.chunk_shift_frames(K)`` and ``input =
    encoder.chunk_input_frames(K)`` (``ConformerEncoder``'s when None).
    """
    enc = encoder if encoder is not None else _encoder_class()
    last_frame = chunk_index * enc.chunk_shift_frames(chunk_size) + enc.chunk_input_frames(chunk_size) - 1
    return feature_frame_end_sample(last_frame, opts)


def token_times(frames: Sequence[int], num_samples: int, chunk_size: Optional[int],
                opts: FbankOptions = FBANK_OPTS, encoder: Any = None) -> Tuple[List[float], List[float]]:
    """(emission_s, availability_s) of tokens emitted at encoder ``frames``.

    Args:
      frames: encoder frame of each token.
      num_samples: utterance length in samples.
      chunk_size: K in encoder frames for chunk-wise decoding (simulated or
        true streaming); None for offline decoding (available at the end).
      encoder: gives ``chunk_input_frames`` / ``chunk_shift_frames``.
    """
    shift = encoder_frame_shift_s(opts)
    sr = float(opts.sampling_rate)
    emission = [f * shift for f in frames]
    if chunk_size is None:
        return emission, [num_samples / sr] * len(frames)
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0 for chunk-wise timing, got {chunk_size}")
    avail = [min(chunk_end_sample(f // chunk_size, chunk_size, opts, encoder), num_samples) / sr
             for f in frames]
    return emission, avail


def chunk_latency_overhead_ms(chunk_size: int = 16, opts: FbankOptions = FBANK_OPTS,
                              encoder: Any = None) -> float:
    """Wait beyond a chunk's nominal end ``(c+1)·K·40 ms`` until it can be decoded (37.5 ms)."""
    enc = encoder if encoder is not None else _encoder_class()
    hop, _ = _hop_win(opts)
    end = chunk_end_sample(0, chunk_size, opts, enc)
    return 1000.0 * (end - enc.chunk_shift_frames(chunk_size) * hop) / opts.sampling_rate
