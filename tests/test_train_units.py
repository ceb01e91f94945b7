"""asr_kd.train building blocks: schedule, loss scales, checkpoints, averaging, NaN guard."""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from asr_kd.train.cli import build_parser, int_list, sanitize_args, str2bool
from asr_kd.atomic import atomic_torch_save
from asr_kd.models.checkpoint import average_state_dicts, load_checkpoint, load_model
from asr_kd.train.checkpoint import epoch_checkpoints, get_rng_state, latest_checkpoint, prune_checkpoints, set_rng_state
from asr_kd.train.distributed import DistInfo
from asr_kd.train.loss_computer import LossComputer
from asr_kd.train.losses import TransducerLossConfig, loss_scales
from asr_kd.train.optim import OptimConfig, WarmupDecaySchedule, build_optimizer
from asr_kd.train.tracking import MetricsTracker
from asr_kd.train.trainer import BadBatchError, Trainer, TrainerConfig


# ---------------------------------------------------------------- schedule / optimiser


def test_schedule_formula_and_shape() -> None:
    cfg = OptimConfig(lr=1e-3, warmup_batches=10, lr_batches=100.0, lr_epochs=2.0)
    f = WarmupDecaySchedule.lr_at
    assert f(cfg, 0, 0) == pytest.approx(1e-4)  # (0+1)/W
    assert f(cfg, 9, 0) == pytest.approx(1e-3 * (1 + 9 / 100) ** -0.5)
    warm = [f(cfg, b, 0) for b in range(10)]
    assert all(a < b for a, b in zip(warm, warm[1:]))  # rises during warm-up
    tail = [f(cfg, b, 0) for b in range(10, 400)]
    assert all(a > b for a, b in zip(tail, tail[1:]))  # then decays
    assert f(cfg, 300, 0) == pytest.approx(1e-3 * 4 ** -0.5)
    assert f(cfg, 300, 2) == pytest.approx(f(cfg, 300, 0) * 2 ** -0.5)
    inf = OptimConfig(lr=1e-3, warmup_batches=1, lr_batches=math.inf, lr_epochs=math.inf)
    assert f(inf, 10_000, 50) == pytest.approx(1e-3)


def test_eden_schedule_formula() -> None:
    cfg = OptimConfig(lr=1e-3, warmup_batches=10, lr_batches=100.0, lr_epochs=2.0, schedule="eden")
    f = WarmupDecaySchedule.lr_at
    assert f(cfg, 0, 0) == pytest.approx(1e-4)  # same warm-up
    assert f(cfg, 100, 0) == pytest.approx(1e-3 * 2 ** -0.25)
    assert f(cfg, 300, 2) == pytest.approx(1e-3 * 10 ** -0.25 * 2 ** -0.25)
    # flatter than the inverse-sqrt form early on, the same b^-0.5 slope far out
    plain = OptimConfig(lr=1e-3, warmup_batches=10, lr_batches=100.0, lr_epochs=2.0)
    assert f(cfg, 50, 0) > f(plain, 50, 0)
    assert f(cfg, 10**6, 0) / f(cfg, 4 * 10**6, 0) == pytest.approx(2.0, rel=1e-3)
    with pytest.raises(ValueError, match="schedule"):
        OptimConfig(schedule="cosine")


def test_schedule_applies_and_restores() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    cfg = OptimConfig(lr=1e-2, warmup_batches=4)
    opt = build_optimizer(model.parameters(), cfg)
    # matrices decayed, vectors not
    groups = {g["weight_decay"]: len(g["params"]) for g in opt.param_groups}
    assert groups == {cfg.weight_decay: 1, 0.0: 3}
    sched = WarmupDecaySchedule(opt, cfg)
    for _ in range(7):
        sched.step_batch()
    sched.step_epoch()
    assert opt.param_groups[0]["lr"] == pytest.approx(WarmupDecaySchedule.lr_at(cfg, 7, 1))
    other = WarmupDecaySchedule(build_optimizer(model.parameters(), cfg), cfg)
    other.load_state_dict(sched.state_dict())
    assert other.optimizer.param_groups[1]["lr"] == pytest.approx(sched.get_lr())


