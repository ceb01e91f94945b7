"""End-to-end CLI training on a tiny synthetic corpus: exact resume, checkpoint format, averaging.

Exact-resume conditions: CPU, one thread, ``--num-workers 0``, same flags and
cuts.  The student is causal with dynamic chunk training, dropout and
SpecAugment on, so the model RNG, the sampler position and the augmentation
seeding all have to be restored for the parameters to match bit for bit.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from asr_kd.bin.train import train as train_main
from asr_kd.models.checkpoint import load_checkpoint, load_model


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from lhotse import NumpyFilesWriter

    from asr_kd.data.features import lhotse_fbank_extractor
    from toy_corpus import make_synthetic_cuts, write_transcripts
    from asr_kd.data.tokenizer import train_bpe

    d = tmp_path_factory.mktemp("train_corpus")
    cuts = make_synthetic_cuts(d / "wav", num_cuts=16, max_words=4, seed=3)
    bpe = train_bpe(write_transcripts(cuts, d / "tr.txt"), d / "lang", vocab_size=20)
    feats = cuts.compute_and_store_features(
        lhotse_fbank_extractor(), d / "feats", storage_type=NumpyFilesWriter, progress_bar=False
    ).to_eager()
    feats.subset(first=12).to_file(d / "train.jsonl.gz")
    feats.subset(last=4).to_file(d / "valid.jsonl.gz")
    return {"train": d / "train.jsonl.gz", "valid": d / "valid.jsonl.gz", "bpe": bpe}


def _argv(corpus, exp: Path, *extra: str, epochs: int = 2) -> list[str]:
    return [
        "--exp-dir", str(exp), "--cuts-train", str(corpus["train"]), "--cuts-valid", str(corpus["valid"]),
        "--bpe-model", str(corpus["bpe"]), "--model-size", "tiny", "--causal", "true",
        "--chunk-ms", "160,320", "--left-context-ms", "320,-1", "--num-epochs", str(epochs),
        "--max-duration", "4", "--num-buckets", "2", "--num-workers", "0", "--save-every-n", "3",
        "--lr", "5e-3", "--warmup-batches", "2", "--warm-step", "4", "--log-interval", "2",
        "--progress", "false", "--seed", "11", *extra,
    ]


def _assert_same_state(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca["batch_idx_train"] == cb["batch_idx_train"]
    for k, v in ca["model"].items():
        assert torch.equal(v, cb["model"][k]), f"{k} differs between {a} and {b}"
    sa, sb = ca["optimizer"]["state"], cb["optimizer"]["state"]
    for i in sa:
        for k in sa[i]:
            assert torch.equal(sa[i][k], sb[i][k])
    assert ca["valid_loss"] == cb["valid_loss"]
    assert ca["sampler"] == cb["sampler"]
    assert ca["scheduler"] == cb["scheduler"]
    # the epoch's train loss covers the whole epoch, also after a resume inside it
    assert ca.get("train_metrics") == cb.get("train_metrics")
    from asr_kd.metrics.train_stats import read_train_stats

    sa, sb = read_train_stats(a.parent), read_train_stats(b.parent)
    e = str(ca["epoch"])
    if ca.get("epoch_done") and sa and sb and e in sa["epochs"] and e in sb["epochs"]:
        assert sa["epochs"][e] == sb["epochs"][e]  # train_stats.json: the same epoch means after a resume


@pytest.fixture(scope="module")
def reference_run(corpus, tmp_path_factory):
    exp = tmp_path_factory.mktemp("exp_ref")
    train_main(_argv(corpus, exp, "--avg", "2"))
    return exp


def test_checkpoint_contents_and_outputs(reference_run) -> None:
    exp = reference_run
    names = {p.name for p in exp.glob("*.pt")}
    # with this seed: 5 batches in epoch 1, 4 in epoch 2; a checkpoint every 3 batches
    assert names == {"checkpoint-3.pt", "checkpoint-6.pt", "checkpoint-9.pt", "epoch-1.pt", "epoch-2.pt",
                     "pretrained.pt"}
    ck = load_checkpoint(exp / "checkpoint-3.pt")
    for key in ("model", "model_config", "feature_config", "bpe_model", "bpe_sha256", "optimizer",
                "scheduler", "sampler", "rng", "epoch", "batch_idx", "batch_idx_train", "args"):
        assert key in ck, key
    assert (ck["epoch"], ck["batch_idx"], ck["epoch_done"]) == (1, 3, False)
    assert ck["model_config"]["encoder"]["dynamic_chunk"] is True
    assert ck["feature_config"]["num_mel_bins"] == 80
    ep = load_checkpoint(exp / "epoch-2.pt")
    assert ep["epoch_done"] and ep["valid_loss"] is not None and ep["batch_idx_train"] == 9
    # pretrained.pt = mean of epochs 1 and 2
    pre = load_checkpoint(exp / "pretrained.pt")
    assert pre["averaged_from"] == ["epoch-1.pt", "epoch-2.pt"]
    e1 = load_checkpoint(exp / "epoch-1.pt")["model"]
    for k, v in pre["model"].items():
        if torch.is_floating_point(v):
            assert torch.equal(v, ((e1[k].double() + ep["model"][k].double()) / 2).to(v.dtype))
    model = load_model(exp / "pretrained.pt")
    assert not model.training and model.config.encoder.causal
    assert list((exp / "tensorboard").glob("events.out.tfevents.*"))
    from asr_kd.metrics.train_stats import read_train_stats

    stats = read_train_stats(exp)  # per-epoch means next to the checkpoints (asr_kd.metrics.train_stats)
    assert list(stats["epochs"]) == ["1", "2"] and stats["run_id"] == ep["run_id"]
    assert stats["epochs"]["2"]["train"] == pytest.approx(ep["train_metrics"])
    assert stats["epochs"]["2"]["valid"]["loss"] == pytest.approx(ep["valid_loss"])
    assert stats["epochs"]["2"]["batch_idx_train"] == 9 and stats["args"].get("kd_stage") is None
    log_text = (exp / "log" / "train-rank0.log").read_text()
    assert "filter_short_cuts: dropped 0 of 12 cuts" in log_text


def test_resume_mid_epoch_is_exact(corpus, reference_run, tmp_path) -> None:
    exp = tmp_path / "exp"
    exp.mkdir()
    # "interrupted" right after checkpoint-3 (batch 3 of 5 in epoch 1)
    shutil.copy(reference_run / "checkpoint-3.pt", exp / "checkpoint-3.pt")
    train_main(_argv(corpus, exp, "--resume", "--avg", "0"))
    for name in ("epoch-1.pt", "checkpoint-6.pt", "epoch-2.pt"):
        _assert_same_state(reference_run / name, exp / name)
    assert not (exp / "pretrained.pt").exists()


def test_resume_after_last_batch_of_epoch(corpus, reference_run, tmp_path) -> None:
    """checkpoint-9 follows the last batch of epoch 2: resume only validates and saves epoch-2."""
    exp = tmp_path / "exp"
    exp.mkdir()
    shutil.copy(reference_run / "checkpoint-9.pt", exp / "checkpoint-9.pt")
    assert load_checkpoint(exp / "checkpoint-9.pt")["batch_idx"] == 4
    train_main(_argv(corpus, exp, "--resume", "--avg", "0"))
    _assert_same_state(reference_run / "epoch-2.pt", exp / "epoch-2.pt")


def test_resume_at_epoch_boundary_is_exact(corpus, reference_run, tmp_path) -> None:
    exp = tmp_path / "exp"
    train_main(_argv(corpus, exp, "--avg", "0", epochs=1))  # a run that stops after epoch 1
    _assert_same_state(reference_run / "epoch-1.pt", exp / "epoch-1.pt")
    train_main(_argv(corpus, exp, "--resume", str(exp / "epoch-1.pt"), "--avg", "0"))
    _assert_same_state(reference_run / "epoch-2.pt", exp / "epoch-2.pt")


def test_resume_with_other_model_flags_fails(corpus, reference_run, tmp_path) -> None:
    exp = tmp_path / "exp"
    exp.mkdir()
    shutil.copy(reference_run / "epoch-1.pt", exp / "epoch-1.pt")
    argv = _argv(corpus, exp, "--resume")
    argv[argv.index("160,320")] = "320"
    with pytest.raises(ValueError, match="model_config"):
        train_main(argv)


def test_teacher_trains_and_loss_falls(corpus, tmp_path) -> None:
    """Full-context teacher for a few epochs on 12 cuts: the validation loss goes down."""
    exp = tmp_path / "teacher"
    argv = _argv(corpus, exp, "--causal", "false", "--dropout", "0", "--spec-augment", "false",
                 "--save-every-n", "0", epochs=4)
    for flag in ("--chunk-ms", "--left-context-ms"):
        i = argv.index(flag)
        del argv[i:i + 2]
    train_main(argv)
    v1 = load_checkpoint(exp / "epoch-1.pt")["valid_loss"]
    v4 = load_checkpoint(exp / "epoch-4.pt")["valid_loss"]
    assert v4 < v1
    assert not load_checkpoint(exp / "epoch-4.pt")["model_config"]["encoder"]["causal"]


def test_init_from_copies_weights_only(corpus, reference_run, tmp_path) -> None:
    exp = tmp_path / "exp"
    train_main(_argv(corpus, exp, "--init-from", str(reference_run / "epoch-2.pt"), "--lr", "1e-12",
                     "--avg", "0", "--save-every-n", "0", epochs=1))
    ck = load_checkpoint(exp / "epoch-1.pt")
    ref = load_checkpoint(reference_run / "epoch-2.pt")["model"]
    assert ck["batch_idx_train"] == 5  # a fresh run: epoch 1 again, new optimiser
    for k, v in ck["model"].items():
        torch.testing.assert_close(v, ref[k], rtol=0, atol=1e-6)


# ---------------------------------------------------------------- faults: exp dir, corrupt files, settings


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fresh_run_in_used_exp_dir_is_refused(corpus, reference_run, tmp_path, capsys) -> None:
    from asr_kd.bin.train import main as cli
    from asr_kd.train.expdir import ExpDirInUseError

    exp = tmp_path / "exp"
    exp.mkdir()
    shutil.copy(reference_run / "epoch-1.pt", exp / "epoch-1.pt")
    before = _sha(exp / "epoch-1.pt")
    with pytest.raises(ExpDirInUseError, match=r"already holds another training run \(epoch-1.pt\).*--resume.*--overwrite"):
        train_main(_argv(corpus, exp))
    assert cli(_argv(corpus, exp)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("train: error: --exp-dir") and "Traceback" not in "\n".join(err)
    assert sorted(p.name for p in exp.glob("*.pt")) == ["epoch-1.pt"] and _sha(exp / "epoch-1.pt") == before


def test_overwrite_moves_the_old_run_aside_and_cleans_stale_tmp(corpus, reference_run, tmp_path) -> None:
    import os

    exp = tmp_path / "exp"
    exp.mkdir()
    for name in ("checkpoint-9.pt", "epoch-2.pt", "train_stats.json"):
        shutil.copy(reference_run / name, exp / name)
    old = {name: _sha(exp / name) for name in ("checkpoint-9.pt", "epoch-2.pt")}
    stale = exp / ".epoch-3.pt.tmp.999999999"  # no such process: left by a killed writer
    live = exp / f".epoch-3.pt.tmp.{os.getppid()}"  # a live process's write in progress
    stale.write_bytes(b"partial")
    live.write_bytes(b"partial")
    with pytest.raises(ValueError, match="--resume and --overwrite exclude each other"):
        train_main(_argv(corpus, exp, "--overwrite", "--resume"))
    train_main(_argv(corpus, exp, "--overwrite", "--avg", "0", "--save-every-n", "0", epochs=1))
    moved = list(exp.glob("replaced-*"))
    assert len(moved) == 1
    old_id = load_checkpoint(reference_run / "epoch-2.pt")["run_id"]
    assert moved[0].name.endswith(old_id)
    assert {n: _sha(moved[0] / n) for n in old} == old  # nothing lost
    assert (moved[0] / "train_stats.json").is_file()  # the old run's epoch means went with it
    from asr_kd.metrics.train_stats import read_train_stats

    assert list(read_train_stats(exp)["epochs"]) == ["1"]  # the new run's own file
    assert sorted(p.name for p in exp.glob("*.pt")) == ["epoch-1.pt"]
    assert load_checkpoint(exp / "epoch-1.pt")["run_id"] not in (None, old_id)
    assert not stale.exists() and live.exists()


def test_pruning_and_latest_only_see_their_own_run(tmp_path) -> None:
    from asr_kd.train.checkpoint import latest_checkpoint, prune_checkpoints

    for b, rid in ((10, "aaa"), (20, "aaa"), (30, "aaa"), (500, "bbb")):
        torch.save({"model": {}, "run_id": rid, "batch_idx_train": b}, tmp_path / f"checkpoint-{b}.pt")
    removed = prune_checkpoints(tmp_path, keep_last_k=1, run_id="aaa")
    assert sorted(p.name for p in removed) == ["checkpoint-10.pt", "checkpoint-20.pt"]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["checkpoint-30.pt", "checkpoint-500.pt"]
    assert latest_checkpoint(tmp_path, run_id="aaa").name == "checkpoint-30.pt"


@pytest.mark.parametrize("damage, reason", [
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b"", "empty file"),
    (lambda b: b"hello, I am a text file\n", "not a PyTorch checkpoint"),
])
def test_checkpoint_read_errors_name_file_and_reason(reference_run, tmp_path, damage, reason) -> None:
    from asr_kd.models.checkpoint import CheckpointError

    bad = tmp_path / "bad.pt"
    bad.write_bytes(damage((reference_run / "epoch-1.pt").read_bytes()))
    with pytest.raises(CheckpointError, match=f"checkpoint {bad}: cannot be read: {reason}") as e:
        load_checkpoint(bad)
    assert "\n" not in str(e.value)


def test_checkpoint_not_asr_kd_and_cli_init_from(corpus, tmp_path, capsys) -> None:
    from asr_kd.bin.train import main as cli
    from asr_kd.models.checkpoint import CheckpointError

    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match=r"foreign.pt: not an asr_kd checkpoint"):
        load_checkpoint(foreign)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert cli(_argv(corpus, tmp_path / "exp", "--init-from", str(empty))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"train: error: checkpoint {empty}: cannot be read: empty file (0 bytes)"


def test_resume_skips_a_truncated_newest_checkpoint(corpus, reference_run, tmp_path, caplog) -> None:
    exp = tmp_path / "exp"
    exp.mkdir()
    shutil.copy(reference_run / "checkpoint-3.pt", exp / "checkpoint-3.pt")
    data = (reference_run / "checkpoint-6.pt").read_bytes()
    (exp / "checkpoint-6.pt").write_bytes(data[: len(data) // 3])  # killed mid-copy, say
    with caplog.at_level("WARNING"):
        train_main(_argv(corpus, exp, "--resume", "--avg", "0"))
    assert any("checkpoint-6.pt: cannot be read: truncated" in r.getMessage() for r in caplog.records)
    _assert_same_state(reference_run / "epoch-2.pt", exp / "epoch-2.pt")


def test_resume_refuses_fewer_epochs_and_changed_settings(corpus, reference_run, tmp_path) -> None:
    exp = tmp_path / "exp"
    exp.mkdir()
    for name in ("epoch-2.pt", "pretrained.pt"):
        shutil.copy(reference_run / name, exp / name)
    before = {p.name: _sha(p) for p in exp.glob("*.pt")}
    with pytest.raises(ValueError, match=r"written in epoch 2 .* stop at epoch 1; pass --num-epochs >= 2"):
        train_main(_argv(corpus, exp, "--resume", epochs=1))
    with pytest.raises(ValueError, match=r"other settings: --lr 0.005 -> 0.001; --warm-step 4 -> 8"):
        train_main(_argv(corpus, exp, "--resume", "--lr", "1e-3", "--warm-step", "8", epochs=3))
    assert {p.name: _sha(p) for p in exp.glob("*.pt")} == before  # nothing rewritten


def test_continue_from_equals_an_uninterrupted_run(corpus, reference_run, tmp_path) -> None:
    """A new run continuing epoch-1 for one epoch reproduces the 2-epoch run bit for bit."""
    exp = tmp_path / "stage2"
    train_main(_argv(corpus, exp, "--continue-from", str(reference_run / "epoch-1.pt"), "--avg", "1", epochs=1))
    assert sorted(p.name for p in exp.glob("*.pt")) == ["checkpoint-6.pt", "checkpoint-9.pt", "epoch-2.pt",
                                                       "pretrained.pt"]
    _assert_same_state(reference_run / "epoch-2.pt", exp / "epoch-2.pt")
    ck = load_checkpoint(exp / "epoch-2.pt")
    assert ck["epoch_offset"] == 1 and ck["epoch"] == 2
    assert ck["loss_computer"] == {} or "ctc_head" in ck["loss_computer"]
    assert load_checkpoint(exp / "pretrained.pt")["averaged_from"] == ["epoch-2.pt"]
    # resuming the continued run counts epochs the same way
    train_main(_argv(corpus, exp, "--continue-from", str(reference_run / "epoch-1.pt"), "--resume",
                     "--avg", "0", epochs=1))


# ------------------------------------------------------------------ checkpoints written before the typed settings

#: the top-level keys of an epoch checkpoint as written since format_version 1 (``Trainer.state_dict`` +
#: ``train_metrics``); kept literally so a change of the layout is a visible decision
EPOCH_CHECKPOINT_KEYS = {
    "format_version", "model", "model_config", "feature_config", "bpe_model", "bpe_sha256", "optimizer",
    "scheduler", "grad_scaler", "loss_computer", "sampler", "rng", "epoch", "batch_idx", "batch_idx_train",
    "epoch_done", "bad_batches", "valid_loss", "args", "run_id", "epoch_offset", "epoch_metrics", "param_names",
    "train_metrics",
}


def _todays_args(corpus, exp: Path) -> dict:
    """``args`` as the argparse-era ``sanitize_args(args)`` stored it for ``_argv(corpus, exp, "--ctc-scale", "0.3")``."""
    return {
        "exp_dir": str(exp), "cuts_train": str(corpus["train"]), "cuts_valid": str(corpus["valid"]),
        "bpe_model": str(corpus["bpe"]), "max_duration": 4.0, "min_cut_duration": 0.0,
        "max_cut_duration": float("inf"), "num_buckets": 2, "num_workers": 0, "spec_augment": True,
        "noise_cuts": None, "speed_perturb": False, "on_the_fly_feats": False, "encoder": "conformer",
        "preset": "tiny", "causal": True, "chunk_size": [4, 8], "left_context": [8, -1], "dynamic_chunk": None,
        "dropout": None, "num_layers": None, "frontend_scale": None, "num_epochs": 2, "optimizer": "adamw",
        "lr": 0.005, "weight_decay": 0.01, "warmup_batches": 2, "lr_batches": 5000.0, "lr_epochs": 6.0,
        "lr_schedule": "inverse-sqrt", "max_grad_norm": 5.0, "clipping_scale": 2.0, "amp": "auto", "seed": 11,
        "max_bad_batches": 10, "prune_range": 5, "am_scale": 0.0, "lm_scale": 0.25, "simple_loss_scale": 0.5,
        "pruned_scale_start": 0.1, "warm_step": 4, "delay_penalty": 0.0, "ctc_scale": 0.3, "resume": None,
        "overwrite": False, "allow_changed_settings": False, "init_from": None, "continue_from": None,
        "save_every_n": 3, "keep_last_k": 5, "avg": 1, "log_interval": 2, "tensorboard": True, "progress": False,
        "device": "auto", "find_unused_parameters": False, "kd_stage": None, "teacher_checkpoint": None,
        "teacher_cache": None, "kd_hidden_layers": "[(-1, -1)]", "kd_hidden_scale": 1.0, "kd_output_scale": 1.0,
        "kd_projection": "auto", "kd_smoothing": "adaptive-power", "kd_temperature": 2.0,
        "kd_target_entropy": 0.5, "kd_alpha_min": 0.1, "kd_distribution": "full", "kd_ranges": "student",
        "kd_occupancy": False, "kd_teacher_input": "clean", "kd_teacher_delay_ms": 0, "kd_mask_lead": False,
    }  # fmt: skip


def _todays_epoch_checkpoint(corpus, exp: Path) -> dict:
    """An end-of-epoch-1 checkpoint with the key layout of the argparse-era training (built here, no binary file).

    Model, CTC head and AdamW state are real (one optimiser step), so a resume loads every part.
    """
    import random

    import numpy as np
    from torch import nn

    from asr_kd.data.features import feature_config_dict
    from asr_kd.data.tokenizer import Tokenizer, file_sha256
    from asr_kd.models import build_transducer, preset_config
    from asr_kd.train.optim import OptimConfig, WarmupDecaySchedule, build_optimizer

    vocab = Tokenizer(corpus["bpe"]).vocab_size
    cfg = preset_config("tiny", "student", vocab, chunk_sizes=(4, 8), left_contexts=(8, -1), dynamic_chunk=True)
    torch.manual_seed(5)
    model = build_transducer(cfg)
    ctc_head = nn.Linear(model.encoder.output_dim, vocab)
    ocfg = OptimConfig(lr=5e-3, warmup_batches=2)
    opt = build_optimizer(list(model.parameters()) + list(ctc_head.parameters()), ocfg)
    sched = WarmupDecaySchedule(opt, ocfg)
    sum((p.float() ** 2).sum() for g in opt.param_groups for p in g["params"]).mul(1e-6).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    for _ in range(5):
        sched.step_batch()
    sched.step_epoch()
    names = {id(p): f"model.{n}" for n, p in model.named_parameters()}
    names.update({id(p): f"ctc_head.{n}" for n, p in ctc_head.named_parameters()})
    np_state = np.random.get_state()
    rng = {
        "python": random.getstate(),
        "numpy": {"kind": np_state[0], "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": None,
    }
    return {
        "format_version": 1,
        "model": model.state_dict(),
        "model_config": cfg.to_dict(),
        "feature_config": feature_config_dict(),
        "bpe_model": str(Path(corpus["bpe"]).resolve()),
        "bpe_sha256": file_sha256(corpus["bpe"]),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "grad_scaler": {},
        "loss_computer": {"ctc_head": ctc_head.state_dict()},
        "sampler": None,
        "rng": [rng],
        "epoch": 1,
        "batch_idx": 5,
        "batch_idx_train": 5,
        "epoch_done": True,
        "bad_batches": 0,
        "valid_loss": 3.0,
        "args": _todays_args(corpus, exp),
        "run_id": "20240101-000000-compat",
        "epoch_offset": 0,
        "epoch_metrics": [{"frames": 0.0, "sums": {}}],
        "param_names": [names[id(p)] for g in opt.param_groups for p in g["params"]],
        "train_metrics": {"loss": 3.5},
    }


def test_checkpoint_of_the_argparse_era_resumes(corpus, tmp_path, caplog) -> None:
    """A checkpoint with today's key layout and flat ``args`` resumes; --allow-changed-settings works as before."""
    import logging

    from asr_kd.data.tokenizer import Tokenizer
    from asr_kd.models import build_transducer
    from asr_kd.train.cli import parse_settings
    from asr_kd.train.loss_factory import build_loss_computer
    from asr_kd.train.run import build_model_config

    exp = tmp_path / "old"
    exp.mkdir()
    old = _todays_epoch_checkpoint(corpus, exp)
    assert set(old) == EPOCH_CHECKPOINT_KEYS
    torch.save(old, exp / "epoch-1.pt")
    argv = _argv(corpus, exp, "--ctc-scale", "0.3")
    settings = parse_settings(argv)
    assert dict(settings.record) == old["args"]  # the flat record keeps every key and value
    # the loss computer's state of that layout loads into the new one, under the same parameter names
    tok = Tokenizer(corpus["bpe"])
    lc = build_loss_computer(settings.loss, build_transducer(build_model_config(settings.model, tok.vocab_size)), tok)
    lc.load_state_dict(old["loss_computer"])
    assert torch.equal(lc.ctc_head.weight, old["loss_computer"]["ctc_head"]["weight"])
    assert [n for n, _ in lc.named_parameters()] == [n for n in old["param_names"] if n.startswith("ctc_head.")]

    with pytest.raises(ValueError, match=r"other settings: --lr 0.005 -> 0.001"):
        train_main(argv + ["--resume", "--lr", "1e-3"])
    shutil.copytree(exp, tmp_path / "changed")

    train_main(argv + ["--resume"])
    new = load_checkpoint(exp / "epoch-2.pt")
    assert set(new) == EPOCH_CHECKPOINT_KEYS
    assert new["args"] == {**old["args"], "resume": "latest"}
    assert new["run_id"] == old["run_id"] and new["epoch"] == 2 and new["batch_idx_train"] > 5
    assert new["param_names"] == old["param_names"]
    assert set(new["loss_computer"]) == {"ctc_head"}

    changed = tmp_path / "changed"
    with caplog.at_level(logging.WARNING, logger="asr_kd.train.settings"):
        train_main(_argv(corpus, changed, "--ctc-scale", "0.3", "--resume", "--lr", "1e-3",
                         "--allow-changed-settings"))
    assert "--allow-changed-settings" in caplog.text and "--lr 0.005 -> 0.001" in caplog.text
    ck = load_checkpoint(changed / "epoch-2.pt")
    assert ck["args"]["lr"] == 0.001 and ck["run_id"] == old["run_id"]
