"""True chunk-by-chunk streaming: raw audio in, tokens out, with cached states.

A :class:`Stream` is one utterance/connection. It takes 16 kHz float audio in
pieces of any size (:meth:`Stream.accept_waveform`), computes features
incrementally (:class:`asr_kd.data.features.OnlineFbank`) and holds

* the encoder's streaming state (``encoder.init_states`` with batch 1: the
  Conformer's or the Zipformer's layout, see ``asr_kd.models``),
* the search state (:class:`GreedyState` or :class:`BeamState`): hypothesis,
  decoder context/output, frames consumed,
* per chunk: the encoder frames it produced and its availability time.

A :class:`StreamingDecoder` runs one chunk of every *ready* stream as one
batch: it stacks their states along the batch axis
(:func:`asr_kd.models.states.stack_states`), calls
``encoder.streaming_forward`` once, continues the search on the chunk's
``K`` encoder frames and splits the states back (``unstack_states``). Streams
may be at different positions (per-stream offsets); streams are batched with
others whose state tensors have the same shapes (the Conformer's caches grow
with the offset under unlimited left context; the Zipformer's have a fixed
size).

Chunk ``c`` consumes feature frames ``[c·shift, c·shift + input)``
(``shift = encoder.chunk_shift_frames(K) = 4K``, ``input =
encoder.chunk_input_frames(K)``: 4K + 3 for the Conformer, 4K + 13 for the
Zipformer) and is ready when the front end has those frames; every call gets
a whole window, which both encoders accept. After
:meth:`Stream.input_finished`, a last partial chunk is padded with
:data:`FEATURE_PAD_VALUE` and run with ``valid_frames`` = the real encoder
frames left (``output_lengths(T) − offset``), which reproduces the
masked full-utterance forward (simulated streaming) exactly.

Tail convention (``tail``): ``"pad"`` (default) is the rule above.
``"drop"`` schedules chunks exactly as sherpa-onnx's ``OnlineRecognizer``
does for an exported model (``asr_kd.export``): chunk ``c`` runs only once
*more than* ``input`` frames from its start are available
(``ready > c·shift + input``, one frame later than ``"pad"``), and after
the input ends the frames that never completed such a window are not
decoded (no padded last chunk). With the same audio, ``"drop"`` gives the
tokens sherpa-onnx gives; append trailing silence to the audio so that
speech at the very end is inside a decoded chunk.

Availability time of chunk ``c``: ``min(end_sample(last frame), N_received)``
/ 16 kHz: the end of the audio it consumed (:mod:`asr_kd.decode.timing`).

Degenerate input (no crash, empty hypothesis, a note in :attr:`Stream.note`
and the log): no audio; audio giving fewer feature frames than the encoder's
receptive field (Conformer: 7 frames = 65 ms; Zipformer: 17 frames = 165
ms); pure digital silence (every sample exactly 0: the hypothesis is cleared
at the end of the input, the same rule as file decoding).
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from asr_kd.data.features import FBANK_OPTS, FEATURE_PAD_VALUE, FbankOptions, OnlineFbank
from asr_kd.models.encoders import min_input_frames
from asr_kd.models.states import stack_states, unstack_states

from .search import (
    BeamState,
    GreedyState,
    SearchResult,
    greedy_search,
    init_beam_states,
    init_greedy_states,
    modified_beam_search,
)
from .timing import encoder_frame_shift_s, feature_frame_end_sample

__all__ = ["Stream", "StreamingDecoder", "StreamResult", "min_samples_for_output", "TAILS"]

#: end-of-stream conventions, see the module docstring
TAILS = ("pad", "drop")

log = logging.getLogger(__name__)


def min_samples_for_output(encoder: nn.Module, opts: FbankOptions = FBANK_OPTS) -> int:
    """Fewest samples that give one encoder frame (Conformer: 7 feature frames = 1040 samples = 65 ms;
    Zipformer: 17 frames = 2640 samples = 165 ms)."""
    hop = int(round(opts.frame_shift_s * opts.sampling_rate))
    frames = min_input_frames(encoder)
    # T = floor((N + hop/2) / hop) >= frames  <=>  N >= frames·hop − hop/2
    return frames * hop - hop // 2


class StreamResult:
    """Hypothesis of a stream with per-token times (seconds from the stream start)."""

    def __init__(self, stream_id: str, result: SearchResult, emission_s: List[float],
                 availability_s: List[float], num_samples: int, note: str) -> None:
        self.stream_id = stream_id
        self.tokens = result.tokens
        self.frames = result.frames
        self.score = result.score
        self.emission_s = emission_s
        self.availability_s = availability_s
        self.num_samples = num_samples
        self.note = note

    def __repr__(self) -> str:
        return f"StreamResult({self.stream_id!r}, tokens={self.tokens}, frames={self.frames})"


class Stream:
    """One audio stream being decoded; create with :meth:`StreamingDecoder.create_stream`."""

    def __init__(self, stream_id: str, encoder: nn.Module, chunk_size: int, left_context: int,
                 search_state: Union[GreedyState, BeamState], device: torch.device,
                 opts: FbankOptions = FBANK_OPTS, tail: str = "pad") -> None:
        if tail not in TAILS:
            raise ValueError(f"stream {stream_id}: tail must be one of {TAILS}, got {tail!r}")
        self.stream_id = stream_id
        self.tail = tail
        self.opts = opts
        self.chunk_size = chunk_size
        self.fbank = OnlineFbank(opts)
        self.encoder_state: Dict[str, Tensor] = encoder.init_states(1, left_context, device=device)
        self.search_state = search_state
        self.input_frames = encoder.chunk_input_frames(chunk_size)
        self.shift_frames = encoder.chunk_shift_frames(chunk_size)
        self._output_lengths = encoder.output_lengths
        self.num_samples = 0
        self.all_zero = True
        self.num_chunks = 0
        self.encoder_frames = 0  # encoder frames produced so far
        # (first encoder frame after the chunk, availability in seconds) per chunk
        self.chunk_ends: List[Tuple[int, float]] = []
        self.note = ""
        self._done = False

    # -- input ---------------------------------------------------------------------------------
    def accept_waveform(self, samples: Union[np.ndarray, Tensor, Sequence[float]]) -> None:
        """Append audio: (n,) float samples in [-1, 1] at 16 kHz (n may be 0)."""
        if self.fbank.is_finished:
            raise RuntimeError(f"stream {self.stream_id}: accept_waveform after input_finished")
        x = samples.detach().cpu().numpy() if isinstance(samples, Tensor) else np.asarray(samples)
        if x.ndim != 1:
            raise ValueError(f"stream {self.stream_id}: expected (n,) mono samples, got shape {x.shape}")
        if x.size == 0:
            return
        x = x.astype(np.float32, copy=False)
        if not np.all(np.isfinite(x)):
            raise ValueError(f"stream {self.stream_id}: audio contains NaN or inf")
        self.fbank.accept_waveform(x)
        self.num_samples += int(x.size)
        if self.all_zero and np.any(x != 0):
            self.all_zero = False

    def input_finished(self) -> None:
        """No more audio: the remaining frames (and a padded last chunk) become decodable."""
        self.fbank.input_finished()

    # -- chunk scheduling ------------------------------------------------------------------------
    @property
    def is_finished(self) -> bool:
        """Input finished and every chunk decoded."""
        return self.fbank.is_finished and self.next_chunk() is None

    def next_chunk(self) -> Optional[Tuple[Tensor, int]]:
        """Features (input, F) of the next decodable chunk and its valid encoder frames, or None."""
        if self._done:
            return None
        start = self.num_chunks * self.shift_frames
        ready = self.fbank.num_frames_ready
        if self.tail == "drop":
            if ready > start + self.input_frames:
                return self.fbank.get_frames(start, self.input_frames), self.chunk_size
            if self.fbank.is_finished:
                self._finish_notes(ready)
                self._done = True
            return None
        if ready >= start + self.input_frames:
            return self.fbank.get_frames(start, self.input_frames), self.chunk_size
        if not self.fbank.is_finished:
            return None
        valid = int(self._output_lengths(torch.tensor([ready]))[0]) - self.encoder_frames
        if valid <= 0:
            self._finish_notes(ready)
            self._done = True
            return None
        real = self.fbank.get_frames(start, ready - start)
        pad = torch.full((self.input_frames - real.size(0), real.size(1)), FEATURE_PAD_VALUE)
        return torch.cat([real, pad]), valid

    def _finish_notes(self, num_frames: int) -> None:
        if self.num_samples == 0:
            self.note = "empty audio: nothing decoded"
        elif self.encoder_frames == 0 and self.tail == "drop":
            self.note = (f"audio of {self.num_samples} samples gives {num_frames} feature frames, "
                         f"no more than one chunk window ({self.input_frames}) with tail='drop': nothing decoded")
        elif self.encoder_frames == 0:
            self.note = (f"audio of {self.num_samples} samples gives {num_frames} feature frames, "
                         "fewer than the encoder needs for one output frame: nothing decoded")
        elif self.all_zero:
            self.note = "pure digital silence: hypothesis left empty"
        if self.note:
            log.info("stream %s: %s", self.stream_id, self.note)

    def _record_chunk(self, valid: int) -> None:
        last_frame = self.num_chunks * self.shift_frames + self.input_frames - 1
        end = min(feature_frame_end_sample(last_frame, self.opts), self.num_samples)
        self.encoder_frames += valid
        self.num_chunks += 1
        self.chunk_ends.append((self.encoder_frames, end / float(self.opts.sampling_rate)))

    # -- output ----------------------------------------------------------------------------------
    def _search_result(self) -> SearchResult:
        s = self.search_state
        return s.best() if isinstance(s, BeamState) else s.result()

    def result(self) -> StreamResult:
        """Current hypothesis (partial until :attr:`is_finished`) with token times."""
        res = self._search_result()
        if self.fbank.is_finished and self.all_zero:
            res = SearchResult([], [], 0.0)
        shift = encoder_frame_shift_s(self.opts)
        emission = [f * shift for f in res.frames]
        avail = []
        c = 0
        for f in res.frames:
            while self.chunk_ends[c][0] <= f:
                c += 1
            avail.append(self.chunk_ends[c][1])
        return StreamResult(self.stream_id, res, emission, avail, self.num_samples, self.note)


def _state_shapes(state: Dict[str, Tensor]) -> Tuple[Tuple[str, Tuple[int, ...]], ...]:
    """Names and shapes beyond the batch axis: streams with equal ones are batched together."""
    return tuple(sorted((k, tuple(v.shape[1:])) for k, v in state.items()))


class StreamingDecoder:
    """Decodes many :class:`Stream` objects together, one chunk per ready stream per step.

    Args:
      model: a transducer with a causal encoder (``model.eval()`` is called).
      chunk_size: K in encoder frames (40 ms each).
      left_context: L in encoder frames (-1 = unlimited; the Zipformer needs L >= 0).
      method: "greedy" or "modified_beam_search".
      beam: beam size for modified beam search.
      max_symbols_per_frame: for greedy search.
      tail: "pad" (decode a padded last chunk) or "drop" (sherpa-onnx's chunk
        scheduling, no padded last chunk); see the module docstring.
    """

    def __init__(self, model: nn.Module, chunk_size: int, left_context: int, method: str = "greedy",
                 beam: int = 4, max_symbols_per_frame: int = 1,
                 device: Union[str, torch.device] = "cpu", opts: FbankOptions = FBANK_OPTS,
                 tail: str = "pad") -> None:
        if tail not in TAILS:
            raise ValueError(f"tail must be one of {TAILS}, got {tail!r}")
        if method not in ("greedy", "modified_beam_search"):
            raise ValueError(f"unknown decoding method {method!r} (greedy | modified_beam_search)")
        if not getattr(model.encoder, "cfg", None) or not model.encoder.cfg.causal:
            raise ValueError("true streaming needs a causal (chunk-wise) encoder; this model is full-context")
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be > 0 encoder frames, got {chunk_size}")
        # the encoder's own checks, now rather than at the first stream (e.g. the Zipformer's
        # divisibility of K and L by its downsampling factors, its fixed-size caches: L >= 0)
        model.encoder.chunk_config(chunk_size, left_context)
        model.encoder.init_states(1, left_context)
        self.model = model.eval()
        self.chunk_size = int(chunk_size)
        self.left_context = int(left_context)
        self.method = method
        self.beam = int(beam)
        self.max_symbols_per_frame = int(max_symbols_per_frame)
        self.device = torch.device(device)
        self.opts = opts
        self.tail = tail

    def create_stream(self, stream_id: str = "") -> Stream:
        enc = self.model.encoder
        if self.method == "greedy":
            search = init_greedy_states(self.model, 1, self.device)[0]
        else:
            search = init_beam_states(self.model, 1, self.device)[0]
        return Stream(stream_id, enc, self.chunk_size, self.left_context, search, self.device, self.opts,
                      self.tail)

    @torch.no_grad()
    def step(self, streams: Sequence[Stream]) -> int:
        """Decode one chunk of every ready stream; returns how many chunks ran."""
        ready: List[Tuple[Stream, Tensor, int]] = []
        for s in streams:
            nxt = s.next_chunk()
            if nxt is not None:
                ready.append((s, nxt[0], nxt[1]))
        # Conformer with unlimited left context: caches grow with the offset, batch equal shapes only.
        groups: Dict[Tuple[Tuple[str, Tuple[int, ...]], ...], List[Tuple[Stream, Tensor, int]]] = {}
        for item in ready:
            groups.setdefault(_state_shapes(item[0].encoder_state), []).append(item)
        for _, group in sorted(groups.items()):
            self._run(group)
        return len(ready)

    def _run(self, group: List[Tuple[Stream, Tensor, int]]) -> None:
        enc = self.model.encoder
        feats = torch.stack([f for _, f, _ in group]).to(self.device)  # (B, input, F)
        valid = torch.tensor([v for _, _, v in group], dtype=torch.int64, device=self.device)
        states = stack_states([s.encoder_state for s, _, _ in group])
        all_valid = bool((valid == self.chunk_size).all())
        out, new_states = enc.streaming_forward(feats, states, self.chunk_size, self.left_context,
                                                valid_frames=None if all_valid else valid)
        for s, st in zip((g[0] for g in group), unstack_states(new_states)):
            s.encoder_state = st
        search_states = [s.search_state for s, _, _ in group]
        if self.method == "greedy":
            greedy_search(self.model, out, valid, self.max_symbols_per_frame, states=search_states)
        else:
            modified_beam_search(self.model, out, valid, self.beam, states=search_states)
        for s, _, v in group:
            s._record_chunk(v)

    def decode_ready(self, streams: Sequence[Stream]) -> None:
        """Run :meth:`step` until no stream has a decodable chunk."""
        while self.step(streams):
            pass

    def decode_waveforms(self, waveforms: Sequence[np.ndarray], ids: Optional[Sequence[str]] = None,
                         piece_samples: Optional[int] = None) -> List[StreamResult]:
        """Convenience: decode whole waveforms as streams fed in pieces, all in one batch."""
        ids = list(ids) if ids is not None else [str(i) for i in range(len(waveforms))]
        streams = [self.create_stream(i) for i in ids]
        longest = max((len(w) for w in waveforms), default=0)
        step = int(piece_samples) if piece_samples else max(longest, 1)
        for start in range(0, longest, step):
            for s, w in zip(streams, waveforms):
                if start < len(w):
                    s.accept_waveform(np.asarray(w)[start:start + step])
            self.decode_ready(streams)
        for s in streams:
            s.input_finished()
        self.decode_ready(streams)
        return [s.result() for s in streams]
