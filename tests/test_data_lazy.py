"""Manifests at 960 h scale: the training data path keeps a lazily opened
manifest lazy (short-cut filtering, feature statistics, the bucketing sampler)
and gives the same results as on the same manifest held in memory."""
from __future__ import annotations

import pytest
import torch
from lhotse import CutSet, load_manifest_lazy

from asr_kd.data.datamodule import AsrDataModule, DataConfig, filter_short_cuts
from asr_kd.data.stats import estimate_feature_stats
from asr_kd.data.tokenizer import Tokenizer
from asr_kd.train.run import _load_cuts


def test_lazy_manifest_stays_lazy_and_matches_eager(small_corpus):
    path, bpe = small_corpus
    tok = Tokenizer(bpe)
    lazy = _load_cuts(str(path), "--cuts-train")
    assert lazy.is_lazy  # lhotse opens a .jsonl(.gz) manifest lazily
    eager = CutSet.from_file(path).to_eager()
    assert not eager.is_lazy

    victim = next(iter(eager))  # a cut too short for its transcript: dropped by both
    enc = (lambda t: 1 if t == victim.num_frames else 10**6)
    kept_lazy = filter_short_cuts(lazy, tok, encoder_frames=enc)
    kept_eager = filter_short_cuts(eager, tok, encoder_frames=enc)
    assert kept_lazy.is_lazy
    ids = [c.id for c in kept_lazy]
    assert ids == [c.id for c in kept_eager] and victim.id not in ids and len(ids) == len(eager) - 1

    for a, b in zip(estimate_feature_stats(load_manifest_lazy(path), max_cuts=4),
                    estimate_feature_stats(eager, max_cuts=4)):
        assert torch.equal(a, b)  # same every-k-th sample, lazily or not

    dm = AsrDataModule(DataConfig(max_duration=3.0, num_buckets=30, num_workers=0, seed=1))
    seen = [cid for batch in dm.train_dataloader(kept_lazy) for cid in batch["cut_ids"]]
    assert sorted(seen) == sorted(ids)  # 30 buckets shrink to the 9 cuts without loading the set


def test_duration_range_filter_counts_and_stays_lazy(small_corpus, caplog):
    import logging

    path, bpe = small_corpus
    tok = Tokenizer(bpe)
    eager = CutSet.from_file(path).to_eager()
    durations = sorted(c.duration for c in eager)
    lo, hi = durations[0] + 1e-6, durations[-1] - 1e-6  # drops the shortest and the longest cut(s)
    expected = [c.id for c in eager if lo <= c.duration <= hi]
    assert 0 < len(expected) <= len(eager) - 2
    stats: dict = {}
    with caplog.at_level(logging.INFO, logger="asr_kd.data.datamodule"):
        kept = filter_short_cuts(_load_cuts(str(path), "--cuts-train"), tok, encoder_frames=lambda t: 10**6,
                                 min_seconds=lo, max_seconds=hi, stats=stats)
    assert kept.is_lazy
    ids = [c.id for c in kept]
    assert ids == expected
    assert stats["kept_cuts"] == len(ids)
    assert stats["kept_seconds"] == pytest.approx(sum(c.duration for c in kept))
    dropped = len(eager) - len(expected)
    assert any(f"dropped {dropped} of {len(eager)} cuts outside" in r.getMessage() for r in caplog.records)
