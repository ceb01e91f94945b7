"""The Zipformer through the package: config round trip, presets, training CLI (AdamW, ScaledAdam, exact
resume, the bypass schedule's batch count), refused flags, true == simulated streaming, state stacking,
distillation stages 1 and 2 (live and cached teacher), an export refusal."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from asr_kd.bin.train import main as train_cli
from asr_kd.bin.train import train as train_main
from asr_kd.data.features import compute_online_fbank
from asr_kd.decode import StreamingDecoder
from asr_kd.models import (TransducerConfig, ZipformerConfig, build_transducer, preset_config, stack_states,
                           unstack_states)
from asr_kd.models.conformer import EncoderConfig
from asr_kd.models.checkpoint import load_checkpoint
from test_decode_streaming import _wave, assert_interleaved_streams_decode_as_alone, simulated
from test_train_resume import _assert_same_state
from test_train_resume import corpus as _resume_corpus

VOCAB = 16


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """test_train_resume's tiny corpus, plus a scratch directory."""
    return dict(_resume_corpus.__wrapped__(tmp_path_factory), dir=tmp_path_factory.mktemp("zip_scratch"))


def _argv(corpus, exp: Path, *extra: str, epochs: int = 2) -> list[str]:
    return [
        "--exp-dir", str(exp), "--cuts-train", str(corpus["train"]), "--cuts-valid", str(corpus["valid"]),
        "--bpe-model", str(corpus["bpe"]), "--encoder", "zipformer", "--model-size", "tiny", "--causal", "true",
        "--chunk-ms", "160,320", "--left-context-ms", "320,-1", "--num-epochs", str(epochs),
        "--max-duration", "4", "--num-buckets", "2", "--num-workers", "0", "--save-every-n", "3",
        "--lr", "5e-3", "--warmup-batches", "2", "--warm-step", "4", "--log-interval", "2",
        "--progress", "false", "--seed", "11", *extra,
    ]  # fmt: skip


def _teacher_argv(corpus, exp: Path, *extra: str, epochs: int) -> list[str]:
    argv = _argv(corpus, exp, "--causal", "false", "--dropout", "0", "--spec-augment", "false",
                 "--save-every-n", "0", *extra, epochs=epochs)
    for flag in ("--chunk-ms", "--left-context-ms"):
        i = argv.index(flag)
        del argv[i : i + 2]
    return argv


# ------------------------------------------------------------------ config and presets


def test_config_round_trip_both_encoders() -> None:
    conf = preset_config("tiny", "student", 20)
    d = conf.to_dict()
    assert "encoder_type" not in d  # a Conformer's dict is the one older checkpoints hold
    assert TransducerConfig.from_dict(d) == conf and TransducerConfig.from_dict(d).encoder_type == "conformer"
    zconf = preset_config("tiny", "student", 20, encoder_type="zipformer", chunk_sizes=(4, 8))
    zd = zconf.to_dict()
    assert zd["encoder_type"] == "zipformer" and zd["encoder"]["chunk_sizes"] == [4, 8]
    back = TransducerConfig.from_dict(zd)
    assert back == zconf and isinstance(back.encoder, ZipformerConfig)
    assert type(build_transducer(back).encoder).__name__ == "ZipformerEncoder"
    with pytest.raises(ValueError, match=r"needs encoder=ZipformerConfig\(\.\.\.\), got EncoderConfig"):
        TransducerConfig(encoder=EncoderConfig(), vocab_size=20, encoder_type="zipformer")
    with pytest.raises(ValueError, match="encoder_type"):
        TransducerConfig.from_dict({**zd, "encoder_type": "lstm"})


def test_zipformer_presets() -> None:
    from asr_kd.models import ZIPFORMER_STUDENT_CHUNK, preset_names

    assert preset_names("zipformer") == ["cpu", "large", "medium", "small", "tiny"]
    s = preset_config("small", "student", 500, encoder_type="zipformer")
    t = preset_config("small", "teacher", 500, encoder_type="zipformer")
    assert s.encoder.causal and not t.encoder.causal
    assert (s.encoder.chunk_sizes, s.encoder.left_contexts) == ((8,), (64,)) == (
        (ZIPFORMER_STUDENT_CHUNK["chunk_size"],), (ZIPFORMER_STUDENT_CHUNK["left_context"],))
    assert (s.decoder_dim, s.joiner_dim) == (512, 512)
    assert {k: v for k, v in s.encoder.to_dict().items() if k not in ("causal", "chunk_sizes", "left_contexts")} \
        == {k: v for k, v in t.encoder.to_dict().items() if k not in ("causal", "chunk_sizes", "left_contexts")}
    with pytest.raises(ValueError, match="zipformer size 'full'"):
        preset_config("full", "teacher", 500, encoder_type="zipformer")


