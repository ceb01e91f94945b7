"""Tiny synthetic corpora for the tests (no downloads, no TTS): a test helper, not part of the package.

Each utterance is a sequence of "words"; every word is a short tone burst
whose pitch identifies the word, followed by a little noise, so a model can
in principle learn the mapping. Audio is written as 16 kHz PCM16 WAV with
soundfile and wrapped in lhotse manifests.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

__all__ = ["WORDS", "make_synthetic_cuts", "write_transcripts", "make_noise_cuts"]

WORDS: Sequence[str] = (
    "ALPHA", "BRAVO", "CHARLIE", "DELTA", "ECHO", "FOXTROT", "GOLF", "HOTEL",
)


def _word_audio(word_idx: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    dur = 0.18 + 0.04 * (word_idx % 3)
    t = np.arange(int(dur * sr)) / sr
    f0 = 200.0 + 90.0 * word_idx
    tone = 0.25 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(2 * np.pi * 2.5 * f0 * t)
    env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)
    gap = 0.01 * rng.standard_normal(int(0.05 * sr))
    return np.concatenate([tone * env, gap])


def make_synthetic_cuts(out_dir: Union[str, Path], num_cuts: int = 8, seed: int = 0,
                        min_words: int = 1, max_words: int = 4, sampling_rate: int = 16000,
                        words: Sequence[str] = WORDS, empty_text_ids: Sequence[int] = ()):
    """Write ``num_cuts`` WAV files under ``out_dir`` and return a CutSet.

    Cut ``i`` has id ``utt{i:04d}`` and one supervision covering the whole
    recording; ``empty_text_ids`` lists utterances whose text is left empty.
    """
    import soundfile as sf
    from lhotse import CutSet, Recording, SupervisionSegment

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cuts = []
    for i in range(num_cuts):
        n = int(rng.integers(min_words, max_words + 1))
        idx = [int(rng.integers(0, len(words))) for _ in range(n)]
        lead = 0.005 * rng.standard_normal(int(0.1 * sampling_rate))
        audio = np.concatenate([lead] + [_word_audio(k, rng, sampling_rate) for k in idx])
        path = out_dir / f"utt{i:04d}.wav"
        sf.write(str(path), audio.astype(np.float32), sampling_rate, subtype="PCM_16")
        rec = Recording.from_file(path, recording_id=f"utt{i:04d}")
        text = "" if i in set(empty_text_ids) else " ".join(words[k] for k in idx)
        sup = SupervisionSegment(id=rec.id, recording_id=rec.id, start=0.0, duration=rec.duration,
                                 text=text)
        cut = rec.to_cut()
        cut.supervisions = [sup]
        cuts.append(cut)
    return CutSet.from_cuts(cuts)


def make_noise_cuts(out_dir: Union[str, Path], num: int = 2, duration: float = 0.7,
                    seed: int = 1, sampling_rate: int = 16000):
    """White/brown noise recordings as a CutSet (ids ``noise{i}``, no supervisions)."""
    import soundfile as sf
    from lhotse import CutSet, Recording

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cuts = []
    for i in range(num):
        x = rng.standard_normal(int(duration * sampling_rate))
        if i % 2:
            x = np.cumsum(x)
            x -= x.mean()
        x = 0.3 * x / (np.abs(x).max() + 1e-9)
        path = out_dir / f"noise{i}.wav"
        sf.write(str(path), x.astype(np.float32), sampling_rate, subtype="PCM_16")
        cuts.append(Recording.from_file(path, recording_id=f"noise{i}").to_cut())
    return CutSet.from_cuts(cuts)


def write_transcripts(cuts, path: Union[str, Path], extra: Optional[List[str]] = None) -> Path:
    """One transcript per line (non-empty supervision texts of ``cuts`` + ``extra``)."""
    lines = [s.text for c in cuts for s in c.supervisions if s.text]
    lines += list(extra or [])
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
