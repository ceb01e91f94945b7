"""Decode a lhotse CutSet in one configuration (method × mode × chunk size).

Used by ``python -m asr_kd.bin.decode`` and ``tools/bench_decode.py``.

Every mode starts from the audio (``cut.load_audio()``, resampled to 16 kHz
when needed) and the same front end (kaldi-native-fbank, the deployment
front end; it matches the training features to ~1e-4), so modes differ only
in the encoder's context and in the availability times:

* ``offline``, ``simulated-streaming``: utterances sorted by duration
  (longest first, ties by id) and batched up to ``max_duration`` seconds;
  features from :func:`compute_online_fbank`; :mod:`.offline`.
* ``streaming``: up to ``num_streams`` :class:`Stream` objects decoded
  together by a :class:`StreamingDecoder` (audio fed whole, then
  ``input_finished``; the result does not depend on the piece size).

Degenerate audio (empty, shorter than one encoder frame, pure digital
silence, NaN/inf samples) and audio that cannot be read (missing, corrupt
file) give an empty hypothesis and a note (logged as one warning line naming
the cut and the file, and stored in ``UtteranceOutput.note``, so the
``num_empty_by_bad_audio`` count of the results row includes them); the other
cuts are decoded as usual. With ``DecodeSettings.strict`` an unreadable file
raises ``RuntimeError`` naming the cut and the file instead.

Decoding is deterministic: the same cuts and configuration give the same
hypotheses and times. RTF (:class:`RtfMeter`) covers feature extraction,
encoder and search, not audio loading.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from asr_kd.data.text import normalize_text
from asr_kd.data.features import FBANK_OPTS, FEATURE_PAD_VALUE, compute_online_fbank
from asr_kd.metrics.latency import TimedWords, reference_word_spans, tokens_to_words
from asr_kd.metrics.results import RtfMeter
from asr_kd.models.encoders import default_chunk

from .utterance import MODES, encode, search
from .streaming import StreamingDecoder, min_samples_for_output
from .timing import token_times

__all__ = ["DecodeSettings", "UtteranceOutput", "UnreadableAudioError", "load_mono_audio", "decode_cuts",
           "bad_audio_note"]

log = logging.getLogger(__name__)


class UnreadableAudioError(RuntimeError):
    """A cut's audio cannot be read or is unusable, with ``strict``; the message names the cut and file."""


@dataclass
class DecodeSettings:
    """One decoding configuration.

    chunk_size / left_context are in encoder frames (40 ms); chunk_size is
    required for the streaming modes; left_context None = the model's default.
    """

    method: str = "greedy"
    mode: str = "offline"
    beam: int = 4
    max_symbols_per_frame: int = 1
    chunk_size: Optional[int] = None
    left_context: Optional[int] = None
    max_duration: float = 200.0
    num_streams: int = 32
    device: str = "cpu"
    strict: bool = False  # unreadable audio: raise instead of an empty hypothesis

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose from {MODES}")
        if self.mode != "offline" and (self.chunk_size is None or self.chunk_size <= 0):
            raise ValueError(f"mode {self.mode} needs a chunk size > 0 (encoder frames)")


@dataclass
class UtteranceOutput:
    """Decoding result of one cut, with what the metrics need."""

    cut_id: str
    duration: float
    ref_words: List[str]
    ref_starts_s: Optional[List[float]]
    ref_times_reason: str
    tokens: List[int]
    frames: List[int]
    hyp: TimedWords
    note: str = ""
    ref_ends_s: Optional[List[float]] = None  # reference word ends (start + duration); None: unknown
    ref_ends_reason: str = ""  # why ref_ends_s is None