# ------------------------------------------------------------------ training CLI


def _parse(*extra: str):
    from asr_kd.train.cli import parse_settings

    base = ["--cuts-train", "a", "--cuts-valid", "b", "--bpe-model", "c", "--exp-dir", "d", "--encoder", "zipformer"]
    return parse_settings(base + list(extra)).model


@pytest.mark.parametrize("extra,match", [
    (("--model-size", "full"), r"--model-size full is not a zipformer size; --encoder zipformer takes "
                           r"cpu\|large\|medium\|small\|tiny"),
    (("--model-size", "tiny", "--num-layers", "3"), "--num-layers is a Conformer option"),
    (("--model-size", "tiny", "--frontend-scale", "sqrt-d"), "--frontend-scale is a Conformer option"),
    (("--model-size", "tiny", "--causal", "true", "--chunk-ms", "160,240"), "--chunk-ms 240: .* multiples of 160 ms"),
    (("--model-size", "tiny", "--causal", "true", "--left-context-ms", "80"), "--left-context-ms 80: .* multiples of 160 ms"),
])  # fmt: skip
def test_refused_flags_give_one_line(extra, match) -> None:
    from asr_kd.train.run import build_model_config

    with pytest.raises(ValueError, match=match) as e:
        build_model_config(_parse(*extra), 20)
    assert "\n" not in str(e.value)


def test_cli_refusal_is_one_stderr_line(corpus, tmp_path, capsys) -> None:
    assert train_cli(_argv(corpus, tmp_path / "x", "--model-size", "medium", "--encoder", "conformer")) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("train: error:")]
    assert lines == ["train: error: --model-size medium is not a conformer size; --encoder conformer takes "
                     "full|large|small|tiny"]


def test_flags_build_a_zipformer_student() -> None:
    from asr_kd.train.run import build_model_config

    cfg = build_model_config(_parse("--model-size", "tiny", "--causal", "true", "--chunk-ms", "160,320",
                                    "--left-context-ms", "320,-1", "--dropout", "0.05"), 20)
    assert cfg.encoder_type == "zipformer" and cfg.encoder.dropout == 0.05
    assert (cfg.encoder.chunk_sizes, cfg.encoder.left_contexts, cfg.encoder.dynamic_chunk) == ((4, 8), (8, -1), True)
    assert build_model_config(_parse("--model-size", "small"), 20).encoder.causal is False


@pytest.fixture(scope="module")
def reference_run(corpus, tmp_path_factory):
    exp = tmp_path_factory.mktemp("zip_ref")
    train_main(_argv(corpus, exp, "--avg", "2"))
    return exp


def test_resume_mid_epoch_is_exact(corpus, reference_run, tmp_path) -> None:
    ck = load_checkpoint(reference_run / "checkpoint-3.pt")
    assert ck["model_config"]["encoder_type"] == "zipformer" and (ck["epoch"], ck["batch_idx"]) == (1, 3)
    exp = tmp_path / "exp"
    exp.mkdir()
    shutil.copy(reference_run / "checkpoint-3.pt", exp / "checkpoint-3.pt")
    train_main(_argv(corpus, exp, "--resume", "--avg", "0"))
    for name in ("epoch-1.pt", "epoch-2.pt"):
        _assert_same_state(reference_run / name, exp / name)


