"""Distillation in training: teacher checks, frozen teacher, stages end to end, cache = live, projections."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from asr_kd.train.cli import parse_settings
from asr_kd.train.kd_config import parse_layer_pairs, resolve_layer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from lhotse import NumpyFilesWriter

    from asr_kd.data.features import lhotse_fbank_extractor
    from toy_corpus import make_synthetic_cuts, write_transcripts
    from asr_kd.data.tokenizer import train_bpe

    d = tmp_path_factory.mktemp("kd_corpus")
    cuts = make_synthetic_cuts(d / "wav", num_cuts=10, max_words=4, seed=5)
    bpe = train_bpe(write_transcripts(cuts, d / "tr.txt"), d / "lang", vocab_size=20)
    other = train_bpe(write_transcripts(cuts, d / "tr2.txt", extra=["ZULU YANKEE XRAY"] * 3), d / "lang2",
                      vocab_size=30)
    feats = cuts.compute_and_store_features(
        lhotse_fbank_extractor(), d / "feats", storage_type=NumpyFilesWriter, progress_bar=False
    ).to_eager()
    feats.subset(first=8).to_file(d / "train.jsonl.gz")
    feats.subset(last=2).to_file(d / "valid.jsonl.gz")
    return {"dir": d, "train": d / "train.jsonl.gz", "valid": d / "valid.jsonl.gz", "bpe": bpe, "other_bpe": other}


def make_teacher_checkpoint(path: Path, bpe: Path, d_model: int = 64, feature_config=None, seed: int = 1) -> Path:
    """A random-init tiny full-context teacher saved like asr_kd.train's pretrained.pt."""
    from asr_kd.data.features import feature_config_dict
    from asr_kd.data.tokenizer import Tokenizer, file_sha256
    from asr_kd.models import build_transducer, preset_config
    from asr_kd.models.checkpoint import CHECKPOINT_FORMAT

    torch.manual_seed(seed)
    tok = Tokenizer(bpe)
    over = {} if d_model == 64 else {"d_model": d_model, "num_heads": 4}
    cfg = preset_config("tiny", "teacher", tok.vocab_size, **over)
    model = build_transducer(cfg)
    torch.save({
        "format_version": CHECKPOINT_FORMAT, "model": model.state_dict(), "model_config": cfg.to_dict(),
        "feature_config": feature_config or feature_config_dict(), "bpe_model": str(bpe),
        "bpe_sha256": file_sha256(bpe),
    }, path)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def teacher(corpus):
    return make_teacher_checkpoint(corpus["dir"] / "teacher.pt", corpus["bpe"])


def _argv(corpus, exp: Path, teacher: Path, *extra: str, epochs: int = 1) -> list[str]:
    return [
        "--exp-dir", str(exp), "--cuts-train", str(corpus["train"]), "--cuts-valid", str(corpus["valid"]),
        "--bpe-model", str(corpus["bpe"]), "--model-size", "tiny", "--causal", "true", "--chunk-ms", "160",
        "--left-context-ms", "-1", "--num-epochs", str(epochs), "--max-duration", "6", "--num-buckets", "2",
        "--num-workers", "0", "--save-every-n", "0", "--lr", "5e-3", "--warmup-batches", "2",
        "--warm-step", "4", "--log-interval", "1", "--progress", "false", "--seed", "3", "--avg", "1",
        "--teacher-checkpoint", str(teacher), *extra,
    ]  # fmt: skip


def _setup(corpus, teacher, *extra: str, student_seed: int = 0):
    """(settings, student, kd loss computer, one training batch with clean features)."""
    from lhotse import CutSet

    from asr_kd.data.datamodule import AsrDataModule, DataConfig
    from asr_kd.data.tokenizer import Tokenizer
    from asr_kd.models import build_transducer
    from asr_kd.train.loss_factory import build_loss_computer
    from asr_kd.train.run import build_model_config

    settings = parse_settings(_argv(corpus, corpus["dir"] / "unused", teacher, *extra))
    tok = Tokenizer(settings.run.bpe_model)
    torch.manual_seed(student_seed)
    student = build_transducer(build_model_config(settings.model, tok.vocab_size))
    lc = build_loss_computer(settings.loss, student, tok, bpe_model=settings.run.bpe_model,
                             on_the_fly_feats=settings.data.on_the_fly_feats)
    dm = AsrDataModule(DataConfig(max_duration=6, num_buckets=2, num_workers=0, spec_augment=True,
                                  return_clean=True, seed=1))
    batch = next(iter(dm.train_dataloader(CutSet.from_file(corpus["train"]))))
    return settings, student, lc, batch


