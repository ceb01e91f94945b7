"""Data loaders for training and validation (lhotse samplers + :class:`AsrDataset`).

Determinism and exact resume
----------------------------
* Batches: lhotse ``DynamicBucketingSampler`` seeded with ``DataConfig.seed``
  (the sampler adds the epoch), so the same seed, cuts and epoch give the same
  batches in the same order on every run.
* Augmentation: seeded per batch from (seed, epoch, cut ids), see
  :func:`asr_kd.data.augment.batch_seed`; independent of workers.
* Worker processes: ``worker_init_fn`` seeds ``random``, ``numpy`` and
  ``torch`` in each worker from (seed, rank, worker id) for anything else
  that draws random numbers there.
* Resume: ``AsrDataModule.sampler.state_dict()`` records the epoch and the
  number of batches the *training loop has received* in it (counted by the
  data loader in the main process, so batches that workers prefetched but the
  loop never saw are not lost). ``train_dataloader(cuts, sampler_state=sd)``
  replays the sampler to that point; the remaining batches of the epoch, and
  their augmentation, are exactly those of the uninterrupted run. The cuts,
  DataConfig and world size must be the same as before.

Speed perturbation
------------------
``speed_perturb`` adds copies of every training cut at the factors in
``speed_factors`` (lhotse ``perturb_speed``, resampling when audio is
loaded), so an epoch is ``1 + len(speed_factors)`` times longer. A perturbed
cut has a different duration and frame count, so its features cannot come
from the stored features of the original: it requires
``on_the_fly_feats=True`` (otherwise ``ValueError``). To train from storage
instead, perturb the manifest before storing features
(``python -m asr_kd.bin.compute_fbank --speed-perturb 0.9,1.1``). The teacher
sees the same perturbed audio (``clean_features`` only removes noise and masks).
"""
from __future__ import annotations

import itertools
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple, Union

import numpy as np
import torch

from .augment import NoiseMixer, SpecAugment, SpecAugmentConfig
from .dataset import AsrDataset, check_transcript
from .features import FBANK_OPTS

__all__ = [
    "DataConfig",
    "AsrDataModule",
    "ResumableSampler",
    "filter_short_cuts",
    "default_encoder_frames",
    "WorkerSeeder",
]

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    """Data-loading options (all have defaults; the training CLI overrides them).

    Attributes:
      max_duration: seconds of audio per batch (sum over cuts).
      num_buckets: duration buckets of the DynamicBucketingSampler.
      shuffle: shuffle training batches (validation never shuffles).
      spec_augment: apply SpecAugment (``spec_augment_config``) to training batches.
      noise_cuts: CutSet manifest of noise to mix in (None: no noise).
      speed_perturb: add speed-perturbed copies (needs on_the_fly_feats).
      num_workers: DataLoader worker processes (0: load in the main process).
      seed: base seed of the sampler, augmentation and workers.
      return_clean: also return ``clean_features`` (the teacher's input).
      on_the_fly_feats: compute fbank from audio instead of reading storage.
    """

    max_duration: float = 200.0
    num_buckets: int = 30
    shuffle: bool = True
    spec_augment: bool = True
    noise_cuts: Optional[Union[str, Path]] = None
    speed_perturb: bool = False
    num_workers: int = 2
    seed: int = 42
    return_clean: bool = False
    on_the_fly_feats: bool = False
    speed_factors: Tuple[float, ...] = (0.9, 1.1)
    noise_snr: Tuple[float, float] = (10.0, 20.0)
    noise_prob: float = 0.5
    spec_augment_config: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    drop_last: bool = False
    buffer_size: int = 20000
    valid_max_duration: Optional[float] = None


def _dist_rank_world() -> Tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class WorkerSeeder:
    """``worker_init_fn``: seeds random/numpy/torch from (seed, rank, worker id)."""

    def __init__(self, seed: int, rank: int) -> None:
        self.seed = int(seed)
        self.rank = int(rank)

    def worker_seed(self, worker_id: int) -> int:
        ss = np.random.SeedSequence([self.seed, self.rank, int(worker_id)])
        return int(ss.generate_state(1, dtype=np.uint32)[0])

    def __call__(self, worker_id: int) -> None:
        s = self.worker_seed(worker_id)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)
        torch.set_num_threads(1)