@pytest.mark.parametrize("optimizer,lr", [("adamw", "5e-3"), ("scaled-adam", "0.045")])
def test_teacher_trains_and_loss_falls(corpus, tmp_path, monkeypatch, optimizer, lr) -> None:
    from asr_kd.models import ZipformerEncoder

    counts: list[float] = []
    original = ZipformerEncoder.set_batch_count

    def record(self, n):
        counts.append(n)
        original(self, n)

    monkeypatch.setattr(ZipformerEncoder, "set_batch_count", record)
    exp = tmp_path / optimizer
    train_main(_teacher_argv(corpus, exp, "--optimizer", optimizer, "--lr", lr, epochs=4))
    v1, v4 = (load_checkpoint(exp / f"epoch-{e}.pt")["valid_loss"] for e in (1, 4))
    assert v4 < v1, (v1, v4)
    ck = load_checkpoint(exp / "epoch-4.pt")
    assert ck["model_config"]["encoder_type"] == "zipformer" and not ck["model_config"]["encoder"]["causal"]
    # before every step: batches trained so far x max_duration (4 s) x world size (1) / 600 s
    assert counts == pytest.approx([i * 4.0 / 600.0 for i in range(ck["batch_idx_train"])])
    # feature statistics reached the Zipformer's front end
    assert not torch.equal(ck["model"]["encoder.subsampling.feature_mean"],
                           torch.zeros_like(ck["model"]["encoder.subsampling.feature_mean"]))


# ------------------------------------------------------------------ streaming


@pytest.fixture(scope="module")
def model():
    """Tiny causal Zipformer, random weights, blank bias set so that about half the frames emit."""
    torch.manual_seed(1)
    m = build_transducer(preset_config("tiny", "student", VOCAB, encoder_type="zipformer",
                                       chunk_sizes=(4,), left_contexts=(8,))).eval()
    with torch.no_grad():
        m.joiner.encoder_proj.weight.mul_(4.0)
        f = compute_online_fbank(_wave(23000, 0))[None]
        enc = m.encoder(f, torch.tensor([f.size(1)]), chunk_size=4, left_context=8).out[0]
        dec = m.joiner.decoder_proj(m.decoder(torch.zeros(1, 2, dtype=torch.long), need_pad=False)[:, 0])
        z = m.joiner(m.joiner.encoder_proj(enc), dec, project_input=False)
        m.joiner.output_linear.bias[0] -= (z[:, 0] - z[:, 1:].max(-1).values).median()
    return m


WAVES = [_wave(23000, 0), _wave(14100, 1), _wave(3000, 2)]  # the last gives one encoder frame


@pytest.mark.parametrize("K,L,method", [(4, 8, "greedy"), (8, 4, "greedy"), (4, 0, "greedy"),
                                        (4, 8, "modified_beam_search")])
def test_true_streaming_equals_simulated(model, K, L, method) -> None:
    dec = StreamingDecoder(model, K, L, method=method, beam=3)
    whole = dec.decode_waveforms(WAVES)
    pieces = dec.decode_waveforms(WAVES, piece_samples=700)
    sim = simulated(model, WAVES, K, L, method, 3)
    for a, b, s in zip(whole, pieces, sim):
        assert (a.tokens, a.frames) == (s.tokens, s.frames)
        assert (b.tokens, b.frames, b.availability_s) == (a.tokens, a.frames, a.availability_s)
    assert sum(len(a.tokens) for a in whole) > 5


def test_streams_interleaved_decode_as_alone(model) -> None:
    assert_interleaved_streams_decode_as_alone(StreamingDecoder(model, 4, 8), WAVES)


def test_streaming_refusals(model) -> None:
    with pytest.raises(ValueError, match="left_context >= 0"):
        StreamingDecoder(model, 4, -1)
    with pytest.raises(ValueError, match="chunk_size=3"):
        StreamingDecoder(model, 3, 8)


def test_stack_unstack_zipformer_states(model) -> None:
    enc = model.encoder
    k, lc = 4, 8
    n_in, shift = enc.chunk_input_frames(k), enc.chunk_shift_frames(k)
    x = torch.randn(2, shift + n_in, 80)
    s0 = enc.init_states(1, lc)
    with torch.no_grad():
        _, s0 = enc.streaming_forward(x[:1, :n_in], s0, k, lc)
        s1 = enc.init_states(1, lc)
        batched = stack_states([s0, s1])  # stream 1 starts a chunk later
        assert set(batched) == set(s0) and batched["offset"].tolist() == [k, 0]
        assert all(v.shape[0] == 2 and v.shape[1:] == s0[n].shape[1:] for n, v in batched.items())
        a, b = unstack_states(batched)
        assert all(torch.equal(a[n], s0[n]) and torch.equal(b[n], s1[n]) for n in s0)
        window = torch.cat((x[:1, shift : shift + n_in], x[1:, :n_in]), dim=0)
        out, batched = enc.streaming_forward(window, batched, k, lc)
        ref0, _ = enc.streaming_forward(x[:1, shift : shift + n_in], s0, k, lc)
        ref1, _ = enc.streaming_forward(x[1:, :n_in], s1, k, lc)
    torch.testing.assert_close(out, torch.cat((ref0, ref1)), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="different shapes"):
        stack_states([s0, enc.init_states(1, 2 * lc)])