# ------------------------------------------------------------------ start-up checks


def test_other_bpe_model_is_refused(corpus, tmp_path) -> None:
    t = make_teacher_checkpoint(tmp_path / "t_other_bpe.pt", corpus["other_bpe"])
    with pytest.raises(ValueError, match="tokenizers differ") as e:
        _setup(corpus, t, "--kd-stage", "hidden")
    assert str(t) in str(e.value) and str(corpus["bpe"]) in str(e.value)


def test_other_feature_config_is_refused(corpus, tmp_path) -> None:
    from asr_kd.data.features import feature_config_dict

    fc = dict(feature_config_dict(), frame_shift_ms=12.5)
    t = make_teacher_checkpoint(tmp_path / "t_other_feats.pt", corpus["bpe"], feature_config=fc)
    with pytest.raises(ValueError, match="feature front ends differ") as e:
        _setup(corpus, t, "--kd-stage", "output")
    assert "frame_shift_ms: 12.5 != 10.0" in str(e.value) and str(t) in str(e.value)


def test_missing_teacher_checkpoint_is_refused(corpus) -> None:
    with pytest.raises(ValueError, match="--teacher-checkpoint"):
        _setup(corpus, Path("/nonexistent/teacher.pt"), "--kd-stage", "hidden")


def test_layer_parsing_errors_are_clear() -> None:
    assert parse_layer_pairs("-1:-1") == ((-1, -1),)
    assert parse_layer_pairs("0:1, 1:-1") == ((0, 1), (1, -1))
    with pytest.raises(ValueError, match="'student:teacher'"):
        parse_layer_pairs("1-2")
    with pytest.raises(ValueError, match="non-integer"):
        parse_layer_pairs("a:1")
    with pytest.raises(ValueError, match="twice"):
        parse_layer_pairs("1:1,1:1")
    with pytest.raises(ValueError, match="student layer 5 is out of range; the student encoder has 2 layers"):
        resolve_layer(5, 2, "student")
    assert resolve_layer(-1, 2, "teacher") == 1


def test_layer_out_of_range_at_build(corpus, teacher) -> None:
    with pytest.raises(ValueError, match="teacher layer -3 is out of range"):
        _setup(corpus, teacher, "--kd-stage", "hidden", "--kd-hidden-layers", "0:-3")


# ------------------------------------------------------------------ frozen teacher


def test_teacher_frozen_and_not_saved(corpus, teacher) -> None:
    args, student, lc, batch = _setup(corpus, teacher, "--kd-stage", "joint", "--kd-hidden-layers", "0:0,-1:-1")
    before = copy.deepcopy(lc.teacher.state_dict())
    assert not lc.teacher.training and all(not p.requires_grad for p in lc.teacher.parameters())
    t_ids = {id(p) for p in lc.teacher.parameters()}
    extra = list(lc.parameters())
    assert not (t_ids & {id(p) for p in extra})
    opt = torch.optim.AdamW(list(student.parameters()) + extra, lr=1e-2)
    assert not (t_ids & {id(p) for g in opt.param_groups for p in g["params"]})
    lc.train(True)
    student.train()
    for step in range(3):
        loss, info = lc(student, batch, step)
        loss.backward()
        assert all(p.grad is None for p in lc.teacher.parameters())
        opt.step()
        opt.zero_grad()
    assert not lc.teacher.training  # train(True) leaves the teacher in eval mode
    for k, v in lc.teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    for key in ("kd_hidden_loss", "kd_output_loss", "kd_teacher_entropy", "kd_teacher_entropy_smoothed",
                "kd_alpha_mean", "kd_alpha_min_share", "kd_coverage", "transducer_loss", "frames"):
        assert key in info, key
    assert 0.0 <= info["kd_coverage"] <= 1.0 + 1e-6
    sd = lc.state_dict()
    flat = str(sd.keys()) + str(sd.get("projections", {}).keys())
    assert "teacher" not in flat and "encoder" not in flat


# ------------------------------------------------------------------ end to end via the CLI


@pytest.fixture(scope="module")
def stage1_run(corpus, teacher, tmp_path_factory):
    from asr_kd.bin.train import train as train_main

    exp = tmp_path_factory.mktemp("kd_stage1")
    train_main(_argv(corpus, exp, teacher, "--kd-stage", "hidden"))
    return exp


