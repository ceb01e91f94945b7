"""asr_kd.train.scaled_adam.ScaledAdam: learning, scale-relative steps, scalars, clipping, exact state round trip,
and its selection through OptimConfig and the training CLI."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from asr_kd.train.optim import OPTIMIZERS, OptimConfig, WarmupDecaySchedule, build_optimizer
from asr_kd.train.scaled_adam import ScaledAdam

BASE_ARGV = ["--cuts-train", "a", "--cuts-valid", "b", "--bpe-model", "c", "--exp-dir", "d"]


class _Net(nn.Module):
    """2-layer MLP with a learnt scalar output gain (float64)."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
        self.gain = nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x) * self.gain


def _data(n_batches: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(6, 1, generator=g, dtype=torch.float64)
    out = []
    for _ in range(n_batches):
        x = torch.randn(32, 6, generator=g, dtype=torch.float64)
        out.append((x, torch.tanh(0.5 * (x @ w))))
    return out


def _train(model: nn.Module, opt: torch.optim.Optimizer, batches) -> list[float]:
    losses = []
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def _net(seed: int = 0) -> _Net:
    torch.manual_seed(seed)
    return _Net().double()


def test_lowers_the_loss_of_a_small_mlp() -> None:
    model = _net()
    losses = _train(model, ScaledAdam(model.parameters(), lr=0.03), _data(200))
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert math.isfinite(last) and last < 0.1 * first, (first, last)


def _first_update(weight_scale: float, opt_cls=ScaledAdam, **kw) -> torch.Tensor:
    torch.manual_seed(0)
    layer = nn.Linear(5, 3).double()
    with torch.no_grad():
        layer.weight.mul_(weight_scale)
    x = torch.randn(8, 5, dtype=torch.float64)
    opt = opt_cls(layer.parameters(), lr=0.01, **kw)
    before = layer.weight.detach().clone()
    ((layer(x) - 1.0) ** 2).mean().backward()
    opt.step()
    return layer.weight.detach() - before


def test_update_is_relative_to_the_tensor_rms() -> None:
    small, big = _first_update(1.0), _first_update(10.0)
    ratio = float(big.norm() / small.norm())
    assert ratio == pytest.approx(10.0, rel=1e-3)
    # first step: |v_hat| = g², so every element moves by (1 - beta1) * lr * rms(p)
    torch.manual_seed(0)
    rms = float(nn.Linear(5, 3).double().weight.detach().square().mean().sqrt())
    assert torch.allclose(small.abs(), torch.full_like(small, 0.1 * 0.01 * rms), rtol=1e-5)
    # AdamW's step does not depend on the tensor's scale
    adam = float(_first_update(10.0, torch.optim.Adam).norm() / _first_update(1.0, torch.optim.Adam).norm())
    assert adam == pytest.approx(1.0, rel=1e-3)


def test_scalars_use_the_scaled_lr_and_stay_bounded() -> None:
    s = nn.Parameter(torch.tensor(0.5, dtype=torch.float64))
    opt = ScaledAdam([s], lr=0.2, scalar_lr_scale=0.1, scalar_max=10.0)
    (-3.0 * s).backward()  # pushes s up
    opt.step()
    assert float(s.detach()) - 0.5 == pytest.approx((1 - 0.9) * 0.2 * 0.1, rel=1e-6)
    opt = ScaledAdam([s], lr=50.0, scalar_max=10.0)
    for sign in (1.0, -1.0):
        for _ in range(60):
            opt.zero_grad()
            (-sign * s).backward()
            opt.step()
            assert -10.0 <= float(s.detach()) <= 10.0
        assert float(s.detach()) == sign * 10.0


def _linear_probe(**kw):
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(4, 5, dtype=torch.float64))
    direction = torch.randn(4, 5, dtype=torch.float64)
    return w, direction, ScaledAdam([w], lr=0.01, **kw)


def _step_with_grad(opt, w, grad) -> None:
    opt.zero_grad()
    w.grad = grad.clone()
    opt.step()