def test_decode_pipeline_streaming_equals_simulated(corpus, model, reference_run, tmp_path) -> None:
    """decode_cuts (default left context from the config) and the decode CLI on a trained checkpoint."""
    from lhotse import CutSet

    from asr_kd.bin.decode import main as decode_main
    from asr_kd.decode.pipeline import DecodeSettings, decode_cuts

    cuts = CutSet.from_file(corpus["valid"])
    runs = [decode_cuts(model, str, cuts, DecodeSettings(mode=mode, chunk_size=None if mode == "offline" else 4))
            for mode in ("streaming", "simulated-streaming", "offline")]  # offline: the trained K=4, L=8
    assert [(u.tokens, u.frames) for u in runs[0]] == [(u.tokens, u.frames) for u in runs[1]]
    assert [(u.tokens, u.frames) for u in runs[2]] == [(u.tokens, u.frames) for u in runs[1]]
    assert sum(len(u.tokens) for u in runs[0]) > 5
    ckpt = reference_run / "pretrained.pt"
    assert decode_main(["--checkpoint", str(ckpt), "--cuts", str(corpus["valid"]), "--mode", "streaming",
                        "--out-dir", str(tmp_path / "dec"), "--no-progress"]) == 0
    assert list((tmp_path / "dec").glob("wer-summary-*chunk160ms-left320ms*.txt"))


def test_export_refuses_a_chunk_the_stacks_cannot_split(reference_run, tmp_path, capsys) -> None:
    """The export itself is tested in tests/test_export_zipformer.py; here: a trained checkpoint's refusal."""
    from asr_kd.bin.export_onnx import main as export_main

    argv = ["--checkpoint", str(reference_run / "epoch-1.pt"), "--out-dir", str(tmp_path), "--chunk-ms", "120"]
    assert export_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "--chunk-ms must be a multiple of 160 ms" in err and "\n" not in err


# ------------------------------------------------------------------ distillation


def _save_teacher(path: Path, corpus, encoder_type: str = "zipformer") -> Path:
    from asr_kd.data.features import feature_config_dict
    from asr_kd.data.tokenizer import Tokenizer, file_sha256
    from asr_kd.models.checkpoint import CHECKPOINT_FORMAT

    torch.manual_seed(1)
    cfg = preset_config("tiny", "teacher", Tokenizer(corpus["bpe"]).vocab_size, encoder_type=encoder_type)
    torch.save({"format_version": CHECKPOINT_FORMAT, "model": build_transducer(cfg).state_dict(),
                "model_config": cfg.to_dict(), "feature_config": feature_config_dict(),
                "bpe_model": str(corpus["bpe"]), "bpe_sha256": file_sha256(corpus["bpe"])}, path)
    return path


@pytest.fixture(scope="module")
def zteacher(corpus):
    return _save_teacher(corpus["dir"] / "zteacher.pt", corpus)


def _kd_setup(corpus, teacher: Path, *extra: str):
    """(student, kd loss computer, one training batch with clean features)."""
    from lhotse import CutSet

    from asr_kd.data.datamodule import AsrDataModule, DataConfig
    from asr_kd.data.tokenizer import Tokenizer
    from asr_kd.train.cli import parse_settings
    from asr_kd.train.loss_factory import build_loss_computer
    from asr_kd.train.run import build_model_config

    settings = parse_settings(_argv(corpus, corpus["dir"] / "unused", "--chunk-ms", "160", "--left-context-ms",
                                    "320", "--teacher-checkpoint", str(teacher), *extra))
    tok = Tokenizer(settings.run.bpe_model)
    torch.manual_seed(0)
    student = build_transducer(build_model_config(settings.model, tok.vocab_size))
    lc = build_loss_computer(settings.loss, student, tok, bpe_model=settings.run.bpe_model)
    dm = AsrDataModule(DataConfig(max_duration=4, num_buckets=2, num_workers=0, spec_augment=True,
                                  return_clean=True, seed=1))
    return student, lc, next(iter(dm.train_dataloader(CutSet.from_file(corpus["train"]))))