class ResumableSampler:
    """Wraps a lhotse sampler; counts the batches the training loop consumed.

    ``state_dict()`` → ``{"epoch", "batches_consumed", "seed", "world_size"}``
    (small, picklable; the sampler is rebuilt from the same cuts and replayed). After
    ``load_state_dict``, the next iteration starts at batch
    ``batches_consumed`` of the stored epoch. Iterating again (next epoch,
    after ``set_epoch``) starts from the beginning as usual.
    """

    def __init__(self, sampler) -> None:
        self.sampler = sampler
        self.batches_consumed = 0
        self._skip = 0

    @property
    def epoch(self) -> int:
        return int(self.sampler.epoch)

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != self.epoch:
            self._skip = 0
        self.sampler.set_epoch(int(epoch))

    def begin_pass(self) -> None:
        """Called by the data loader in the main process when a pass starts."""
        self.batches_consumed = self._skip

    def mark_consumed(self) -> None:
        self.batches_consumed += 1

    def __iter__(self) -> Iterator[Any]:
        skip, self._skip = self._skip, 0
        # lhotse samplers are their own iterators and reset in __iter__, so the
        # same iterator object is advanced with next() (never re-iterated).
        it = iter(self.sampler)
        for _ in range(skip):
            try:
                next(it)
            except StopIteration:
                return
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            yield batch

    def __len__(self) -> int:
        return len(self.sampler)

    def state_dict(self) -> Dict[str, Any]:
        return {
            "epoch": self.epoch,
            "batches_consumed": int(self.batches_consumed),
            "seed": self.sampler.seed,
            "world_size": self.sampler.world_size,
        }

    def load_state_dict(self, sd: Dict[str, Any]) -> None:
        if sd.get("seed") != self.sampler.seed:
            raise ValueError(f"sampler seed {self.sampler.seed} != stored {sd.get('seed')}")
        if sd.get("world_size") != self.sampler.world_size:
            raise ValueError(
                f"cannot resume a sampler saved with world_size={sd.get('world_size')} "
                f"with world_size={self.sampler.world_size}"
            )
        self.sampler.set_epoch(int(sd["epoch"]))
        self._skip = int(sd["batches_consumed"])
        self.batches_consumed = self._skip


class _TrackingDataLoader(torch.utils.data.DataLoader):
    """DataLoader that tells the dataset the epoch and counts consumed batches."""

    def __init__(self, dataset: AsrDataset, sampler: ResumableSampler, **kwargs: Any) -> None:
        super().__init__(dataset, sampler=sampler, batch_size=None, **kwargs)
        self._resumable = sampler

    def __iter__(self):  # type: ignore[override]
        self.dataset.epoch = self._resumable.epoch  # before workers copy the dataset
        self._resumable.begin_pass()
        for batch in super().__iter__():
            self._resumable.mark_consumed()
            yield batch


def _identity(batch: Any) -> Any:
    return batch