def test_loss_scales_warmup() -> None:
    cfg = TransducerLossConfig(simple_loss_scale=0.5, pruned_scale_start=0.1, warm_step=100)
    assert loss_scales(0, cfg) == pytest.approx((1.0, 0.1))
    assert loss_scales(100, cfg) == pytest.approx((0.5, 1.0))
    assert loss_scales(10_000, cfg) == pytest.approx((0.5, 1.0))
    assert loss_scales(50, cfg) == pytest.approx((0.75, 0.55))  # smoothstep(1/2) = 1/2
    seq = [loss_scales(s, cfg) for s in range(0, 101, 5)]
    assert all(a[0] >= b[0] and a[1] <= b[1] for a, b in zip(seq, seq[1:]))
    assert loss_scales(7, TransducerLossConfig(warm_step=0)) == pytest.approx((0.5, 1.0))


def test_arg_types() -> None:
    assert int_list("16, 8,32") == (16, 8, 32)
    assert int_list("-1") == (-1,)
    with pytest.raises(argparse.ArgumentTypeError):
        int_list("a,b")
    assert str2bool("True") and not str2bool("0")
    with pytest.raises(argparse.ArgumentTypeError):
        str2bool("maybe")
    ns = argparse.Namespace(a=(1, 2), b=Path("x"), c=None)
    assert sanitize_args(ns) == {"a": [1, 2], "b": "x", "c": None}


_TRAIN_REQUIRED = ["--exp-dir", "e", "--cuts-train", "c.jsonl.gz", "--bpe-model", "b.model"]


def _train_error(capsys, *argv: str) -> str:
    """The one stderr line after the usage of a refused training command line (argparse exit 2)."""
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(_TRAIN_REQUIRED + list(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("usage:") and err[-1].startswith("python -m asr_kd.bin.train: error: ")
    return err[-1]


def test_chunk_and_left_context_are_milliseconds_stored_as_encoder_frames(capsys) -> None:
    """--chunk-ms / --left-context-ms land in chunk_size / left_context in 40 ms frames, as the
    frame-valued flags did: settings, checkpoint ``args`` and --resume comparisons are unchanged."""
    args = build_parser().parse_args(_TRAIN_REQUIRED + ["--chunk-ms", "320,160", "--left-context-ms", "1280"])
    assert (args.chunk_size, args.left_context) == ((8, 4), (32,))
    assert not hasattr(args, "chunk_ms") and not hasattr(args, "left_context_ms")
    rec = sanitize_args(args)
    assert (rec["chunk_size"], rec["left_context"]) == ([8, 4], [32])
    args = build_parser().parse_args(_TRAIN_REQUIRED + ["--chunk-ms", "640,-1", "--left-context-ms", "2560,0,-1"])
    assert (args.chunk_size, args.left_context) == ((16, -1), (64, 0, -1))
    args = build_parser().parse_args(_TRAIN_REQUIRED)
    assert (args.chunk_size, args.left_context) == (None, None)  # the preset's

    line = _train_error(capsys, "--chunk-ms", "300")
    assert "--chunk-ms" in line and "300 ms is not a multiple of 40 ms" in line and "280 or 320" in line
    line = _train_error(capsys, "--left-context-ms", "1300")
    assert "--left-context-ms" in line and "1280 or 1320" in line
    assert "nearest valid: 40" in _train_error(capsys, "--chunk-ms", "20")
    assert "-1 (full context)" in _train_error(capsys, "--chunk-ms", "0")
    assert "-1 (unlimited)" in _train_error(capsys, "--left-context-ms", "-40")


def test_frame_spellings_are_refused_naming_the_ms_options(capsys) -> None:
    """icefall's --chunk-size 16 is 320 ms (50 Hz frames); the old frame-valued spellings are refused."""
    line = _train_error(capsys, "--chunk-size", "8")
    assert "--chunk-size is not accepted" in line and "--chunk-ms" in line and "--chunk-ms 320" in line
    assert "icefall's --chunk-size 16" in line
    line = _train_error(capsys, "--left-context", "32")
    assert "--left-context is not accepted" in line and "--left-context-ms 1280" in line


# ---------------------------------------------------------------- checkpoints


def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "epoch-1.pt"
    atomic_torch_save({"model": {"w": torch.ones(3)}}, path)
    before = path.read_bytes()
    real_save = torch.save

    def crash(obj, f, *a, **k):  # write part of the data, then die
        real_save({"model": {"w": torch.zeros(1000)}}, f)
        f.flush()
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"model": {"w": torch.zeros(3)}}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before  # old file intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-1.pt"]  # no temp left behind
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))


def test_load_checkpoint_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="bad.pt"):
        load_checkpoint(bad)


