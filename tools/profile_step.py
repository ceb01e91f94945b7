#!/usr/bin/env python3
"""Where one training step of a transducer spends its time, on real batches.

Takes the training CLI's own flags (``python -m asr_kd.bin.train --help``;
``--exp-dir`` is not needed) and times, per batch of the real training
loader (``--max-duration``, bucketing, features from storage):

* **data**: producing the batch in this process (what a loader worker does on
  another core; with 2 training jobs on 2 cores the workers share them);
* **encoder fwd** / **encoder bwd**: the Conformer (front end included);
* **decoder**: the prediction network, forward + backward;
* **simple loss**: the am/lm projections, the smoothed simple RNN-T loss and
  the pruning ranges, forward + backward;
* **joiner + pruned loss**: the joiner on the pruned nodes (B, T, R, V) and
  the pruned RNN-T loss, forward + backward;
* **CTC** (with ``--ctc-scale > 0``): head, log-softmax, CTC loss, fwd + bwd;
* **optimizer**: gradient clipping and the AdamW step.

The step is cut at the encoder and decoder outputs: the heads run on
detached copies, each head's backward runs alone, and the collected output
gradients are then sent through the decoder and the encoder. The gradients
are those of the whole loss (a sum's gradient is the sum of the terms'),
which the tool checks against the training loss computer on the first batch.
Medians over ``--profile-batches`` batches after ``--profile-warmup``.

    python tools/profile_step.py --cuts-train data/small/fbank/cuts_train.jsonl.gz \\
        --cuts-valid data/small/fbank/cuts_dev.jsonl.gz --bpe-model data/small/lang_bpe_256/bpe.model \\
        --model-size small --max-duration 40 --ctc-scale 0.3 --spec-augment false --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asr_kd import rnnt  # noqa: E402
from asr_kd.data.datamodule import AsrDataModule, DataConfig, filter_short_cuts  # noqa: E402
from asr_kd.data.tokenizer import Tokenizer  # noqa: E402
from asr_kd.models import build_transducer  # noqa: E402
from asr_kd.train.cli import build_parser, settings_from_args  # noqa: E402
from asr_kd.train.loss_factory import build_loss_computer  # noqa: E402
from asr_kd.train.losses import batch_to_device, loss_scales  # noqa: E402
from asr_kd.train.optim import OptimConfig, build_optimizer  # noqa: E402
from asr_kd.train.run import build_model_config  # noqa: E402

PARTS = ("data", "encoder fwd", "encoder bwd", "decoder", "simple loss", "joiner + pruned loss", "CTC", "optimizer")


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def profile_step(model, lc, opt, batch: dict, step: int, clip: float) -> tuple[dict[str, float], float]:
    """One training step cut into PARTS (seconds each, data excluded) and its loss per frame."""
    t: dict[str, float] = {}
    device = next(model.parameters()).device
    features, feature_lens = batch_to_device(batch, device, ("features", "feature_lens"))
    tokens = lc.tokens(batch)
    opt.zero_grad(set_to_none=True)
    enc, t["encoder fwd"] = timed(lambda: model.encoder(features, feature_lens))
    enc_leaf = enc.out.detach().requires_grad_()
    frames = enc.lens.sum().to(torch.float32)
    symbols, symbol_lens = model._symbols(tokens, device)
    blank_col = torch.full((symbols.size(0), 1), model.blank_id, dtype=torch.int64, device=device)
    dec_out, t_dec_fwd = timed(lambda: model.decoder(torch.cat((blank_col, symbols), dim=1)))
    dec_leaf = dec_out.detach().requires_grad_()
    boundary = torch.zeros(symbols.size(0), 4, dtype=torch.int64, device=device)
    boundary[:, 2], boundary[:, 3] = symbol_lens, enc.lens
    a, c = loss_scales(step, lc.cfg)

    def simple():
        lm, am = model.simple_lm_proj(dec_leaf), model.simple_am_proj(enc_leaf)
        loss, (px_grad, py_grad) = rnnt.rnnt_loss_smoothed(
            lm=lm, am=am, symbols=symbols, termination_symbol=model.blank_id, lm_only_scale=lc.cfg.lm_scale,
            am_only_scale=lc.cfg.am_scale, boundary=boundary, reduction="sum", return_grad=True)
        (a * loss / frames).backward()
        return loss, rnnt.get_rnnt_prune_ranges(px_grad, py_grad, boundary, lc.cfg.prune_range)

    (simple_loss, ranges), t["simple loss"] = timed(simple)

    def pruned():
        logits = model.joint_on_ranges(enc_leaf, dec_leaf, ranges)
        loss = rnnt.rnnt_loss_pruned(logits=logits, symbols=symbols, ranges=ranges,
                                     termination_symbol=model.blank_id, boundary=boundary, reduction="sum")
        (c * loss / frames).backward()
        return loss

    pruned_loss, t["joiner + pruned loss"] = timed(pruned)
    total = a * simple_loss.detach() + c * pruned_loss.detach()
    t["CTC"] = 0.0
    if lc.ctc_scale > 0:
        def ctc():
            loss = lc.ctc_loss(enc_leaf, enc.lens, tokens)
            (lc.ctc_scale * loss / frames).backward()
            return loss

        ctc_loss, t["CTC"] = timed(ctc)
        total = total + lc.ctc_scale * ctc_loss.detach()
    _, t_dec_bwd = timed(lambda: dec_out.backward(dec_leaf.grad))
    t["decoder"] = t_dec_fwd + t_dec_bwd
    _, t["encoder bwd"] = timed(lambda: enc.out.backward(enc_leaf.grad))
    params = [p for g in opt.param_groups for p in g["params"]]

    def step_fn():
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()

    _, t["optimizer"] = timed(step_fn)
    return t, float(total / frames)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    for action in parser._actions:  # the tool writes nothing: --exp-dir is not needed
        if action.dest == "exp_dir":
            action.required, action.default = False, "."
    parser.add_argument("--profile-batches", type=int, default=20, help="batches timed (default: %(default)s)")
    parser.add_argument("--profile-warmup", type=int, default=3, help="batches before timing (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    args = parser.parse_args(argv)
    settings = settings_from_args(args)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tokenizer = Tokenizer(args.bpe_model)
    cfg = build_model_config(settings.model, tokenizer.vocab_size)
    model = build_transducer(cfg).train()
    lc = build_loss_computer(settings.loss, model, tokenizer, bpe_model=args.bpe_model,
                             on_the_fly_feats=args.on_the_fly_feats)
    lc.train(True)
    opt = build_optimizer(list(model.parameters()) + list(lc.parameters()), OptimConfig(lr=args.lr, warmup_batches=1))
    from lhotse import CutSet

    cuts = filter_short_cuts(CutSet.from_file(args.cuts_train), tokenizer)
    dm = AsrDataModule(DataConfig(max_duration=args.max_duration, spec_augment=args.spec_augment, num_workers=0,
                                  seed=args.seed))
    it = iter(dm.train_dataloader(cuts))
    rows: dict[str, list[float]] = {p: [] for p in PARTS}
    audio_s: list[float] = []
    n = args.profile_warmup + args.profile_batches
    for i in range(n):
        batch, t_data = timed(lambda: next(it))
        rng = torch.get_rng_state()  # dropout and the dynamic chunk draw the same in both
        if i == 0:  # the cut step computes the training loss: check it against the loss computer
            with torch.no_grad():
                ref = float(lc(model, batch, args.warm_step)[0])
            torch.set_rng_state(rng)
        t, loss = profile_step(model, lc, opt, batch, args.warm_step, settings.trainer.max_grad_norm)
        if i == 0:
            if abs(loss - ref) > 1e-3 * max(1.0, abs(ref)):
                sys.exit(f"profile_step.py: the cut step's loss {loss:.5f} differs from the loss computer's {ref:.5f}")
            print(f"check: cut step loss {loss:.5f} = loss computer's {ref:.5f}", file=sys.stderr)
        if i >= args.profile_warmup:
            t["data"] = t_data
            for p in PARTS:
                rows[p].append(t[p])
            audio_s.append(float(batch["feature_lens"].sum()) / 100.0)
        print(f"batch {i + 1}/{n}: {sum(t.values()):.3f} s", file=sys.stderr)
    med = {p: statistics.median(v) for p, v in rows.items()}
    step = sum(med.values())
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model size {args.preset}, causal={args.causal}, {n_params / 1e6:.2f} M parameters, {args.threads} thread(s), "
          f"median of {args.profile_batches} batches of {statistics.median(audio_s):.1f} s of audio "
          f"(--max-duration {args.max_duration})\n")
    print("| part | ms per batch | share |\n|---|---|---|")
    for p in PARTS:
        print(f"| {p} | {1000 * med[p]:.0f} | {100 * med[p] / step:.0f}% |")
    print(f"| **step** | {1000 * step:.0f} | 100% |\n")
    print(f"seconds of audio per second of step (= hours of audio per hour): {statistics.median(audio_s) / step:.1f}")


if __name__ == "__main__":
    main()