def test_stage1_then_stage2_cli(corpus, teacher, stage1_run, tmp_path, caplog) -> None:
    from asr_kd.bin.train import train as train_main
    from asr_kd.models.checkpoint import load_checkpoint

    ck = load_checkpoint(stage1_run / "epoch-1.pt")
    t_keys = set(torch.load(teacher, weights_only=True)["model"])
    assert set(ck["model"]) == t_keys  # same architecture names: the student's own weights only
    assert ck["model_config"]["encoder"]["causal"] is True  # the student, not the teacher
    n_student = sum(v.numel() for v in ck["model"].values())
    n_opt = sum(s["exp_avg"].numel() for s in ck["optimizer"]["state"].values())
    assert n_opt <= n_student  # no teacher parameters in the optimiser (no projection: dims agree)
    assert "projections" not in ck["loss_computer"]
    exp2 = tmp_path / "stage2"
    train_main(_argv(corpus, exp2, teacher, "--kd-stage", "output", "--init-from", str(stage1_run / "epoch-1.pt"),
                     "--kd-smoothing", "adaptive-power", "--kd-target-entropy", "1.0"))
    assert (exp2 / "pretrained.pt").is_file()
    assert "kd_output_loss" in caplog.text and "kd_coverage" in caplog.text
    from asr_kd.distill import DEFAULT_ALPHA_MIN

    _check_train_stats(tmp_path, stage1_run, alpha_min=DEFAULT_ALPHA_MIN)


def _check_train_stats(parent: Path, stage1_dir: Path, alpha_min: float) -> None:
    """parent/stage2/train_stats.json: finite KD statistics in range; the section finds stage 2 only."""
    import math
    import shutil

    from asr_kd.metrics.train_stats import KD_KEYS, STATS_FILE, load_run_stats, read_train_stats, summarize_kd_runs

    data = read_train_stats(parent / "stage2")
    assert data is not None and data["args"]["kd_stage"] == "output" and list(data["epochs"]) == ["1"]
    train = data["epochs"]["1"]["train"]
    assert all(train[k] is not None and math.isfinite(train[k]) for k in KD_KEYS), train
    assert train["kd_output_loss"] >= 0 and train["kd_teacher_entropy"] >= 0
    assert train["kd_teacher_entropy_smoothed"] >= train["kd_teacher_entropy"] - 1e-6  # powers <= 1 flatten
    assert alpha_min - 1e-6 <= train["kd_alpha_mean"] <= 1 + 1e-6
    for k in ("kd_alpha_min_share", "kd_smoothed_share", "kd_coverage"):
        assert -1e-6 <= train[k] <= 1 + 1e-6, (k, train[k])
    assert data["epochs"]["1"]["valid"]["loss"] is not None and data["epochs"]["1"]["frames"] > 0
    assert read_train_stats(stage1_dir)["args"]["kd_stage"] == "hidden"  # every run writes it
    (s,) = summarize_kd_runs(parent)
    assert s.model == "stage2" and s.last["kd_coverage"] == train["kd_coverage"]
    # an older run without the file: the same numbers from its epoch checkpoint's train_metrics
    old = parent / "old" / "stage2"
    old.mkdir(parents=True)
    shutil.copy(parent / "stage2" / "epoch-1.pt", old / "epoch-1.pt")
    assert not (old / STATS_FILE).exists()
    fallback = load_run_stats(old)
    assert fallback["epochs"]["1"]["train"]["kd_alpha_mean"] == train["kd_alpha_mean"]
    assert [r.model for r in summarize_kd_runs(parent / "old")] == ["stage2"]
    assert load_run_stats(old, stages=("joint",)) is None  # another stage: skipped after one peek


@pytest.mark.parametrize("stage", ["hidden", "output"])
def test_kd_term_falls_on_fixed_batch(corpus, teacher, stage) -> None:
    # lambda large enough that the KD term, not the transducer loss, drives the student
    args, student, lc, batch = _setup(corpus, teacher, "--kd-stage", stage, "--kd-smoothing", "temperature",
                                      "--kd-output-scale", "20", "--kd-hidden-scale", "20", "--dropout", "0")
    key = "kd_hidden_loss" if stage == "hidden" else "kd_output_loss"
    opt = torch.optim.Adam(list(student.parameters()) + list(lc.parameters()), lr=3e-3)
    student.train()
    lc.train(True)
    values = []
    for step in range(30):
        loss, info = lc(student, batch, step)
        values.append(info[key])
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert values[-1] < 0.7 * values[0], values


# ------------------------------------------------------------------ cache == live, projections


