"""Data: tokenizer, acoustic front end, augmentation and lhotse data loaders.

Submodules are imported lazily so that ``import asr_kd.data.features`` does
not pull in lhotse's dataset machinery.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Tokenizer": "tokenizer",
    "train_bpe": "tokenizer",
    "FBANK_OPTS": "features",
    "FbankOptions": "features",
    "FEATURE_PAD_VALUE": "features",
    "OnlineFbank": "features",
    "compute_online_fbank": "features",
    "compute_fbank": "features",
    "feature_config_dict": "features",
    "check_feature_config": "features",
    "lhotse_fbank_extractor": "features",
    "SpecAugment": "augment",
    "SpecAugmentConfig": "augment",
    "NoiseMixer": "augment",
    "AsrDataset": "dataset",
    "DataConfig": "datamodule",
    "AsrDataModule": "datamodule",
    "filter_short_cuts": "datamodule",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