def test_clipping_at_scale_times_median_and_nan_skip() -> None:
    w, direction, opt = _linear_probe(clipping_scale=2.0, clipping_update_period=100)
    g = torch.Generator().manual_seed(1)
    for i in range(100):
        _step_with_grad(opt, w, direction * (1.0 + 0.2 * float(torch.rand((), generator=g))))
        if i < 10:
            assert opt.clipping_info()["threshold"] == math.inf  # no clipping before step 10
    info = opt.clipping_info()
    assert info["step"] == 100 and len(info["history"]) == 100
    history = sorted(info["history"])
    median = 0.5 * (history[49] + history[50])
    v_before = opt.state[w]["exp_avg_sq"].clone()
    rms = float(w.detach().square().mean().sqrt())  # refreshed at this step (100 % 4 == 0)
    _step_with_grad(opt, w, 100.0 * direction)
    info = opt.clipping_info()
    assert info["threshold"] == pytest.approx(2.0 * median, rel=1e-12)
    assert info["last_norm"] == pytest.approx(float((100.0 * direction).norm()) * rms, rel=1e-9)
    assert info["last_norm"] > 50 * info["threshold"]
    assert info["last_norm"] * info["last_factor"] == pytest.approx(2.0 * median, rel=1e-9)
    # the clipped gradient is what the second moment saw
    clipped = 100.0 * direction * info["last_factor"]
    assert torch.allclose(opt.state[w]["exp_avg_sq"], 0.98 * v_before + 0.02 * clipped**2, rtol=1e-10)

    # a NaN gradient changes nothing but the skip counter
    params, state = w.detach().clone(), copy.deepcopy(opt.state_dict())
    bad = direction.clone()
    bad[0, 0] = math.nan
    _step_with_grad(opt, w, bad)
    assert torch.equal(w.detach(), params)
    after = opt.state_dict()
    assert after["state"][0].pop("clip_skipped") == state["state"][0].pop("clip_skipped") + 1
    _assert_same_optimizer_state(after, state)


def test_no_clipping_when_scale_is_none() -> None:
    w, direction, opt = _linear_probe(clipping_scale=None)
    for _ in range(30):
        _step_with_grad(opt, w, direction)
    _step_with_grad(opt, w, 1000.0 * direction)
    assert opt.clipping_info()["last_factor"] == 1.0 and opt.clipping_info()["threshold"] == math.inf


def _assert_same_optimizer_state(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        sa, sb = a["state"][i], b["state"][i]
        assert sa.keys() == sb.keys(), i
        for k in sa:
            if isinstance(sa[k], torch.Tensor):
                assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), (i, k)
            else:
                assert sa[k] == sb[k], (i, k)


def test_state_dict_round_trip_is_bit_identical() -> None:
    data = _data(50, seed=3)
    # many threshold updates, and clipping active at most steps (threshold: half the median)
    kw = dict(lr=0.03, size_update_period=4, clipping_update_period=8, clipping_scale=0.5)
    model = _net(1)
    opt = ScaledAdam(model.parameters(), **kw)
    _train(model, opt, data[:25])
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buf)
    _train(model, opt, data[25:])

    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    fresh = _net(2)  # other initial weights: everything must come from the checkpoint
    fresh.load_state_dict(saved["model"])
    fresh_opt = ScaledAdam(fresh.parameters(), **kw)
    fresh_opt.load_state_dict(saved["optimizer"])
    _train(fresh, fresh_opt, data[25:])

    for (name, a), b in zip(model.named_parameters(), fresh.parameters()):
        assert torch.equal(a, b), name
    _assert_same_optimizer_state(opt.state_dict(), fresh_opt.state_dict())
    info = opt.clipping_info()
    assert info["step"] == 50 and info["threshold"] < max(info["history"])  # clipping was active


