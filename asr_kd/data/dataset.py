"""A map-style dataset that turns a lhotse ``CutSet`` (one batch, chosen by a
sampler) into padded tensors.

Batch dict (see :meth:`AsrDataset.__getitem__`)::

    features        (B, T, 80) float32   student input (noise + SpecAugment when enabled)
    feature_lens    (B,)       int64     valid frames per utterance
    texts           list[str]            transcript (supervision texts joined by " ")
    cut_ids         list[str]
    cuts            lhotse CutSet        the cuts, in batch order
    clean_features  (B, T, 80) float32   only when return_clean: the input before noise
                                         and SpecAugment (what the teacher sees)

Utterances are ordered by decreasing duration (ties by id); frames past
``feature_lens[b]`` hold :data:`~asr_kd.data.features.FEATURE_PAD_VALUE`.
"""
from __future__ import annotations

import logging
import random
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from .augment import NoiseMixer, SpecAugment, batch_seed
from .features import FBANK_OPTS, FEATURE_PAD_VALUE, FbankOptions, lhotse_fbank_extractor

__all__ = ["AsrDataset", "cut_text", "cut_sources", "load_cut_features", "collate_features"]

from .text import normalize_text

log = logging.getLogger(__name__)


def cut_text(cut) -> str:
    """Transcript of a cut: its supervision texts joined by one space, normalised
    (:func:`asr_kd.data.text.normalize_text`, as for BPE training and scoring)."""
    parts = [(s.text or "").strip() for s in cut.supervisions]
    return normalize_text(" ".join(p for p in parts if p))


def cut_sources(cut) -> str:
    """Human-readable list of the files a cut reads (audio sources, feature storage)."""
    found: List[str] = []

    def visit(c) -> None:
        tracks = getattr(c, "tracks", None)
        if tracks is not None:  # MixedCut
            for t in tracks:
                visit(t.cut)
            return
        if getattr(c, "has_features", False) and c.features is not None:
            f = c.features
            found.append(f"features {f.storage_path}" + (f"[{f.storage_key}]" if f.storage_key else ""))
        rec = getattr(c, "recording", None)
        if rec is not None:
            for s in rec.sources:
                found.append(f"audio {s.source}")

    visit(cut)
    return ", ".join(dict.fromkeys(found)) or "<no audio or features attached>"


def _first_recording_path(cut) -> str:
    rec = getattr(cut, "recording", None)
    if rec is not None and rec.sources:
        return str(rec.sources[0].source)
    return cut_sources(cut)


def check_transcript(cut, manifest: str = "training manifest") -> str:
    """The cut's normalised transcript; ``ValueError`` naming the cut, its audio and ``manifest`` if empty.

    Training manifests must not contain empty transcripts: a transducer can
    learn "all blank" from them, but in practice they are data-preparation
    bugs (lost text, wrong join), so they stop training instead of being
    silently dropped.
    """
    text = cut_text(cut)
    if not text:
        raise ValueError(
            f"cut {cut.id!r} (recording {_first_recording_path(cut)}) has an empty transcript"
            f"{' after normalisation' if any((x.text or '').strip() for x in cut.supervisions) else ''}; "
            f"fix or remove it from the {manifest}"
        )
    return text


