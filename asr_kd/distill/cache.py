"""Teacher cache: the frozen teacher's encoder outputs stored on disk per cut.

Distillation runs the teacher on every batch of every epoch, although its
outputs never change (it is frozen and, with ``--kd-teacher-input clean``,
its input does not depend on augmentation). The cache stores once, per cut,

    encoder_out      (T'_c, D)   the teacher encoder output (after its final norm; this
                                 is what the last layer index stands for in stage 1)
    layer_<i>        (T'_c, D_i) the output of teacher encoder layer i (0-based; a
                                 Zipformer's stack i, D_i = its width, D for a Conformer),
                                 for the extra layers stage 1 maps

with ``T'_c`` the cut's encoder frames (4x subsampling of its feature
frames). Training with ``--teacher-cache`` reads these and runs only the
teacher's decoder and joiner live (on the lattice ranges of the batch).

Layout of a cache directory::

    meta.json                   format, teacher checkpoint + SHA-256, stored layers,
                                encoder dim/layers, feature config, dtype
    shards/<manifest>-<k>.pt    torch.save dict {cut_id: {"encoder_out": ..., "layer_<i>": ...}}
                                for cuts [k*N, (k+1)*N) of that manifest (N = shard size)
    index.json                  {cut_id: shard file name}, rebuilt from the shards

Writes are atomic (temporary file + ``os.replace``), so an interrupted run
leaves complete shards only; a rerun skips shards that exist with the
expected cut ids (resumable and idempotent) and refuses a directory whose
``meta.json`` names another teacher or other layers. Shards are read with
``torch.load(mmap=True)``: opening one is cheap and only the pages of the
requested tensors are read.

Limits: the cache holds the teacher's view of the *stored* (or on-the-fly)
clean features of each cut id. Anything that changes a cut's features before
the teacher sees them is not represented: speed perturbation (new cut ids,
refused at start-up), a different feature source (stored lilcom features vs
on-the-fly ones differ by ~1e-2), or ``--kd-teacher-input augmented``. Noise
mixing and SpecAugment act on the student's input only and are fine.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import torch
from torch import Tensor, nn

from asr_kd.atomic import atomic_torch_save, atomic_write_bytes
from asr_kd.types import PathLike

__all__ = [
    "CACHE_FORMAT",
    "MissingCutError",
    "TeacherCache",
    "write_teacher_cache",
    "cache_key",
]

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
_SHARD_RE = re.compile(r"^[A-Za-z0-9_.\-]+-\d{5}\.pt$")


class MissingCutError(ValueError):
    """A cut id of a batch is not in the teacher cache."""


def cache_key(layer: int) -> str:
    """Key of teacher encoder layer ``layer`` (0-based, non-negative) inside a cut entry."""
    return f"layer_{int(layer)}"


def _manifest_stem(path: PathLike) -> str:
    name = Path(path).name
    for suffix in (".gz", ".jsonl", ".json", ".jsonl", ".yaml"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    stem = re.sub(r"[^A-Za-z0-9_.\-]", "_", name) or "cuts"
    return stem


# --------------------------------------------------------------------------- writer


def _teacher_outputs(
    teacher: nn.Module, feats: Tensor, lens: Tensor, layers: Sequence[int]
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Teacher encoder forward (no grad): (out (B,T',D), lens (B,), hidden per layer)."""
    with torch.no_grad():
        enc = teacher.encoder(feats, lens, return_layers=list(layers))
    return enc.out, enc.lens, list(enc.hidden)