def test_state_fits_what_continue_from_carries() -> None:
    """carry.py keeps a parameter's state only if every value is shapeless, 0-dim or of the parameter's shape."""
    model = _net()
    opt = ScaledAdam(model.parameters())
    _train(model, opt, _data(5))
    for p in model.parameters():
        for k, v in opt.state[p].items():
            assert not hasattr(v, "shape") or v.dim() == 0 or v.shape == p.shape, k


def test_refuses_another_optimizers_state() -> None:
    model = _net()
    adam = torch.optim.Adam(model.parameters())
    _train(model, adam, _data(2))
    with pytest.raises(ValueError, match="AdamW"):
        ScaledAdam(model.parameters()).load_state_dict(adam.state_dict())


def test_build_optimizer_selects_scaled_adam() -> None:
    assert OPTIMIZERS == ("adamw", "scaled-adam")
    model = _net()
    cfg = OptimConfig(optimizer="scaled-adam", lr=0.045, clipping_scale=3.0, warmup_batches=2)
    opt = build_optimizer(model.parameters(), cfg)
    assert isinstance(opt, ScaledAdam) and len(opt.param_groups) == 1
    assert opt.param_groups[0]["clipping_scale"] == 3.0 and "weight_decay" not in opt.param_groups[0]
    sched = WarmupDecaySchedule(opt, cfg)  # the schedule drives it like AdamW
    assert opt.param_groups[0]["lr"] == pytest.approx(0.045 / 2)
    sched.step_batch()
    assert opt.param_groups[0]["lr"] == pytest.approx(WarmupDecaySchedule.lr_at(cfg, 1, 0))
    off = build_optimizer(model.parameters(), OptimConfig(optimizer="scaled-adam", clipping_scale=0.0))
    assert off.param_groups[0]["clipping_scale"] is None
    assert isinstance(build_optimizer(model.parameters(), OptimConfig()), torch.optim.AdamW)
    with pytest.raises(ValueError, match="optimizer"):
        OptimConfig(optimizer="sgd")


def test_cli_selects_scaled_adam_and_turns_off_the_loop_clip() -> None:
    from asr_kd.train.cli import build_parser, parse_settings

    s = parse_settings(BASE_ARGV + ["--optimizer", "scaled-adam", "--clipping-scale", "3", "--lr", "0.045"])
    cfg = s.optim
    assert (cfg.optimizer, cfg.clipping_scale, cfg.lr) == ("scaled-adam", 3.0, 0.045)
    assert s.trainer.max_grad_norm == 0.0 and s.record["max_grad_norm"] == 0.0
    explicit = parse_settings(BASE_ARGV + ["--max-grad-norm", "7", "--optimizer", "scaled-adam"])
    assert explicit.trainer.max_grad_norm == 7.0 and explicit.record["max_grad_norm"] == 7.0
    plain = parse_settings(BASE_ARGV)
    assert plain.optim.optimizer == "adamw" and plain.trainer.max_grad_norm == 5.0 and plain.optim.clipping_scale == 2.0
    assert plain.record["max_grad_norm"] == 5.0
    with pytest.raises(SystemExit):
        build_parser().parse_args(BASE_ARGV + ["--optimizer", "sgd"])