def load_cut_features(cut, on_the_fly: bool, extractor=None,
                      opts: FbankOptions = FBANK_OPTS) -> torch.Tensor:
    """(T, F) float32 features of one cut.

    Stored features: ``cut.load_features()``. On the fly: audio through
    lhotse's ``Fbank`` (resampled to ``opts.sampling_rate`` when needed).
    Any failure becomes ``RuntimeError`` naming the cut id and its files.
    """
    try:
        if on_the_fly:
            if not cut.has_recording:
                raise ValueError("the cut has no recording (on-the-fly features need audio)")
            if cut.sampling_rate != opts.sampling_rate:
                cut = cut.resample(opts.sampling_rate)
            audio = cut.load_audio()
            if audio.ndim == 2:
                if audio.shape[0] != 1:
                    raise ValueError(f"expected mono audio, got {audio.shape[0]} channels")
                audio = audio[0]
            extractor = extractor if extractor is not None else lhotse_fbank_extractor(opts)
            feats = extractor.extract(np.ascontiguousarray(audio, dtype=np.float32), opts.sampling_rate)
        else:
            if not cut.has_features:
                raise ValueError(
                    "the cut has no stored features (run asr_kd.bin.compute_fbank or enable "
                    "on-the-fly features)"
                )
            feats = cut.load_features()
    except Exception as e:  # noqa: BLE001 - re-raised with the cut and file named
        kind = "audio" if on_the_fly else "features"
        raise RuntimeError(
            f"cannot load {kind} for cut {cut.id!r} from {cut_sources(cut)}: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from e
    feats = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
    if feats.dim() != 2 or feats.size(1) != opts.num_mel_bins:
        raise RuntimeError(
            f"cut {cut.id!r}: features have shape {tuple(feats.shape)}, expected (T, {opts.num_mel_bins}) "
            f"({cut_sources(cut)})"
        )
    return feats


def collate_features(feats: List[torch.Tensor], pad_value: float = FEATURE_PAD_VALUE,
                     num_frames: Optional[List[int]] = None) -> torch.Tensor:
    """Pad a list of (T_i, F) tensors to (B, max T, F).

    ``num_frames`` forces each item to exactly ``num_frames[i]`` frames first
    (cropping, or repeating the last frame), used to give noisy features the
    frame count of the clean ones.
    """
    if num_frames is not None:
        fixed = []
        for f, n in zip(feats, num_frames):
            if f.size(0) > n:
                f = f[:n]
            elif f.size(0) < n:
                f = torch.cat([f, f[-1:].expand(n - f.size(0), -1)], dim=0)
            fixed.append(f)
        feats = fixed
    t_max = max(int(f.size(0)) for f in feats)
    out = torch.full((len(feats), t_max, feats[0].size(1)), pad_value, dtype=torch.float32)
    for i, f in enumerate(feats):
        out[i, : f.size(0)] = f
    return out


class AsrDataset(torch.utils.data.Dataset):
    """Builds the batch dict from a ``CutSet`` given by a lhotse sampler.

    Args:
      on_the_fly_feats: compute features from audio instead of reading storage.
      spec_augment: a :class:`SpecAugment` (None: off).
      noise: a :class:`NoiseMixer` (None: off).
      return_clean: also return ``clean_features`` (input before augmentation).
      seed: base seed of :func:`batch_seed`; ``epoch`` is set by the data module
        before each pass so masks differ between epochs.
      check_text: raise on empty transcripts (training); validation may relax it.
    """

    def __init__(self, on_the_fly_feats: bool = False, spec_augment: Optional[SpecAugment] = None,
                 noise: Optional[NoiseMixer] = None, return_clean: bool = False, seed: int = 0,
                 check_text: bool = True, opts: FbankOptions = FBANK_OPTS) -> None:
        super().__init__()
        self.on_the_fly_feats = on_the_fly_feats
        self.spec_augment = spec_augment
        self.noise = noise
        self.return_clean = return_clean
        self.seed = int(seed)
        self.epoch = 0
        self.check_text = check_text
        self.opts = opts
        self._extractor = None

    def _get_extractor(self):
        if self._extractor is None and self.on_the_fly_feats:
            self._extractor = lhotse_fbank_extractor(self.opts)
        return self._extractor

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_extractor"] = None  # rebuilt lazily in each worker
        return state

    def __getitem__(self, cuts) -> Dict[str, Any]:
        from lhotse import CutSet

        cut_list = sorted(cuts, key=lambda c: (-c.duration, c.id))
        if not cut_list:
            raise ValueError("empty batch")
        texts = [check_transcript(c) if self.check_text else cut_text(c) for c in cut_list]
        ids = [c.id for c in cut_list]
        seed = batch_seed(self.seed, self.epoch, ids)
        extractor = self._get_extractor()

        clean = [load_cut_features(c, self.on_the_fly_feats, extractor, self.opts) for c in cut_list]
        lens = [int(f.size(0)) for f in clean]
        clean_batch = collate_features(clean)

        if self.noise is not None:
            rng = random.Random(seed)
            noisy_cuts = self.noise.apply(cut_list, rng)
            noisy = [
                f if nc is c else load_cut_features(nc, self.on_the_fly_feats, extractor, self.opts)
                for f, c, nc in zip(clean, cut_list, noisy_cuts)
            ]
            features = collate_features(noisy, num_frames=lens)
        else:
            features = clean_batch

        feature_lens = torch.tensor(lens, dtype=torch.int64)
        if self.spec_augment is not None:
            gen = torch.Generator().manual_seed(seed ^ 0x5DEECE66D)
            features = self.spec_augment(features, feature_lens, generator=gen)
        elif features is clean_batch and self.return_clean:
            features = clean_batch.clone()

        batch: Dict[str, Any] = {
            "features": features,
            "feature_lens": feature_lens,
            "texts": texts,
            "cut_ids": ids,
            "cuts": CutSet.from_cuts(cut_list),
        }
        if self.return_clean:
            batch["clean_features"] = clean_batch
        return batch
