"""Run exported models with sherpa-onnx's Python API (tests, benchmarks, docs).

* :func:`online_recognizer` / :func:`offline_recognizer`: build a recognizer
  from an export directory (fp32 or the ``*.int8.onnx`` files);
* :func:`decode_online`: feed one waveform as a live stream in pieces and
  return the token ids; :func:`decode_offline`: whole-utterance decoding;
* :func:`read_token_ids`: ``tokens.txt`` as a piece -> id dict, to turn
  sherpa-onnx's token strings back into ids.

``tokens.txt`` names the unknown piece ``metadata.UNK_SYMBOL``, so sherpa-onnx
emits it like any other token (a token named ``<unk>`` would be treated as
blank).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from asr_kd.types import PathLike

__all__ = ["model_files", "online_recognizer", "offline_recognizer", "decode_online", "decode_offline",
           "read_token_ids"]

SAMPLE_RATE = 16000


def model_files(model_dir: PathLike, int8: bool = False) -> dict[str, str]:
    """Paths of encoder/decoder/joiner (``*.int8.onnx`` with ``int8``) and tokens.txt."""
    d = Path(model_dir)
    suffix = ".int8.onnx" if int8 else ".onnx"
    files = {k: d / f"{k}{suffix}" for k in ("encoder", "decoder", "joiner")}
    files["tokens"] = d / "tokens.txt"
    for name, p in files.items():
        if not p.is_file():
            raise FileNotFoundError(f"{model_dir}: missing {p.name} (export with asr_kd.bin.export_onnx"
                                    f"{' --int8' if int8 and name != 'tokens' else ''})")
    return {k: str(v) for k, v in files.items()}


def online_recognizer(model_dir: PathLike, int8: bool = False, num_threads: int = 1, model_type: str = "") -> Any:
    """``sherpa_onnx.OnlineRecognizer`` (greedy search) for a streaming export.

    ``model_type`` "" lets sherpa-onnx read it from the encoder metadata
    ("conformer" or "zipformer2"); a non-empty value is passed on as it is.
    """
    import sherpa_onnx

    f = model_files(model_dir, int8)
    return sherpa_onnx.OnlineRecognizer.from_transducer(
        tokens=f["tokens"], encoder=f["encoder"], decoder=f["decoder"], joiner=f["joiner"],
        num_threads=num_threads, sample_rate=SAMPLE_RATE, feature_dim=80, decoding_method="greedy_search",
        model_type=model_type,
    )


def offline_recognizer(model_dir: PathLike, int8: bool = False, num_threads: int = 1) -> Any:
    """``sherpa_onnx.OfflineRecognizer`` (greedy search) for an offline export."""
    import sherpa_onnx

    f = model_files(model_dir, int8)
    return sherpa_onnx.OfflineRecognizer.from_transducer(
        encoder=f["encoder"], decoder=f["decoder"], joiner=f["joiner"], tokens=f["tokens"],
        num_threads=num_threads, sample_rate=SAMPLE_RATE, feature_dim=80, decoding_method="greedy_search",
    )


def read_token_ids(tokens_txt: PathLike, as_sherpa_reports: bool = True) -> dict[str, int]:
    """``tokens.txt`` (``<piece> <id>`` per line) as {piece: id}.

    With ``as_sherpa_reports`` the word-start marker U+2581 is replaced by a
    space, as sherpa-onnx does in the token strings of its results.
    """
    out = {}
    for line in Path(tokens_txt).read_text(encoding="utf-8").splitlines():
        if line.strip():
            piece, idx = line.rsplit(" ", 1)
            out[piece.replace("\u2581", " ") if as_sherpa_reports else piece] = int(idx)
    return out


def decode_online(recognizer: Any, samples: np.ndarray, token_ids: dict[str, int],
                  piece_samples: Optional[int] = None) -> list[int]:
    """Decode ``samples`` ((n,) float32 in [-1, 1], 16 kHz) as one live stream.

    Audio is fed in pieces of ``piece_samples`` (None: at once), decoding every
    ready chunk after each piece; then the input is finished and the
    remaining ready chunks are decoded (sherpa-onnx never decodes a partial
    last chunk: see docs/deploy.md, "End of stream").
    """
    x = np.ascontiguousarray(samples, dtype=np.float32)
    s = recognizer.create_stream()
    step = int(piece_samples) if piece_samples else max(x.size, 1)
    for start in range(0, x.size, step):
        s.accept_waveform(SAMPLE_RATE, x[start:start + step])
        while recognizer.is_ready(s):
            recognizer.decode_stream(s)
    s.input_finished()
    while recognizer.is_ready(s):
        recognizer.decode_stream(s)
    return [token_ids[t] for t in recognizer.get_result_all(s).tokens]


def decode_offline(recognizer: Any, samples: np.ndarray, token_ids: dict[str, int]) -> list[int]:
    """Whole-utterance decoding of ``samples`` ((n,) float32, 16 kHz); token ids."""
    s = recognizer.create_stream()
    s.accept_waveform(SAMPLE_RATE, np.ascontiguousarray(samples, dtype=np.float32))
    recognizer.decode_stream(s)
    return [token_ids[t] for t in s.result.tokens]
