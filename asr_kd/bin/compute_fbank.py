"""Compute and store the training features (lhotse ``Fbank``, see asr_kd.data.features).

    python -m asr_kd.bin.compute_fbank --cuts data/manifests/cuts_train_raw.jsonl.gz \\
        --out-cuts data/fbank/cuts_train.jsonl.gz --storage data/fbank/feats --num-jobs 2

* Features go to ``STORAGE/<out-cuts stem>-<k>.lca`` (LilcomChunkyWriter: lossy,
  about 1e-2 absolute error in the log-mel domain; ``--storage-type numpy_files``
  stores exact float32 arrays instead).
* ``--speed-factors 0.9,1.1`` adds speed-perturbed copies of every cut before
  computing (the way to train with speed perturbation from stored features).
* Recordings not at 16 kHz are resampled when loaded.
* Idempotent: if OUT_CUTS exists nothing is done (``--force`` recomputes). The
  manifest is written last, to a temporary file renamed into place, so its
  existence means the features are complete.
* ``--num-jobs N`` splits the cuts into chunks processed by N processes (one
  storage file per chunk, one torch thread per process).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import List, Optional, Sequence

from tqdm import tqdm

from asr_kd.bin._entry import run_tool

log = logging.getLogger("compute_fbank")

_STORAGE_TYPES = ("lilcom_chunky", "numpy_files")


def _manifest_stem(path: Path) -> str:
    name = path.name
    for suffix in (".jsonl.gz", ".jsonl", ".json.gz", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _writer_type(name: str):
    from lhotse import LilcomChunkyWriter, NumpyFilesWriter

    if name == "lilcom_chunky":
        try:
            import lilcom  # noqa: F401
        except ImportError as e:
            raise SystemExit(
                "LilcomChunkyWriter needs the 'lilcom' package (pip install lilcom), "
                "or use --storage-type numpy_files"
            ) from e
        return LilcomChunkyWriter
    return NumpyFilesWriter


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def compute_chunk(cuts: Sequence, storage_path: str, storage_type: str, progress: bool = False) -> List:
    """Compute features of ``cuts`` into one storage; return the cuts with features.

    Any failure is a ``RuntimeError`` naming the cut id and its files.
    """
    from asr_kd.data.dataset import cut_sources
    from asr_kd.data.features import FBANK_OPTS, lhotse_fbank_extractor

    extractor = lhotse_fbank_extractor()
    out = []
    with _writer_type(storage_type)(storage_path) as writer:
        for cut in tqdm(cuts, desc="fbank", disable=not progress, unit="cut"):
            c = cut if cut.sampling_rate == FBANK_OPTS.sampling_rate else cut.resample(FBANK_OPTS.sampling_rate)
            try:
                out.append(c.compute_and_store_features(extractor, writer))
            except Exception as e:  # noqa: BLE001 - re-raised with the cut named
                raise RuntimeError(
                    f"cannot compute features for cut {cut.id!r} ({cut_sources(cut)}): "
                    f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                ) from e
    return out


def compute_fbank(cuts_path: Path, out_cuts: Path, storage: Path, num_jobs: int = 1,
                  speed_perturb: Sequence[float] = (), storage_type: str = "lilcom_chunky",
                  force: bool = False) -> Path:
    """Library form of the CLI; returns ``out_cuts``."""
    from lhotse import CutSet

    if out_cuts.exists() and not force:
        log.info("%s exists; skipping (use --force to recompute)", out_cuts)
        return out_cuts
    if storage_type not in _STORAGE_TYPES:
        raise ValueError(f"--storage-type must be one of {_STORAGE_TYPES}, got {storage_type!r}")
    _writer_type(storage_type)  # fail early if lilcom is missing
    if not Path(cuts_path).is_file():
        raise FileNotFoundError(f"--cuts {cuts_path}: file not found")
    cuts = CutSet.from_file(cuts_path).to_eager()
    for f in speed_perturb:
        if f <= 0:
            raise ValueError(f"speed factors must be positive, got {f}")
    factors = [f for f in speed_perturb if f != 1.0]
    if factors:
        base = cuts
        for f in factors:
            cuts = cuts + base.perturb_speed(f)
        cuts = cuts.to_eager()
    cut_list = list(cuts)
    if not cut_list:
        raise ValueError(f"{cuts_path} has no cuts")
    ids = [c.id for c in cut_list]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{cuts_path}: duplicate cut ids")

    storage.mkdir(parents=True, exist_ok=True)
    out_cuts.parent.mkdir(parents=True, exist_ok=True)
    stem = _manifest_stem(out_cuts)
    num_jobs = max(1, int(num_jobs))
    if num_jobs == 1:
        results = compute_chunk(cut_list, str(storage / f"{stem}-000"), storage_type, progress=True)
    else:
        num_chunks = min(len(cut_list), num_jobs * 4)
        chunks = [cut_list[k::num_chunks] for k in range(num_chunks)]
        results = []
        with ProcessPoolExecutor(num_jobs, initializer=_init_worker) as ex, \
                tqdm(total=len(cut_list), desc="fbank", unit="cut") as bar:
            futures = {
                ex.submit(compute_chunk, chunk, str(storage / f"{stem}-{k:03d}"), storage_type): k
                for k, chunk in enumerate(chunks)
            }
            for fut in as_completed(futures):
                part = fut.result()
                results.extend(part)
                bar.update(len(part))
        order = {cid: i for i, cid in enumerate(ids)}
        results.sort(key=lambda c: order[c.id])

    tmp = out_cuts.with_name(f".{stem}.tmp{os.getpid()}" + out_cuts.name[len(stem):])
    CutSet.from_cuts(results).to_file(tmp)
    os.replace(tmp, out_cuts)
    log.info("wrote %s (%d cuts, features in %s)", out_cuts, len(results), storage)
    return out_cuts


def get_parser() -> argparse.ArgumentParser:
    from asr_kd.options import add_refused_option

    p = argparse.ArgumentParser(prog="python -m asr_kd.bin.compute_fbank", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cuts", type=Path, required=True, help="input CutSet with recordings (required)")
    p.add_argument("--out-cuts", type=Path, required=True, help="output CutSet with features; if it exists nothing is done unless --force (required)")
    p.add_argument("--storage", type=Path, required=True, help="directory for feature files (required)")
    p.add_argument("--num-jobs", type=int, default=1,
                   help="worker processes, one torch thread each; values < 1 count as 1 (default: %(default)s)")
    p.add_argument("--speed-factors", type=str, default="",
                   help="comma-separated extra speed factors, e.g. 0.9,1.1: a perturbed copy of every cut per "
                        "factor (default: none)")
    # training's --speed-perturb is true/false (copies on the fly): the same name must not mean a list here
    add_refused_option(p, "--speed-perturb", "precomputed copies are --speed-factors 0.9,1.1 here "
                                             "(asr_kd.bin.train's --speed-perturb true/false makes them on the fly)")
    p.add_argument("--storage-type", choices=_STORAGE_TYPES, default="lilcom_chunky",
                   help="feature storage: lilcom_chunky (lossy, compact; needs the lilcom package) or "
                        "numpy_files (exact float32) (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="recompute even if --out-cuts exists (flag; default: off)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The tool; a user error is one line on stderr (``compute_fbank: error: ...``) and exit status 2."""
    return run_tool("compute_fbank", _compute_fbank, argv)


def _compute_fbank(argv: Optional[Sequence[str]]) -> None:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    factors = [float(x) for x in args.speed_factors.split(",") if x.strip()]
    compute_fbank(args.cuts, args.out_cuts, args.storage, num_jobs=args.num_jobs,
                  speed_perturb=factors, storage_type=args.storage_type, force=args.force)


if __name__ == "__main__":
    sys.exit(main())