def test_cached_teacher_matches_live(corpus, teacher, tmp_path) -> None:
    from asr_kd.bin.cache_teacher import main as cache_main

    cache_main(["--teacher-checkpoint", str(teacher), "--cuts", str(corpus["train"]), "--out-dir",
                str(tmp_path / "cache"), "--layers", "0,-1", "--shard-size", "3", "--max-duration", "5",
                "--progress", "false"])  # fmt: skip
    common = ("--kd-stage", "joint", "--kd-hidden-layers", "0:0,-1:-1")
    _, student, live, batch = _setup(corpus, teacher, *common)
    _, student2, cached, _ = _setup(corpus, teacher, *common, "--teacher-cache", str(tmp_path / "cache"))
    student2.load_state_dict(student.state_dict())
    for m in (student, student2):
        m.eval()  # no dropout: the two runs must see identical students
    with torch.no_grad():
        l1, i1 = live(student, batch, 100)
        l2, i2 = cached(student2, batch, 100)
    assert cached.cache is not None
    assert float(l1) == pytest.approx(float(l2), rel=1e-5, abs=1e-5)
    for k in ("kd_hidden_loss", "kd_output_loss", "kd_coverage"):
        assert i1[k] == pytest.approx(i2[k], rel=1e-5, abs=1e-6), k


def test_cache_refuses_augmented_teacher_input(corpus, teacher, tmp_path) -> None:
    with pytest.raises(ValueError, match="kd-teacher-input clean"):
        _setup(corpus, teacher, "--kd-stage", "hidden", "--teacher-cache", str(tmp_path),
               "--kd-teacher-input", "augmented")


def test_projection_when_dims_differ(corpus, tmp_path) -> None:
    t = make_teacher_checkpoint(tmp_path / "t32.pt", corpus["bpe"], d_model=32)
    _, student, lc, batch = _setup(corpus, t, "--kd-stage", "hidden", "--kd-hidden-layers", "0:1,-1:-1")
    assert lc.projections is not None and len(lc.projections) == 2
    assert tuple(lc.projections[0].weight.shape) == (32, 64)
    assert {id(p) for p in lc.projections.parameters()} <= {id(p) for p in lc.parameters()}
    loss, info = lc(student, batch, 0)
    loss.backward()
    assert lc.projections[0].weight.grad is not None
    assert "projections" in lc.state_dict()
    with pytest.raises(ValueError, match="--kd-projection false"):
        _setup(corpus, t, "--kd-stage", "hidden", "--kd-projection", "false")
    _, _, lc_same, _ = _setup(corpus, make_teacher_checkpoint(tmp_path / "t64.pt", corpus["bpe"]),
                              "--kd-stage", "hidden")
    assert lc_same.projections is None  # auto: equal dims, no projection


def test_stage2_continue_from_carries_stage1_state(corpus, teacher, tmp_path, caplog) -> None:
    """Stage 1 (hidden KD, CTC head, a projection) -> stage 2 (output KD) via --continue-from."""
    from asr_kd.bin.train import train as train_main
    from asr_kd.models.checkpoint import load_checkpoint

    s1 = tmp_path / "stage1"
    train_main(_argv(corpus, s1, teacher, "--kd-stage", "hidden", "--ctc-scale", "0.3", "--kd-projection", "true"))
    c1 = load_checkpoint(s1 / "epoch-1.pt")
    assert "projections" in c1["loss_computer"] and "ctc_head" in c1["loss_computer"]["base"]
    s2 = tmp_path / "stage2"
    with caplog.at_level("INFO"):
        train_main(_argv(corpus, s2, teacher, "--kd-stage", "output", "--ctc-scale", "0.3",
                         "--continue-from", str(s1 / "epoch-1.pt")))
    c2 = load_checkpoint(s2 / "epoch-2.pt")  # epochs continue counting: stage 2 trains epoch 2
    assert not (s2 / "epoch-1.pt").exists() and (s2 / "pretrained.pt").is_file()
    per_epoch = c1["batch_idx_train"]
    assert c2["batch_idx_train"] == 2 * per_epoch  # warm-step / delay-penalty gate count on
    assert c2["scheduler"] == {"batch": 2 * per_epoch, "epoch": 2}  # no second LR warm-up
    n_model = len(c2["model"])
    n_ctc = len(c2["loss_computer"]["base"]["ctc_head"])
    text = caplog.text
    assert "CTC head carried" in text
    n_params = len(c2["param_names"])
    assert f"optimizer moments carried for {n_params} of {n_params} parameters" in text
    assert all(n.startswith(("model.", "ctc_head.")) for n in c2["param_names"])
    assert n_params <= n_model + n_ctc
    assert "kd_output_loss" in text
    from asr_kd.metrics.train_stats import read_train_stats

    stats2 = read_train_stats(s2)  # global epoch numbers: stage 2 trained epoch 2
    assert list(stats2["epochs"]) == ["2"] and stats2["run_id"] == c2["run_id"]
    assert stats2["epochs"]["2"]["batch_idx_train"] == 2 * per_epoch
    step1 = {n: int(c1["optimizer"]["state"][i]["step"]) for i, n in enumerate(c1["param_names"])}
    step2 = {n: int(c2["optimizer"]["state"][i]["step"]) for i, n in enumerate(c2["param_names"])}
    assert all(step2[n] > step1[n] for n in step2)  # Adam moments continued, not restarted
    # a causal checkpoint given as teacher is accepted with a warning; a damaged one is refused in one line
    from asr_kd.models.checkpoint import CheckpointError
    from asr_kd.train.kd import load_teacher

    caplog.clear()
    with caplog.at_level("WARNING"):
        load_teacher(str(s1 / "epoch-1.pt"), torch.device("cpu"))
    assert f"--teacher-checkpoint {s1 / 'epoch-1.pt'} is a chunk-wise (causal) model" in caplog.text
    bad = tmp_path / "teacher-bad.pt"
    bad.write_bytes((s1 / "epoch-1.pt").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=f"checkpoint {bad}: cannot be read: truncated"):
        train_main(_argv(corpus, tmp_path / "s3", bad, "--kd-stage", "output"))