def load_mono_audio(cut: Any, sampling_rate: int = FBANK_OPTS.sampling_rate) -> np.ndarray:
    """(N,) float32 samples of a cut at ``sampling_rate`` (first channel of multi-channel audio)."""
    def source() -> str:
        rec = getattr(cut, "recording", None)
        srcs = getattr(rec, "sources", None) or []
        return ", ".join(str(s.source) for s in srcs) or "<no recording>"

    if not getattr(cut, "has_recording", False):
        raise RuntimeError(f"cut {cut.id}: has no recording to decode")
    try:
        if cut.sampling_rate != sampling_rate:
            cut = cut.resample(sampling_rate)
        audio = cut.load_audio()
    except Exception as e:  # lhotse raises many types for missing/corrupt files
        why = " ".join(str(e).split())  # one line: lhotse's message spans several
        raise RuntimeError(f"cut {cut.id}: cannot read audio from {source()}: "
                           f"{type(e).__name__}: {why[:300]}") from e
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio[0]
    return np.ascontiguousarray(audio.reshape(-1))


def bad_audio_note(samples: np.ndarray, min_samples: int) -> str:
    """Why an utterance gets an empty hypothesis without decoding ("" = decode it)."""
    n = int(samples.size)
    if n == 0:
        return "empty audio: empty hypothesis"
    if n < min_samples:
        return (f"audio of {n} samples ({1000.0 * n / FBANK_OPTS.sampling_rate:.1f} ms) is shorter than "
                f"the encoder's minimum ({min_samples} samples): empty hypothesis")
    if not np.any(samples):
        return "pure digital silence: empty hypothesis"
    if not np.all(np.isfinite(samples)):
        raise ValueError("audio contains NaN or inf samples")
    return ""


def _load_or_note(cut: Any, min_samples: int, strict: bool) -> tuple[np.ndarray, str]:
    """(samples, note): a bad or unreadable file gives no samples and a note (see module docstring)."""
    try:
        audio = load_mono_audio(cut)
        note = bad_audio_note(audio, min_samples)
    except (RuntimeError, ValueError) as e:
        msg = str(e) if str(e).startswith(f"cut {cut.id}") else f"cut {cut.id}: {e}"
        if strict:
            raise UnreadableAudioError(msg) from None
        log.warning("%s; empty hypothesis, counted in num_empty_by_bad_audio", msg)
        return np.zeros(0, dtype=np.float32), f"unreadable audio: {msg}"
    if note:
        log.info("cut %s: %s", cut.id, note)
    return audio, note


def _reference(cut: Any) -> tuple:
    """(words, starts, ends, starts_reason, ends_reason) of the cut's transcript."""
    sups = list(cut.supervisions)
    words = normalize_text(" ".join((s.text or "").strip() for s in sups)).split()
    if len(sups) != 1:
        why = ("cut has no supervision" if not sups else
               "cut has several supervisions (word times used only for one)")
        return words, None, None, why, why
    starts, ends, why, ends_why = reference_word_spans(sups[0], words)
    return words, starts, ends, why, ends_why


def _batches(cuts: Sequence[Any], max_duration: float, max_count: int) -> Iterator[List[Any]]:
    batch: List[Any] = []
    total = 0.0
    for c in cuts:
        if batch and (total + c.duration > max_duration or len(batch) >= max_count):
            yield batch
            batch, total = [], 0.0
        batch.append(c)
        total += c.duration
    if batch:
        yield batch