def write_teacher_cache(
    teacher: nn.Module,
    manifests: Sequence[PathLike],
    out_dir: PathLike,
    layers: Sequence[int],
    teacher_checkpoint: PathLike,
    teacher_sha256: str,
    shard_size: int = 500,
    max_duration: float = 200.0,
    dtype: torch.dtype = torch.float32,
    on_the_fly_feats: bool = False,
    progress: bool = True,
) -> Path:
    """Compute and store the teacher's encoder outputs for every cut of ``manifests``.

    Args:
      teacher: a frozen transducer (``.encoder(features, lens, return_layers=)``), eval mode,
        on the device to compute on.
      manifests: lhotse CutSet files; shards are named after each file.
      out_dir: the cache directory (created).
      layers: non-negative teacher encoder layer indices to store besides the
        encoder output (the last index stands for the encoder output, stored once).
      teacher_checkpoint / teacher_sha256: recorded in meta.json; training
        checks the SHA-256 against ``--teacher-checkpoint``.
      shard_size: cuts per shard file.
      max_duration: seconds of audio per teacher batch.
      dtype: storage dtype (float32 exact; float16 halves the size, ~1e-3 relative error).
      on_the_fly_feats: compute fbank from audio instead of reading stored features
        (must match the training run's --on-the-fly-feats).
      progress: tqdm bar over cuts.

    Returns:
      Path of the written index.json.
    """
    from lhotse import CutSet
    from tqdm.auto import tqdm

    from asr_kd.data.dataset import collate_features, load_cut_features
    from asr_kd.data.features import feature_config_dict, lhotse_fbank_extractor

    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    out_dir = Path(out_dir)
    (out_dir / "shards").mkdir(parents=True, exist_ok=True)
    num_layers = len(teacher.encoder.layers)
    last = num_layers - 1
    stored = sorted({int(i) for i in layers if int(i) != last})
    bad = [i for i in stored if not 0 <= i < num_layers]
    if bad:
        raise ValueError(f"--layers: teacher layers {bad} out of range for a {num_layers}-layer encoder")
    meta = {
        "format": CACHE_FORMAT,
        "teacher_checkpoint": str(Path(teacher_checkpoint).resolve()),
        "teacher_sha256": teacher_sha256,
        "layers": stored,
        "num_layers": num_layers,
        "encoder_dim": int(teacher.encoder.output_dim),
        "subsampling_factor": int(teacher.encoder.subsampling_factor),
        "feature_config": feature_config_dict(),
        "on_the_fly_feats": bool(on_the_fly_feats),
        "dtype": str(dtype).replace("torch.", ""),
    }
    meta_path = out_dir / "meta.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        diff = {k: (old.get(k), v) for k, v in meta.items() if k != "teacher_checkpoint" and old.get(k) != v}
        if diff:
            raise ValueError(
                f"teacher cache {meta_path} was written with other settings ({diff}, as (old, new)); "
                "use a new --out-dir or delete the old cache"
            )
    else:
        atomic_write_bytes(meta_path, json.dumps(meta, indent=1, sort_keys=True).encode())

    extractor = lhotse_fbank_extractor() if on_the_fly_feats else None
    device = next(teacher.parameters()).device
    jobs = []  # (shard path, [cuts])
    seen: set[str] = set()
    for manifest in manifests:
        cuts = list(CutSet.from_file(manifest))
        stem = _manifest_stem(manifest)
        for cut in cuts:
            if cut.id in seen:
                raise ValueError(f"--cuts: cut id {cut.id!r} appears twice (in {manifest} or an earlier manifest)")
            seen.add(cut.id)
        for k in range(0, len(cuts), shard_size):
            jobs.append((out_dir / "shards" / f"{stem}-{k // shard_size:05d}.pt", cuts[k : k + shard_size]))

    total = sum(len(c) for _, c in jobs)
    bar = tqdm(total=total, desc="teacher cache", unit="cut", disable=not progress)
    try:
        for path, cuts in jobs:
            ids = [c.id for c in cuts]
            if path.is_file():
                have = set(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
                if have != set(ids):
                    raise ValueError(
                        f"teacher cache shard {path} holds other cut ids than the manifest now gives "
                        "(the manifest changed?); use a new --out-dir"
                    )
                bar.update(len(cuts))
                continue
            shard: dict[str, dict[str, Tensor]] = {}
            order = sorted(cuts, key=lambda c: -c.duration)  # similar lengths batch together
            i = 0
            while i < len(order):
                batch = [order[i]]
                i += 1
                while i < len(order) and order[i - len(batch)].duration * (len(batch) + 1) <= max_duration:
                    batch.append(order[i])
                    i += 1
                feats_list = [load_cut_features(c, on_the_fly_feats, extractor) for c in batch]
                lens = torch.tensor([f.size(0) for f in feats_list], dtype=torch.int64)
                feats = collate_features(feats_list).to(device)
                out, out_lens, hidden = _teacher_outputs(teacher, feats, lens.to(device), stored)
                for b, cut in enumerate(batch):
                    t = int(out_lens[b])
                    # clone: a slice would save the storage of the whole batch
                    entry = {"encoder_out": out[b, :t].to("cpu", dtype).clone()}
                    for layer, h in zip(stored, hidden):
                        entry[cache_key(layer)] = h[b, :t].to("cpu", dtype).clone()
                    shard[cut.id] = entry
                bar.update(len(batch))
            atomic_torch_save(shard, path)
    finally:
        bar.close()
    return _write_index(out_dir)


def _write_index(out_dir: Path) -> Path:
    """Rebuild index.json from every shard in ``out_dir/shards``."""
    index: dict[str, str] = {}
    for path in sorted((out_dir / "shards").glob("*.pt")):
        if not _SHARD_RE.match(path.name):
            continue
        for cut_id in torch.load(path, map_location="cpu", weights_only=True, mmap=True):
            if cut_id in index:
                raise ValueError(f"teacher cache {out_dir}: cut {cut_id!r} is in both {index[cut_id]} and {path.name}")
            index[cut_id] = path.name
    out = out_dir / "index.json"
    atomic_write_bytes(out, json.dumps(index, sort_keys=True).encode())
    return out


# --------------------------------------------------------------------------- reader


class TeacherCache:
    """Read side of a cache directory (see module docstring).

    Args:
      cache_dir: directory written by :func:`write_teacher_cache`
        (``python -m asr_kd.bin.cache_teacher``).
    """

    def __init__(self, cache_dir: PathLike) -> None:
        self.dir = Path(cache_dir)
        meta_path, index_path = self.dir / "meta.json", self.dir / "index.json"
        for p in (meta_path, index_path):
            if not p.is_file():
                raise ValueError(
                    f"{p} is missing: {self.dir} is not a complete teacher cache "
                    "(run python -m asr_kd.bin.cache_teacher to finish it)"
                )
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        if self.meta.get("format") != CACHE_FORMAT:
            raise ValueError(f"teacher cache {meta_path} has format {self.meta.get('format')}, expected {CACHE_FORMAT}")
        self.index: dict[str, str] = json.loads(index_path.read_text())
        self._shards: dict[str, dict[str, Any]] = {}

    @property
    def layers(self) -> list[int]:
        """Stored teacher layers besides the encoder output (the last layer)."""
        return list(self.meta["layers"])

    def check(self, teacher_sha256: str, teacher_checkpoint: PathLike, layers: Iterable[int],
              feature_config: dict[str, Any], on_the_fly_feats: Optional[bool] = None) -> None:
        """ValueError unless this cache was made by this teacher, with these layers and features."""
        from asr_kd.data.features import check_feature_config

        if self.meta.get("teacher_sha256") != teacher_sha256:
            raise ValueError(
                f"teacher cache {self.dir} was computed with {self.meta.get('teacher_checkpoint')} "
                f"(sha256 {self.meta.get('teacher_sha256')}), not with --teacher-checkpoint {teacher_checkpoint} "
                f"(sha256 {teacher_sha256}); recompute the cache"
            )
        last = int(self.meta["num_layers"]) - 1
        missing = sorted({int(i) for i in layers if int(i) != last} - set(self.layers))
        if missing:
            raise ValueError(
                f"teacher cache {self.dir} stores layers {self.layers} (+ the encoder output), "
                f"but --kd-hidden-layers needs teacher layers {missing}; recompute with --layers"
            )
        check_feature_config(self.meta["feature_config"], feature_config, f"teacher cache {self.dir}")
        if on_the_fly_feats is not None and bool(self.meta.get("on_the_fly_feats")) != bool(on_the_fly_feats):
            raise ValueError(
                f"teacher cache {self.dir} was computed with on_the_fly_feats="
                f"{self.meta.get('on_the_fly_feats')}, training uses --on-the-fly-feats {on_the_fly_feats}"
            )

    def __contains__(self, cut_id: str) -> bool:
        return cut_id in self.index

    def _shard(self, name: str) -> dict[str, Any]:
        shard = self._shards.get(name)
        if shard is None:
            path = self.dir / "shards" / name
            try:
                shard = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception as e:
                raise ValueError(f"cannot read teacher cache shard {path}: {e}") from e
            self._shards[name] = shard
        return shard

    def entry(self, cut_id: str) -> dict[str, Tensor]:
        """The stored tensors of one cut ({"encoder_out": (T',D), "layer_<i>": (T',D)})."""
        name = self.index.get(cut_id)
        if name is None:
            raise MissingCutError(
                f"cut {cut_id!r} is not in the teacher cache {self.dir} "
                f"({len(self.index)} cuts); cache every manifest used for training "
                "(speed-perturbed copies have new ids and cannot be cached)"
            )
        try:
            return self._shard(name)[cut_id]
        except KeyError:
            raise ValueError(f"teacher cache {self.dir}: index.json maps cut {cut_id!r} to {name}, "
                             "which does not hold it") from None

    def batch(
        self, cut_ids: Sequence[str], lens: Tensor, layers: Sequence[int], device: torch.device,
        dtype: torch.dtype = torch.float32,
    ) -> tuple[Tensor, list[Tensor]]:
        """Padded teacher tensors of a batch.

        Args:
          cut_ids: B cut ids, in batch order.
          lens: (B,) expected encoder frames per cut (the student's encoder lens:
            same frame rate and features); a mismatch is an error naming the cut.
          layers: non-negative teacher layers wanted in ``hidden`` (the last layer
            is served from the encoder output).
          device, dtype: of the returned tensors.

        Returns:
          encoder_out (B, T', D) and hidden [(B, T', D_i) per layer], zero-padded,
          T' = max(lens); D_i is the stored width of that layer.
        """
        last = int(self.meta["num_layers"]) - 1
        keys = ["encoder_out"] + ["encoder_out" if int(i) == last else cache_key(i) for i in layers]
        lens_list = [int(x) for x in lens.tolist()]
        frames = max(lens_list)
        outs: list[Optional[Tensor]] = [None] * len(keys)  # allocated at the first cut: widths differ per layer
        for b, cut_id in enumerate(cut_ids):
            entry = self.entry(cut_id)
            for k, key in enumerate(keys):
                x = entry.get(key)
                if x is None:
                    raise ValueError(f"teacher cache {self.dir}: cut {cut_id!r} has no {key!r}")
                out = outs[k]
                if out is None:
                    out = outs[k] = torch.zeros(len(cut_ids), frames, x.shape[1], dtype=dtype)
                elif x.shape[1] != out.shape[2]:
                    raise ValueError(f"teacher cache {self.dir}: cut {cut_id!r}: {key!r} is {x.shape[1]} wide, "
                                     f"{cut_ids[0]!r}'s is {out.shape[2]}")
                if x.shape[0] != lens_list[b]:
                    raise ValueError(
                        f"cut {cut_id!r}: the teacher cache {self.dir} has {x.shape[0]} encoder frames but the "
                        f"batch gives {lens_list[b]}; the cut's features changed since the cache was made "
                        "(speed perturbation, another feature source?)"
                    )
                out[b, : lens_list[b]] = x.to(dtype)
        moved = [o.to(device, non_blocking=True) for o in outs if o is not None]
        return moved[0], moved[1:]