@pytest.mark.parametrize("stage,key", [("hidden", "kd_hidden_loss"), ("output", "kd_output_loss")])
def test_kd_stage_step_with_zipformer_pair(corpus, zteacher, stage, key) -> None:
    student, lc, batch = _kd_setup(corpus, zteacher, "--kd-stage", stage, "--kd-hidden-layers", "2:2,-1:-1")
    assert lc.projections is None  # same size: stack i has the same width on both sides
    student.train()
    lc.train(True)
    loss, info = lc(student, batch, 0)
    loss.backward()
    assert torch.isfinite(loss) and info[key] > 0
    assert all(p.grad is None for p in lc.teacher.parameters())


def test_kd_projections_per_stack_pair(corpus, zteacher) -> None:
    student, lc, batch = _kd_setup(corpus, zteacher, "--kd-stage", "hidden", "--kd-hidden-layers", "0:3,-1:-1")
    # tiny: stack 0 is 32 wide, stack 3 48, the encoder output 48
    assert [tuple(p.weight.shape) for p in lc.projections] == [(48, 32), (48, 48)]
    loss, _ = lc(student, batch, 0)
    loss.backward()
    with pytest.raises(ValueError, match=r"student encoder dim 32 != teacher dim 48 \(--kd-hidden-layers pair 0:3\)"):
        _kd_setup(corpus, zteacher, "--kd-stage", "hidden", "--kd-hidden-layers", "0:3", "--kd-projection", "false")
    with pytest.raises(ValueError, match="student layer 6 is out of range; the student encoder has 6 stacks"):
        _kd_setup(corpus, zteacher, "--kd-stage", "hidden", "--kd-hidden-layers", "6:0")


def test_mixed_pair_is_refused(corpus, tmp_path) -> None:
    conformer = _save_teacher(tmp_path / "conformer.pt", corpus, encoder_type="conformer")
    with pytest.raises(ValueError, match=r"teacher's encoder \(conformer.*student's \(zipformer\) give different "
                                         r"numbers of encoder frames"):
        _kd_setup(corpus, conformer, "--kd-stage", "output")


def test_teacher_cache_with_zipformer_teacher(corpus, zteacher, tmp_path) -> None:
    from asr_kd.bin.cache_teacher import main as cache_main
    from asr_kd.distill.cache import TeacherCache

    cache_main(["--teacher-checkpoint", str(zteacher), "--cuts", str(corpus["train"]), "--out-dir",
                str(tmp_path / "cache"), "--layers", "0,-1", "--shard-size", "5", "--progress", "false"])
    cache = TeacherCache(tmp_path / "cache")
    assert cache.layers == [0] and cache.meta["num_layers"] == 6 and cache.meta["encoder_dim"] == 48
    common = ("--kd-stage", "joint", "--kd-hidden-layers", "0:0,-1:-1")
    student, live, batch = _kd_setup(corpus, zteacher, *common)
    student2, cached, _ = _kd_setup(corpus, zteacher, *common, "--teacher-cache", str(tmp_path / "cache"))
    student2.load_state_dict(student.state_dict())
    for m in (student, student2):
        m.eval()
    ids = list(batch["cut_ids"])
    lens = student.encoder.output_lengths(batch["feature_lens"])
    out, hidden = cached.cache.batch(ids, lens, [0, 5], torch.device("cpu"))
    assert out.shape[2] == 48 and [h.shape[2] for h in hidden] == [32, 48]  # stack 0 is 32 wide
    with torch.no_grad():
        l1, i1 = live(student, batch, 100)
        l2, i2 = cached(student2, batch, 100)
    assert float(l1) == pytest.approx(float(l2), rel=1e-5, abs=1e-5)
    for k in ("kd_hidden_loss", "kd_output_loss", "kd_coverage"):
        assert i1[k] == pytest.approx(i2[k], rel=1e-5, abs=1e-6), k