# ------------------------------------------------------------------ teacher delay


def test_teacher_delay_equals_a_teacher_with_delayed_frames(corpus, teacher) -> None:
    """--kd-teacher-delay-ms 80 gives exactly the losses of a teacher whose encoder output is delayed 2 frames."""
    from asr_kd.distill import delay_frames

    common = ("--kd-stage", "joint", "--kd-hidden-layers", "0:0,-1:-1")
    _, student, delayed, batch = _setup(corpus, teacher, *common, "--kd-teacher-delay-ms", "80")
    _, student2, by_hand, _ = _setup(corpus, teacher, *common)
    student2.load_state_dict(student.state_dict())
    encoder = by_hand.teacher.encoder
    plain_forward = encoder.forward

    def delayed_forward(*args, **kwargs):
        enc = plain_forward(*args, **kwargs)
        enc.out = delay_frames(enc.out, 2)
        enc.hidden = [delay_frames(h, 2) for h in enc.hidden]
        return enc

    for m in (student, student2):
        m.eval()
    with torch.no_grad():
        plain_loss, plain_info = by_hand(student2, batch, 100)
        encoder.forward = delayed_forward
        l1, i1 = delayed(student, batch, 100)
        l2, i2 = by_hand(student2, batch, 100)
    assert float(l1) == pytest.approx(float(l2), rel=1e-6, abs=1e-6)
    for k in ("kd_hidden_loss", "kd_output_loss", "kd_coverage"):
        assert i1[k] == pytest.approx(i2[k], rel=1e-6, abs=1e-7), k
    assert i1["kd_output_loss"] != pytest.approx(plain_info["kd_output_loss"], rel=1e-3)  # the delay acts


def test_teacher_delay_must_be_whole_frames(corpus, teacher) -> None:
    with pytest.raises(ValueError, match="--kd-teacher-delay-ms must be 0 or a positive multiple of 40 ms"):
        _setup(corpus, teacher, "--kd-stage", "output", "--kd-teacher-delay-ms", "50")


# ------------------------------------------------------------------ lead-in mask


def test_mask_lead_leaves_out_only_lead_in_kl(corpus, teacher) -> None:
    """--kd-mask-lead true: same transducer loss, a smaller KL, and the masked share is reported."""
    _, student, masked, batch = _setup(corpus, teacher, "--kd-stage", "output", "--kd-mask-lead", "true")
    _, student2, plain, _ = _setup(corpus, teacher, "--kd-stage", "output")
    student2.load_state_dict(student.state_dict())
    for m in (student, student2):
        m.eval()
    with torch.no_grad():
        _, i_masked = masked(student, batch, 100)
        _, i_plain = plain(student2, batch, 100)
    assert i_masked["transducer_loss"] == pytest.approx(i_plain["transducer_loss"], rel=1e-6)
    assert 0 < i_masked["kd_lead_masked_share"] < 1
    assert "kd_lead_masked_share" not in i_plain
    # the masked nodes' KL terms (each >= 0) are left out of the sum
    assert i_masked["kd_output_loss"] < i_plain["kd_output_loss"]
