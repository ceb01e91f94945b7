"""Metrics: WER (kaldialign) and icefall-format files, latency, RTF, paired bootstrap.

Public API::

    from asr_kd.metrics import (utterance_errors, corpus_wer, write_recogs, read_recogs, write_errs,
                                write_wer_summary, tokens_to_words, first_token_latency,
                                mean_symbol_delay, word_end_latency, paired_bootstrap,
                                update_results_json, RtfMeter)
"""
from .bootstrap import BootstrapResult, paired_bootstrap, paired_bootstrap_from_recogs
from .latency import (
    FirstTokenLatency,
    SymbolDelay,
    TimedWords,
    UtteranceTiming,
    WordEndLatency,
    first_token_latency,
    mean_symbol_delay,
    reference_word_spans,
    reference_word_times,
    tokens_to_words,
    word_end_latency,
)
from .report import score_and_write
from .results import REQUIRED_FIELDS, RtfMeter, read_results_json, update_results_json
from .wer import (
    ErrorCounts,
    align_words,
    corpus_wer,
    read_recogs,
    utterance_errors,
    write_errs,
    write_recogs,
    write_wer_summary,
)

__all__ = [
    "BootstrapResult", "ErrorCounts", "FirstTokenLatency", "REQUIRED_FIELDS", "RtfMeter", "SymbolDelay",
    "TimedWords", "UtteranceTiming", "WordEndLatency", "align_words", "corpus_wer", "first_token_latency",
    "mean_symbol_delay", "paired_bootstrap", "paired_bootstrap_from_recogs", "read_recogs",
    "read_results_json", "reference_word_spans", "reference_word_times", "score_and_write", "tokens_to_words",
    "update_results_json", "utterance_errors", "word_end_latency", "write_errs", "write_recogs",
    "write_wer_summary",
]