def default_encoder_frames(num_frames: int, subsampling_factor: int = 4) -> int:
    """Conservative encoder frame count after subsampling: ``(T - 2k + 1) // k``.

    For k = 4 this is ``(T - 7) // 4``, never more than a two-stage 3x3
    stride-2 convolution without padding produces (``((T-7)//2 + 1)//2``).
    Pass the encoder's exact function to :func:`filter_short_cuts` when known.
    """
    k = int(subsampling_factor)
    return max(0, (int(num_frames) - 2 * k + 1) // k)


def _num_feature_frames(cut) -> int:
    if cut.has_features and cut.features is not None:
        return int(cut.num_frames)
    return FBANK_OPTS.num_frames(int(round(cut.duration * FBANK_OPTS.sampling_rate)))


def filter_short_cuts(cuts, tokenizer, subsampling_factor: int = 4,
                      encoder_frames: Optional[Callable[[int], int]] = None,
                      max_speed: float = 1.0, manifest: str = "training manifest",
                      min_seconds: float = 0.0, max_seconds: float = math.inf,
                      stats: Optional[dict] = None):
    """Drop cuts whose encoder frame count is smaller than their token count, or outside a duration range.

    A regular transducer can emit several symbols per frame, but the pruned
    loss (and icefall practice) needs ``T' >= U``; such utterances are almost
    always mislabelled. Empty transcripts raise ``ValueError`` naming the cut
    and recording (see :func:`asr_kd.data.dataset.check_transcript`).

    Transcripts are normalised first (:func:`asr_kd.data.text.normalize_text`).
    Targets that still hold ``<unk>`` are counted and reported with a few
    examples (WARNING); a transcript that is nothing but ``<unk>`` raises
    ``ValueError`` naming the cut and ``manifest``.

    Args:
      cuts: a CutSet. A lazy one (``load_manifest_lazy``) stays lazy: one
        streaming pass counts what is dropped, and the returned set filters
        as it is read, so a 960 h manifest is never held in memory.
      tokenizer: :class:`asr_kd.data.tokenizer.Tokenizer`.
      encoder_frames: feature frames -> encoder frames; default
        :func:`default_encoder_frames` with ``subsampling_factor``.
      max_speed: the fastest speed-perturbation factor that will be applied
        afterwards (``max(DataConfig.speed_factors)`` when ``speed_perturb``):
        a cut is kept only if its fastest copy, ``1/max_speed`` as long, is
        still long enough.
      manifest: how errors name the manifest (e.g. "--cuts-valid data/dev.jsonl.gz").
      min_seconds / max_seconds: keep only cuts with ``min_seconds <= duration <= max_seconds``
        (the original duration, before speed perturbation; icefall keeps 1-20 s of
        LibriSpeech); the number dropped is logged with examples.
      stats: if given, filled with ``kept_cuts`` and ``kept_seconds`` (audio of the kept cuts).
    Returns:
      the kept cuts as a CutSet; the number dropped and the first few ids are logged (WARNING if > 0).
    """
    from lhotse import CutSet

    if max_speed <= 0:
        raise ValueError(f"max_speed must be positive, got {max_speed}")
    enc = encoder_frames or (lambda t: default_encoder_frames(t, subsampling_factor))
    unk = tokenizer.unk_id

    def tokens_of(cut) -> tuple[list[int], str]:
        text = check_transcript(cut, manifest)
        return tokenizer.encode([text])[0], text

    def fits(cut, num_tokens: int) -> bool:
        frames = _num_feature_frames(cut)
        if max_speed > 1.0:
            frames = FBANK_OPTS.num_frames(int(cut.duration / max_speed * FBANK_OPTS.sampling_rate))
        t_enc = int(enc(frames))
        if t_enc < num_tokens:
            log.debug("dropping %s: %d encoder frames < %d tokens", cut.id, t_enc, num_tokens)
            return False
        return True

    def in_range(cut) -> bool:
        return min_seconds <= cut.duration <= max_seconds

    def long_enough(cut) -> bool:
        return in_range(cut) and fits(cut, len(tokens_of(cut)[0]))

    # one streaming pass: checks every transcript, counts what is dropped; a lazy
    # set stays lazy (the same test is applied again when it is read)
    kept, dropped, out_of_range, with_unk, total = [], [], [], [], 0
    kept_cuts, kept_seconds = 0, 0.0
    lazy = bool(getattr(cuts, "is_lazy", False))
    for cut in cuts:
        total += 1
        ids, text = tokens_of(cut)
        if unk in ids:
            if all(i == unk or tokenizer.id_to_piece(i) == "\u2581" for i in ids):
                raise ValueError(f"cut {cut.id!r} in the {manifest}: the transcript {text[:60]!r} is all <unk> "
                                 f"for the BPE model {getattr(tokenizer, 'model_path', '')}; fix or remove it")
            with_unk.append(f"{cut.id}: {text[:40]!r}")
        if not in_range(cut):
            out_of_range.append(f"{cut.id} ({cut.duration:.2f} s)")
        elif not fits(cut, len(ids)):
            dropped.append(cut.id)
        else:
            kept_cuts += 1
            kept_seconds += cut.duration
            if not lazy:
                kept.append(cut)
    (log.warning if dropped else log.info)(
        "filter_short_cuts: dropped %d of %d cuts (fewer encoder frames than tokens)%s", len(dropped), total,
        f", e.g. {', '.join(dropped[:5])}" if dropped else "",
    )
    if out_of_range:
        log.info("filter_short_cuts: dropped %d of %d cuts outside %g-%g s, e.g. %s", len(out_of_range), total,
                 min_seconds, max_seconds, ", ".join(out_of_range[:5]))
    if stats is not None:
        stats.update(kept_cuts=kept_cuts, kept_seconds=kept_seconds)
    if with_unk:
        log.warning("%s: %d of %d transcripts contain <unk> (characters the BPE model does not know), e.g. %s",
                    manifest, len(with_unk), total, "; ".join(with_unk[:3]))
    if lazy:
        return cuts.filter(long_enough)
    return CutSet.from_cuts(kept)


class AsrDataModule:
    """Training and validation data loaders built from :class:`DataConfig`.

    ``sampler`` is set by :meth:`train_dataloader`; a training loop calls
    ``sampler.set_epoch(epoch)`` before each pass over the returned loader and
    stores ``sampler.state_dict()`` in its checkpoints.
    """

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg
        self.sampler: Optional[ResumableSampler] = None
        self._noise: Optional[NoiseMixer] = None
        if cfg.noise_cuts is not None:
            self._noise = NoiseMixer(cfg.noise_cuts, snr_range=tuple(cfg.noise_snr), prob=cfg.noise_prob)
            self._noise.check_compatible(needs_features=not cfg.on_the_fly_feats)
        if cfg.speed_perturb and not cfg.on_the_fly_feats:
            raise ValueError(
                "speed_perturb changes durations, so stored features do not apply: set "
                "on_the_fly_feats=True, or store features of a speed-perturbed manifest "
                "(asr_kd.bin.compute_fbank --speed-perturb)"
            )

    def _loader_kwargs(self, rank: int) -> Dict[str, Any]:
        nw = int(self.cfg.num_workers)
        kw: Dict[str, Any] = {"num_workers": nw, "collate_fn": _identity}
        if nw > 0:
            kw["worker_init_fn"] = WorkerSeeder(self.cfg.seed, rank)
            kw["persistent_workers"] = False  # workers must see each pass's epoch
        return kw

    def _speed_perturbed(self, cuts):
        if not self.cfg.speed_perturb:
            return cuts
        out = cuts
        for f in self.cfg.speed_factors:
            if f != 1.0:
                out = out + cuts.perturb_speed(float(f))
        return out

    def train_dataloader(self, cuts, sampler_state: Optional[Dict[str, Any]] = None):
        """Training loader over ``cuts`` (already filtered with :func:`filter_short_cuts`).

        ``sampler_state``: a ``self.sampler.state_dict()`` from an interrupted
        run with the same cuts and config; the loader continues after the last
        batch that run consumed.
        """
        from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler

        rank, world = _dist_rank_world()
        cuts = self._speed_perturbed(cuts)
        num_buckets = int(self.cfg.num_buckets)
        # tiny sets: lhotse needs 2 <= buckets <= cuts; a lazy set is read only as far
        # as num_buckets cuts to check (a 960 h manifest is never loaded whole)
        num_buckets = min(num_buckets, sum(1 for _ in itertools.islice(iter(cuts), num_buckets)))
        common = dict(max_duration=self.cfg.max_duration, shuffle=self.cfg.shuffle,
                      drop_last=self.cfg.drop_last, seed=self.cfg.seed, rank=rank, world_size=world)
        if num_buckets >= 2:
            lhotse_sampler = DynamicBucketingSampler(
                cuts, num_buckets=num_buckets, buffer_size=self.cfg.buffer_size, **common
            )
        else:
            lhotse_sampler = SimpleCutSampler(cuts, **common)
        self.sampler = ResumableSampler(lhotse_sampler)
        if sampler_state is not None:
            self.sampler.load_state_dict(dict(sampler_state))
        dataset = AsrDataset(
            on_the_fly_feats=self.cfg.on_the_fly_feats,
            spec_augment=SpecAugment(self.cfg.spec_augment_config) if self.cfg.spec_augment else None,
            noise=self._noise,
            return_clean=self.cfg.return_clean,
            seed=self.cfg.seed,
        )
        if self.cfg.spec_augment and self.cfg.spec_augment_config.time_warp > 0:
            log.warning(
                "SpecAugment time warping is on: student frames no longer align with "
                "clean_features (teacher) frames; frame-level distillation will be misaligned"
            )
        return _TrackingDataLoader(dataset, self.sampler, **self._loader_kwargs(rank))

    def valid_dataloader(self, cuts):
        """Validation loader: no shuffling, no augmentation, every cut once."""
        from lhotse.dataset import SimpleCutSampler

        rank, world = _dist_rank_world()
        sampler = SimpleCutSampler(
            cuts,
            max_duration=self.cfg.valid_max_duration or self.cfg.max_duration,
            shuffle=False,
            rank=rank,
            world_size=world,
        )
        dataset = AsrDataset(
            on_the_fly_feats=self.cfg.on_the_fly_feats,
            return_clean=self.cfg.return_clean,
            seed=self.cfg.seed,
            check_text=False,  # an empty reference is a valid test case
        )
        return torch.utils.data.DataLoader(
            dataset, sampler=sampler, batch_size=None, **self._loader_kwargs(rank)
        )