def test_rng_roundtrip_through_checkpoint(tmp_path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.standard_normal()  # populate numpy's cached gaussian flag paths
    state = get_rng_state()
    atomic_torch_save({"model": {}, "rng": [state]}, tmp_path / "r.pt")
    expect = (random.random(), float(np.random.standard_normal()), float(torch.rand(())))
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"][0])
    got = (random.random(), float(np.random.standard_normal()), float(torch.rand(())))
    assert got == expect


def test_average_equals_manual_and_load_model(tmp_path) -> None:
    from asr_kd.models import build_transducer, preset_config

    cfg = preset_config("tiny", "teacher", vocab_size=11)
    paths, states = [], []
    for i in range(3):
        torch.manual_seed(i)
        model = build_transducer(cfg)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        paths.append(atomic_torch_save({"model": model.state_dict(), "model_config": cfg.to_dict(),
                                        "bpe_sha256": "x", "epoch": i + 1}, tmp_path / f"epoch-{i + 1}.pt"))
    avg = average_state_dicts(states)
    for k, v in avg.items():
        if torch.is_floating_point(v):
            manual = sum(s[k].double() for s in states) / 3
            assert torch.equal(v, manual.to(v.dtype))
        else:
            assert torch.equal(v, states[-1][k])
    assert epoch_checkpoints(tmp_path, None, 2) == paths[1:]
    with pytest.raises(FileNotFoundError):
        epoch_checkpoints(tmp_path, 3, 4)
    model = load_model(paths[1:], "cpu")
    assert not model.training
    sd = model.state_dict()
    for k in sd:
        if torch.is_floating_point(sd[k]):
            assert torch.equal(sd[k], ((states[1][k].double() + states[2][k].double()) / 2).float())
    from asr_kd.bin.average import main as average_main

    out = tmp_path / "avg.pt"
    assert average_main(["--exp-dir", str(tmp_path), "--avg", "3", "--out", str(out)]) == 0
    ck = load_checkpoint(out)
    assert ck["averaged_from"] == ["epoch-1.pt", "epoch-2.pt", "epoch-3.pt"]
    for k, v in avg.items():
        assert torch.equal(ck["model"][k], v)


def test_latest_and_prune(tmp_path) -> None:
    for b in (4, 8, 12):
        atomic_torch_save({"model": {}, "batch_idx_train": b, "epoch_done": False}, tmp_path / f"checkpoint-{b}.pt")
    atomic_torch_save({"model": {}, "batch_idx_train": 12, "epoch_done": True}, tmp_path / "epoch-2.pt")
    assert latest_checkpoint(tmp_path).name == "epoch-2.pt"  # ties go to the epoch checkpoint
    assert [p.name for p in prune_checkpoints(tmp_path, 2)] == ["checkpoint-4.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-12.pt", "checkpoint-8.pt", "epoch-2.pt"]
    assert latest_checkpoint(tmp_path / "missing") is None


def test_metrics_tracker_frame_weighting() -> None:
    t = MetricsTracker()
    t.update({"frames": 10.0, "loss": 1.0})
    t.update({"frames": 30.0, "loss": 3.0, "kd": 2.0})
    avg = t.reduce().averages()
    assert avg["loss"] == pytest.approx((10 * 1 + 30 * 3) / 40)
    assert avg["kd"] == pytest.approx(30 * 2 / 40)


# ---------------------------------------------------------------- NaN guard (toy model)


class _ToyLoss(LossComputer):
    """loss = mean((w x - y)^2) per frame; NaN when the batch says so."""

    def __call__(self, model, batch, step):
        x = batch["x"]
        loss = ((model(x) - 1.0) ** 2).mean()
        if batch.get("nan"):
            loss = loss * float("nan")
        return loss, {"frames": float(x.shape[0]), "loss": float(loss.detach())}


def _toy_trainer(tmp_path, max_bad: int) -> Trainer:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    cfg = OptimConfig(lr=1e-2, warmup_batches=1)
    opt = build_optimizer(model.parameters(), cfg)
    return Trainer(model, _ToyLoss(), opt, WarmupDecaySchedule(opt, cfg),
                   TrainerConfig(exp_dir=tmp_path, num_epochs=1, max_bad_batches=max_bad, progress=False),
                   DistInfo(0, 1, 0, torch.device("cpu"), None))


def test_nan_guard_skips_and_aborts(tmp_path, caplog) -> None:
    tr = _toy_trainer(tmp_path, max_bad=3)
    x = torch.randn(5, 4)
    good, bad = {"x": x, "cut_ids": ["a"]}, {"x": x, "nan": True, "cut_ids": ["bad-cut"]}
    tr.train_step(good)
    before = [p.detach().clone() for p in tr.model.parameters()]
    res = tr.train_step(bad)
    assert res.skipped and tr.bad_in_row == 1
    assert all(torch.equal(a, b) for a, b in zip(before, tr.model.parameters()))  # no update
    assert all(p.grad is None for p in tr.model.parameters())  # grads cleared
    assert "bad-cut" in caplog.text
    tr.train_step(bad)
    assert not tr.train_step(good).skipped and tr.bad_in_row == 0  # a good batch resets the count
    tr.train_step(bad), tr.train_step(bad)
    with pytest.raises(BadBatchError, match="3 consecutive batches"):
        tr.train_step(bad)
    assert tr.batch_idx_train == 6  # skipped batches advance the counters (not the aborting one)


def test_nan_gradient_is_skipped(tmp_path) -> None:
    tr = _toy_trainer(tmp_path, max_bad=5)
    with torch.no_grad():
        tr.model.weight.fill_(float("inf"))  # finite inputs, inf output -> inf loss
    res = tr.train_step({"x": torch.randn(2, 4)})
    assert res.skipped


def test_ctc_auxiliary_loss_term_parameters_and_state() -> None:
    """--ctc-scale w adds w * CTC_sum / N; the head is trainable, saved, and its gradient reaches the encoder."""
    from asr_kd.models import build_transducer, preset_config
    from asr_kd.train.loss_factory import LossSettings, build_loss_computer
    from asr_kd.train.losses import TransducerLossComputer

    torch.manual_seed(0)
    model = build_transducer(preset_config("tiny", "teacher", vocab_size=12))
    tokens = [[3, 4, 5], [6, 7]]
    batch = {"features": torch.randn(2, 120, 80), "feature_lens": torch.tensor([120, 97]),
             "texts": ["x", "y"], "tokens": tokens}
    settings = LossSettings(TransducerLossConfig(warm_step=0), ctc_scale=0.3)
    lc = build_loss_computer(settings, model, tokenizer=argparse.Namespace(encode=None))
    assert isinstance(lc, TransducerLossComputer)
    head = list(lc.parameters())
    assert len(head) == 2 and head[0].shape == (12, model.encoder.output_dim)
    assert [n for n, _ in lc.named_parameters()] == ["ctc_head.weight", "ctc_head.bias"]  # checkpoint names
    model.eval()
    loss, info = lc(model, batch, step=10)
    out = model(batch["features"], batch["feature_lens"], tokens, prune_range=5, lm_scale=0.25)
    frames = float(out.num_frames)
    log_probs = lc.ctc_head(out.encoder_out).log_softmax(-1)
    ctc = sum(
        nn.functional.ctc_loss(log_probs[b, : out.encoder_lens[b]], torch.tensor(tokens[b]),
                               out.encoder_lens[b: b + 1], torch.tensor([len(tokens[b])]), reduction="sum")
        for b in range(2)
    )
    expected = (0.5 * out.simple_loss + out.pruned_loss + 0.3 * ctc) / frames
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert info["ctc_loss"] == pytest.approx(float(ctc.detach()) / frames, rel=1e-5)
    # the CTC term alone sends gradient to the encoder
    model.zero_grad()
    lc.ctc_loss(model.encoder(batch["features"], batch["feature_lens"]).out,
                model.encoder.output_lengths(batch["feature_lens"]), tokens).backward()
    assert model.encoder.layers[0].ff1.linear1.weight.grad.abs().sum() > 0
    assert model.decoder.embedding.weight.grad is None or model.decoder.embedding.weight.grad.abs().sum() == 0
    sd = lc.state_dict()
    lc2 = build_loss_computer(settings, model, tokenizer=argparse.Namespace(encode=None))
    lc2.load_state_dict(sd)
    torch.testing.assert_close(lc2.ctc_head.weight, lc.ctc_head.weight)
    with pytest.raises(ValueError, match="ctc_scale"):
        TransducerLossComputer(lambda t: [], TransducerLossConfig(), ctc_head=None, ctc_scale=0.5)


def test_setup_logging_gives_each_run_its_own_file(tmp_path) -> None:
    """Two training runs in one process: each writes its own log file, one stderr handler in all."""
    import logging

    from asr_kd.train.run import setup_logging

    log = logging.getLogger("asr_kd.test")
    for name in ("a", "b"):
        setup_logging(tmp_path / name, rank=0)
        log.info("hello from run %s", name)
    root = logging.getLogger()
    assert sum(getattr(h, "_asr_kd", None) == "stream" for h in root.handlers) == 1
    assert sum(getattr(h, "_asr_kd", None) == "file" for h in root.handlers) == 1
    for h in root.handlers:
        h.flush()
    assert "hello from run a" in (tmp_path / "a/log/train-rank0.log").read_text()
    b_text = (tmp_path / "b/log/train-rank0.log").read_text()
    assert "hello from run b" in b_text and "run a" not in b_text


def test_delay_penalty_reaches_both_losses_from_warm_step() -> None:
    """--delay-penalty d: off before warm_step, then both transducer losses are k2's penalised ones."""
    from asr_kd import rnnt
    from asr_kd.models import build_transducer, preset_config
    from asr_kd.train.loss_factory import LossSettings, build_loss_computer
    from asr_kd.train.losses import TransducerLossComputer

    torch.manual_seed(0)
    model = build_transducer(preset_config("tiny", "student", vocab_size=12)).eval()
    tokens = [[3, 4, 5, 6], [6, 7]]
    batch = {"features": torch.randn(2, 120, 80), "feature_lens": torch.tensor([120, 97]), "tokens": tokens}
    d = 0.01
    with torch.no_grad():
        plain = model(batch["features"], batch["feature_lens"], tokens, prune_range=5, lm_scale=0.25)
        pen = model(batch["features"], batch["feature_lens"], tokens, prune_range=5, lm_scale=0.25, delay_penalty=d)
        simple_ref = rnnt.rnnt_loss_smoothed(
            lm=model.simple_lm_proj(pen.decoder_out), am=model.simple_am_proj(pen.encoder_out), symbols=pen.symbols,
            termination_symbol=0, lm_only_scale=0.25, am_only_scale=0.0, boundary=pen.boundary, delay_penalty=d,
            reduction="sum")
        pruned_ref = rnnt.rnnt_loss_pruned(pen.logits, pen.symbols, pen.ranges, 0, pen.boundary, delay_penalty=d,
                                           reduction="sum")
    torch.testing.assert_close(pen.simple_loss, simple_ref)
    torch.testing.assert_close(pen.pruned_loss, pruned_ref)
    assert abs(float(pen.simple_loss - plain.simple_loss)) > 1e-3

    settings = LossSettings(TransducerLossConfig(warm_step=5, delay_penalty=d))
    lc = build_loss_computer(settings, model, tokenizer=argparse.Namespace(encode=None))
    assert isinstance(lc, TransducerLossComputer) and lc.cfg.delay_penalty == d
    frames = float(plain.num_frames)
    with torch.no_grad():
        _, before = lc(model, batch, step=4)
        _, after = lc(model, batch, step=5)
    assert before["simple_loss"] == pytest.approx(float(plain.simple_loss) / frames, rel=1e-5)
    assert after["simple_loss"] == pytest.approx(float(pen.simple_loss) / frames, rel=1e-5)
    assert after["pruned_loss"] == pytest.approx(float(pen.pruned_loss) / frames, rel=1e-5)
    with pytest.raises(ValueError, match="--delay-penalty"):
        TransducerLossConfig(delay_penalty=-0.1)


def test_disk_full_names_the_path_and_keeps_the_old_file(tmp_path) -> None:
    import errno
    import io

    from asr_kd.atomic import DiskFullError, atomic_torch_save, atomic_write

    target = tmp_path / "epoch-3.pt"
    torch.save({"model": {"w": torch.ones(3)}}, target)
    old = target.read_bytes()

    def full(f) -> None:
        f.write(b"x" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError) as e:
        atomic_write(target, full)
    assert str(e.value) == f"No space left on device: cannot write {target} (earlier files are intact)"

    class FullFile(io.RawIOBase):  # torch.save wraps the OSError in its own RuntimeError
        def writable(self) -> bool:
            return True

        def write(self, b) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    import asr_kd.atomic as atomic_mod

    real_open = open

    def fake_open(path, mode="r", *a, **k):
        return FullFile() if str(path).endswith(f".tmp.{__import__('os').getpid()}") else real_open(path, mode, *a, **k)

    atomic_mod.open = fake_open  # type: ignore[attr-defined]
    try:
        with pytest.raises(DiskFullError, match=f"^No space left on device: cannot write {target}"):
            atomic_torch_save({"model": {"w": torch.zeros(1000)}}, target)
    finally:
        del atomic_mod.open
    assert target.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["epoch-3.pt"]  # no temp file left


def test_frontend_scale_flag_resolves_against_the_model_width() -> None:
    from asr_kd.train.cli import build_parser, parse_settings
    from asr_kd.train.run import build_model_config

    base = ["--cuts-train", "a", "--cuts-valid", "b", "--bpe-model", "c", "--exp-dir", "d"]
    scale = lambda *extra: build_model_config(parse_settings(base + list(extra)).model, 60).encoder.frontend_scale  # noqa: E731
    assert scale() == 1.0
    assert scale("--frontend-scale", "sqrt-d") == pytest.approx(144 ** 0.5)  # small: d_model 144
    assert scale("--frontend-scale", "sqrt-d", "--model-size", "tiny", "--causal", "true") == pytest.approx(8.0)
    assert scale("--frontend-scale", "2.5") == 2.5
    with pytest.raises(SystemExit):
        build_parser().parse_args(base + ["--frontend-scale", "0"])


def test_num_layers_flag_overrides_the_preset_depth() -> None:
    from asr_kd.models import build_transducer
    from asr_kd.train.cli import parse_settings
    from asr_kd.train.run import build_model_config

    base = ["--cuts-train", "a", "--cuts-valid", "b", "--bpe-model", "c", "--exp-dir", "d", "--model-size", "tiny"]
    cfg = lambda *extra: build_model_config(parse_settings(base + list(extra)).model, 60)  # noqa: E731
    assert cfg().encoder.num_layers == 2  # the tiny preset's own depth
    deeper = cfg("--num-layers", "3")
    assert deeper.encoder.num_layers == 3 and len(build_transducer(deeper).encoder.layers) == 3
    with pytest.raises(ValueError, match="--num-layers must be >= 1"):
        cfg("--num-layers", "0")


def test_eta_meter_follows_the_audio_rate() -> None:
    from asr_kd.train.eta import EtaMeter, format_duration

    meter = EtaMeter(epoch_audio_s=1000.0, min_elapsed_s=60.0)
    meter.start_epoch(batches_before=0, now=0.0)
    for _ in range(10):
        meter.update(20.0)  # 200 s of audio ...
    assert meter.estimate(epochs_after=2, now=30.0) is None  # ... but within the first minute: no estimate
    # 200 s of audio in 100 s: rate 2; 800 s left in the epoch -> 400 s; two more epochs -> +1000 s
    assert meter.estimate(epochs_after=2, now=100.0) == pytest.approx((400.0, 1400.0))
    meter.start_epoch(batches_before=5, now=0.0)  # resumed after 5 batches (counted at 20 s each)
    for _ in range(10):
        meter.update(20.0)
    assert meter.estimate(epochs_after=0, now=100.0) == pytest.approx(((1000.0 - 300.0) / 2.0, 350.0))
    assert EtaMeter(epoch_audio_s=0.0).estimate(1, now=1e9) is None  # epoch size unknown
    assert [format_duration(s) for s in (42, 192, 3725)] == ["42s", "3m12s", "1h02m"]


def test_trainer_logs_an_eta(tmp_path, caplog) -> None:
    import logging

    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    cfg = OptimConfig(lr=1e-2, warmup_batches=1)
    opt = build_optimizer(model.parameters(), cfg)
    tr = Trainer(model, _ToyLoss(), opt, WarmupDecaySchedule(opt, cfg),
                 TrainerConfig(exp_dir=tmp_path, num_epochs=3, progress=False, log_interval=2, epoch_audio_s=40.0),
                 DistInfo(0, 1, 0, torch.device("cpu"), None))
    tr.eta.min_elapsed_s = 0.0
    batches = [{"x": torch.randn(5, 4), "feature_lens": torch.tensor([500, 500]), "cut_ids": ["a"]}] * 2
    with caplog.at_level(logging.INFO, logger="asr_kd.train.trainer"):
        tr.train_one_epoch(batches)
    lines = [r.getMessage() for r in caplog.records if "batch 2" in r.getMessage()]
    assert lines and "; ETA epoch" in lines[0] and ", run " in lines[0]
