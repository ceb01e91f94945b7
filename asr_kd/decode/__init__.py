"""Decoding: greedy and modified beam search, offline / simulated / true streaming.

Public API::

    from asr_kd.decode import (greedy_search, modified_beam_search, SearchResult,
                               encode, search, Stream, StreamingDecoder, forced_align,
                               token_times, DecodeSettings, decode_cuts)
"""
from .align import forced_align
from .utterance import METHODS, MODES, encode, search
from .pipeline import DecodeSettings, UtteranceOutput, decode_cuts, forced_alignment_times, load_mono_audio
from .search import (
    BeamState,
    GreedyState,
    SearchResult,
    greedy_search,
    init_beam_states,
    init_greedy_states,
    modified_beam_search,
)
from .streaming import Stream, StreamingDecoder, StreamResult, min_samples_for_output
from .timing import chunk_latency_overhead_ms, encoder_frame_shift_s, token_times

__all__ = [
    "BeamState", "DecodeSettings", "GreedyState", "METHODS", "MODES", "SearchResult", "Stream",
    "StreamResult", "StreamingDecoder", "UtteranceOutput", "chunk_latency_overhead_ms", "decode_cuts",
    "encode", "encoder_frame_shift_s", "forced_align", "forced_alignment_times", "greedy_search",
    "init_beam_states", "init_greedy_states", "load_mono_audio", "min_samples_for_output",
    "modified_beam_search", "search", "token_times",
]