def decode_cuts(model: nn.Module, id_to_piece: Callable[[int], str], cuts: Any, settings: DecodeSettings,
                rtf: Optional[RtfMeter] = None, progress: Optional[Callable[[int], None]] = None,
                ) -> List[UtteranceOutput]:
    """Decode every cut; outputs sorted by cut id.

    Args:
      model: transducer in eval mode on ``settings.device``.
      id_to_piece: token id -> sentencepiece piece (word grouping).
      cuts: a lhotse CutSet (or a sequence of cuts).
      rtf: accumulates decode time and audio duration when given.
      progress: called with the number of utterances finished after each batch.
    """
    model.eval()
    device = torch.device(settings.device)
    rtf = rtf if rtf is not None else RtfMeter()
    ordered = sorted(cuts, key=lambda c: (-c.duration, c.id))
    min_samples = min_samples_for_output(model.encoder)
    chunk = settings.chunk_size if settings.mode != "offline" else None
    streamer = None
    if settings.mode == "streaming":
        lc = settings.left_context
        if lc is None:
            lc = default_chunk(model.encoder.cfg)[1]
        streamer = StreamingDecoder(model, settings.chunk_size, lc, settings.method, settings.beam,
                                    settings.max_symbols_per_frame, device)
    outputs: List[UtteranceOutput] = []
    limit = settings.num_streams if streamer is not None else 1 << 30
    for batch in _batches(ordered, settings.max_duration, limit):
        audios, notes = [], []
        for cut in batch:
            audio, note = _load_or_note(cut, min_samples, settings.strict)
            audios.append(audio)
            notes.append(note)
        todo = [i for i, n in enumerate(notes) if not n]
        results: dict = {}
        with rtf.timing():
            if todo and streamer is not None:
                res = streamer.decode_waveforms([audios[i] for i in todo], [batch[i].id for i in todo])
                results = {i: (r.tokens, r.frames) for i, r in zip(todo, res)}
            elif todo:
                feats = [compute_online_fbank(audios[i]) for i in todo]
                lens = torch.tensor([f.size(0) for f in feats], dtype=torch.int64)
                padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True,
                                                         padding_value=FEATURE_PAD_VALUE).to(device)
                enc, enc_lens = encode(model, padded, lens.to(device), settings.mode,
                                       settings.chunk_size, settings.left_context)
                res = search(model, enc, enc_lens, settings.method, settings.beam,
                             settings.max_symbols_per_frame)
                results = {i: (r.tokens, r.frames) for i, r in zip(todo, res)}
        for i, cut in enumerate(batch):
            rtf.add_audio(audios[i].size / FBANK_OPTS.sampling_rate)
            tokens, frames = results.get(i, ([], []))
            emis, avail = token_times(frames, int(audios[i].size), chunk, encoder=model.encoder)
            hyp = tokens_to_words([id_to_piece(t) for t in tokens], emis, avail)
            words, starts, ends, why, ends_why = _reference(cut)
            outputs.append(UtteranceOutput(cut.id, float(cut.duration), words, starts, why,
                                           list(tokens), list(frames), hyp, notes[i],
                                           ref_ends_s=ends, ref_ends_reason=ends_why))
        if progress is not None:
            progress(len(batch))
    outputs.sort(key=lambda o: o.cut_id)
    return outputs


def forced_alignment_times(model: nn.Module, tokenizer: Any, cuts: Any, device: str = "cpu",
                           progress: Optional[Callable[[int], None]] = None) -> dict:
    """Reference word start times from forced alignment with ``model`` (fallback only).

    Each cut's transcript is tokenized, aligned to the model's offline
    encoder output (:func:`asr_kd.decode.align.forced_align`), and a word's
    start is the emission time of its first token (frame × 40 ms). These
    times favour students that copy this model's timing: prefer corpus times.
    No word ends: the path says when a word's tokens were emitted, not when
    the word stopped sounding.

    Returns:
      cut id -> (word start times or None, reason when None).
    """
    from .align import forced_align

    model.eval()
    min_samples = min_samples_for_output(model.encoder)
    out = {}
    for cut in sorted(cuts, key=lambda c: c.id):
        words = _reference(cut)[0]
        if not words:
            out[cut.id] = (None, "empty reference")
            continue
        audio, note = _load_or_note(cut, min_samples, strict=False)
        if note:
            out[cut.id] = (None, "audio too short or silent to align")
            continue
        feats = compute_online_fbank(audio)[None].to(device)
        lens = torch.tensor([feats.size(1)], device=device)
        enc, enc_lens = encode(model, feats, lens, "offline")
        toks = tokenizer.encode([" ".join(words)])[0]
        try:
            frames, _ = forced_align(model, enc[0, : int(enc_lens[0])], toks)
        except ValueError as e:
            out[cut.id] = (None, f"forced alignment failed: {e}")
            continue
        emis, _ = token_times(frames, int(audio.size), None, encoder=model.encoder)
        timed = tokens_to_words([tokenizer.id_to_piece(t) for t in toks], emis, emis)
        if [w.upper() for w in timed.words] != [w.upper() for w in words]:
            out[cut.id] = (None, "tokenized transcript does not map back to its words")
        else:
            out[cut.id] = (timed.emission_s, "")
        if progress is not None:
            progress(1)
    return out