def test_trainer_checkpoint_and_carry_with_scaled_adam(tmp_path) -> None:
    from asr_kd.train.carry import carry_training_state
    from asr_kd.atomic import atomic_torch_save
    from asr_kd.models.checkpoint import load_checkpoint
    from asr_kd.train.distributed import DistInfo
    from asr_kd.train.trainer import Trainer, TrainerConfig

    from asr_kd.train.loss_computer import LossComputer

    class _Loss(LossComputer):
        def __call__(self, model, batch, step):
            loss = ((model(batch["x"]) - batch["y"]) ** 2).mean()
            return loss, {"frames": float(batch["x"].shape[0]), "loss": float(loss.detach())}

    def trainer(seed: int) -> Trainer:
        model = _net(seed)
        cfg = OptimConfig(optimizer="scaled-adam", lr=0.03, warmup_batches=1, clipping_scale=0.5)
        opt = build_optimizer(model.parameters(), cfg)
        return Trainer(model, _Loss(), opt, WarmupDecaySchedule(opt, cfg),
                       TrainerConfig(exp_dir=tmp_path, num_epochs=2, max_grad_norm=0.0, progress=False),
                       DistInfo(0, 1, 0, torch.device("cpu"), None))

    batches = [{"x": x, "y": y} for x, y in _data(24, seed=5)]
    a = trainer(0)
    for b in batches[:12]:
        assert not a.train_step(b).skipped
    atomic_torch_save(a.state_dict(epoch_done=True), tmp_path / "epoch-1.pt")
    b_ = trainer(1)
    carry_training_state(b_, load_checkpoint(tmp_path / "epoch-1.pt"), "epoch-1.pt")
    for b in batches[12:]:
        a.train_step(b)
        b_.train_step(b)
    for p, q in zip(a.model.parameters(), b_.model.parameters()):
        assert torch.equal(p, q)
    _assert_same_optimizer_state(a.optimizer.state_dict(), b_.optimizer.state_dict())
    # a checkpoint of an AdamW run cannot continue into a ScaledAdam run: one clear error
    ckpt = load_checkpoint(tmp_path / "epoch-1.pt")
    ckpt["args"] = {"optimizer": "adamw"}
    with pytest.raises(ValueError, match="--optimizer adamw.*ScaledAdam"):
        carry_training_state(trainer(2), ckpt, "epoch-1.pt")


def test_cli_training_with_scaled_adam_resumes_exactly(tmp_path) -> None:
    """``python -m asr_kd.bin.train --optimizer scaled-adam``, interrupted after batch 3 and resumed, ends with
    the uninterrupted run's parameters and optimiser state bit for bit (conditions: tests/test_train_resume.py)."""
    import shutil

    from lhotse import NumpyFilesWriter

    from asr_kd.bin.train import train as train_main
    from asr_kd.data.features import lhotse_fbank_extractor
    from toy_corpus import make_synthetic_cuts, write_transcripts
    from asr_kd.data.tokenizer import train_bpe
    from asr_kd.models.checkpoint import load_checkpoint

    cuts = make_synthetic_cuts(tmp_path / "wav", num_cuts=10, max_words=4, seed=3)
    bpe = train_bpe(write_transcripts(cuts, tmp_path / "tr.txt"), tmp_path / "lang", vocab_size=20)
    feats = cuts.compute_and_store_features(lhotse_fbank_extractor(), tmp_path / "feats",
                                            storage_type=NumpyFilesWriter, progress_bar=False).to_eager()
    feats.to_file(tmp_path / "train.jsonl.gz")

    def argv(exp, *extra):
        return ["--exp-dir", str(exp), "--cuts-train", str(tmp_path / "train.jsonl.gz"), "--bpe-model", str(bpe),
                "--model-size", "tiny", "--causal", "true", "--chunk-ms", "160,320", "--left-context-ms", "320,-1",
                "--num-epochs", "2", "--max-duration", "4", "--num-buckets", "2", "--num-workers", "0",
                "--save-every-n", "3", "--warmup-batches", "2", "--warm-step", "4", "--progress", "false",
                "--tensorboard", "false", "--avg", "0", "--seed", "11",
                "--optimizer", "scaled-adam", "--lr", "0.045", *extra]

    train_main(argv(tmp_path / "ref"))
    exp = tmp_path / "exp"
    exp.mkdir()
    shutil.copy(tmp_path / "ref" / "checkpoint-3.pt", exp / "checkpoint-3.pt")
    train_main(argv(exp, "--resume"))
    a, b = load_checkpoint(tmp_path / "ref" / "epoch-2.pt"), load_checkpoint(exp / "epoch-2.pt")
    assert a["args"]["optimizer"] == "scaled-adam" and a["args"]["max_grad_norm"] == 0.0
    assert a["batch_idx_train"] == b["batch_idx_train"] > 3
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    _assert_same_optimizer_state(a["optimizer"], b["optimizer"])
