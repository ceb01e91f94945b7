#!/usr/bin/env python3
"""How fast does an encoder start to use the audio?  A CTC-only learning-curve probe.

    python tools/plateau_probe.py --cuts-train data/fbank/cuts_train.jsonl.gz \\
        --cuts-dev data/fbank/cuts_dev.jsonl.gz --bpe-model data/lang_bpe_256/bpe.model \\
        --arch conformer --minutes 20 --out probe-conformer.tsv

Trains ``encoder -> Linear -> CTC`` for a fixed wall-clock budget and writes a
learning curve (TSV: minutes, updates, audio hours seen, learning rate, dev CTC
loss per encoder frame, dev greedy-CTC WER) every ``--eval-every`` minutes
(evaluation time is excluded from the budget).  Two encoders of the same size:

* ``conformer``: the package's :class:`asr_kd.models.ConformerEncoder`
  (the ``--model-size`` teacher configuration, full context);
* ``transformer``: a plain reference: the same Conv2d front end (with the same
  global feature normalisation) followed by ``torch.nn.TransformerEncoder``
  pre-norm layers with sinusoidal positions, so a slow start that both share
  is a property of the data or the optimisation, not of our Conformer blocks.

A transducer learns its prediction network (a language model) long before
its encoder uses the audio, so its loss hides an encoder that has not started;
a CTC head has no language model and shows that moment directly.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Dict, List

import torch
from torch import Tensor, nn


def sinusoid(t: int, d: int) -> Tensor:
    pos = torch.arange(t, dtype=torch.float32)[:, None]
    inv = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, dtype=torch.float32) / d)
    pe = torch.zeros(t, d)
    pe[:, 0::2] = torch.sin(pos * inv)
    pe[:, 1::2] = torch.cos(pos * inv)
    return pe


class PlainTransformer(nn.Module):
    """Conv2dSubsampling + pre-norm nn.TransformerEncoder; (B,T,F) -> (B,T',D)."""

    def __init__(self, num_features: int, d_model: int, num_layers: int, num_heads: int, ff_dim: int,
                 channels: int, dropout: float) -> None:
        super().__init__()
        from asr_kd.models.subsampling import Conv2dSubsampling

        self.subsampling = Conv2dSubsampling(num_features, d_model, channels, dropout)
        layer = nn.TransformerEncoderLayer(d_model, num_heads, ff_dim, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.output_dim = d_model

    def forward(self, feats: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        x = self.subsampling(feats)
        out_lens = self.subsampling.output_lengths(lens)
        x = x + sinusoid(x.size(1), x.size(2)).to(x)
        pad = torch.arange(x.size(1))[None, :] >= out_lens[:, None]
        return self.norm(self.layers(x, src_key_padding_mask=pad)), out_lens


class OurConformer(nn.Module):
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.output_dim = encoder.output_dim

    @property
    def subsampling(self) -> nn.Module:
        return self.encoder.subsampling

    def forward(self, feats: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        out = self.encoder(feats, lens)
        return out.out, out.lens


class FrontendOut(nn.Module):
    """Wraps the front end: ``"none"`` leaves it, ``"ln"`` adds a LayerNorm on its
    output, ``"scale"`` multiplies it by sqrt(d_model)."""

    def __init__(self, frontend: nn.Module, kind: str, d_model: int) -> None:
        super().__init__()
        self.frontend, self.kind = frontend, kind
        self.norm = nn.LayerNorm(d_model) if kind == "ln" else nn.Identity()
        self.scale = math.sqrt(d_model) if kind == "scale" else 1.0

    def forward(self, feats: Tensor) -> Tensor:
        return self.norm(self.frontend(feats)) * self.scale

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.frontend, name)


def build(args, vocab: int) -> nn.Module:
    from asr_kd.models import preset_config
    from asr_kd.models.conformer import ConformerEncoder

    overrides = {"num_layers": args.num_layers} if args.num_layers else {}
    cfg = preset_config(args.preset, "teacher", vocab, dropout=args.dropout, **overrides).encoder
    if args.arch == "conformer":
        model: nn.Module = OurConformer(ConformerEncoder(cfg))
        model.encoder.subsampling = FrontendOut(model.encoder.subsampling, args.frontend_out, cfg.d_model)
    else:
        model = PlainTransformer(cfg.num_features, cfg.d_model, cfg.num_layers, cfg.num_heads, cfg.ff_dim,
                                 cfg.subsampling_channels, args.dropout)
        model.subsampling = FrontendOut(model.subsampling, args.frontend_out, cfg.d_model)
    return model


def greedy_ctc(log_probs: Tensor, lens: Tensor, blank: int) -> List[List[int]]:
    best = log_probs.argmax(-1)
    out = []
    for b in range(best.size(0)):
        seq, prev = [], -1
        for t in best[b, : int(lens[b])].tolist():
            if t != prev and t != blank:
                seq.append(t)
            prev = t
        out.append(seq)
    return out


def ctc_forward(model: nn.Module, head: nn.Module, batch: dict, tok) -> tuple[Tensor, Tensor, Tensor]:
    """(summed CTC loss of the batch, log-probs (B,T',V), encoder lengths (B,))."""
    enc, lens = model(batch["features"], batch["feature_lens"])
    lp = head(enc).log_softmax(-1)
    ys = tok.encode(batch["texts"])
    tgt = torch.tensor([t for y in ys for t in y], dtype=torch.long)
    tl = torch.tensor([len(y) for y in ys])
    loss = nn.functional.ctc_loss(lp.transpose(0, 1), tgt, lens, tl, blank=tok.blank_id,
                                  reduction="sum", zero_infinity=True)
    return loss, lp, lens


def evaluate(model, head, loader, tok) -> Dict[str, float]:
    from asr_kd.metrics.wer import utterance_errors

    model.eval()
    loss_sum, frames, errs, words = 0.0, 0, 0, 0
    with torch.no_grad():
        for batch in loader:
            loss, lp, lens = ctc_forward(model, head, batch, tok)
            loss_sum += float(loss)
            frames += int(lens.sum())
            for text, hyp in zip(batch["texts"], greedy_ctc(lp, lens, tok.blank_id)):
                e = utterance_errors(text.split(), tok.decode(hyp).split())
                errs += e.errors
                words += len(text.split())
    model.train()
    return {"dev_ctc_per_frame": loss_sum / max(frames, 1), "dev_wer": 100.0 * errs / max(words, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cuts-train", required=True, help="training CutSet with features (required)")
    p.add_argument("--cuts-dev", required=True, help="dev CutSet with features (required)")
    p.add_argument("--bpe-model", required=True, help="sentencepiece model (required)")
    p.add_argument("--arch", choices=("conformer", "transformer"), default="conformer",
                   help="encoder under test (default conformer)")
    p.add_argument("--model-size", dest="preset", default="small", help="Conformer model size (default small)")
    p.add_argument("--minutes", type=float, default=20.0, help="training wall-clock budget (default 20)")
    p.add_argument("--eval-every", type=float, default=2.0, help="minutes between dev evaluations (default 2)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate (default 2e-3)")
    p.add_argument("--warmup", type=int, default=300, help="linear warm-up batches (default 300)")
    p.add_argument("--max-duration", type=float, default=40.0, help="seconds of audio per batch (default 40)")
    p.add_argument("--dropout", type=float, default=0.1, help="dropout (default 0.1)")
    p.add_argument("--spec-augment", type=int, default=0, help="1 = SpecAugment on (default 0)")
    p.add_argument("--frontend-out", choices=("none", "ln", "scale"), default="none",
                   help="what follows the front end: nothing, a LayerNorm, or x sqrt(d_model) (default none)")
    p.add_argument("--num-layers", type=int, default=0, help="override the preset's layer count (default 0: keep)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument("--out", type=Path, required=True, help="TSV learning curve to write (required)")
    args = p.parse_args()

    from lhotse import load_manifest_lazy

    from asr_kd.data import Tokenizer
    from asr_kd.data.datamodule import AsrDataModule, DataConfig, filter_short_cuts
    from asr_kd.data.stats import estimate_feature_stats

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tok = Tokenizer(args.bpe_model)
    train = filter_short_cuts(load_manifest_lazy(args.cuts_train), tok).to_eager()
    dev = load_manifest_lazy(args.cuts_dev).to_eager()
    model = build(args, len(tok))
    mean, std = estimate_feature_stats(train)
    model.subsampling.set_feature_stats(mean, std)
    head = nn.Linear(model.output_dim, len(tok))
    params = list(model.parameters()) + list(head.parameters())
    nparams = sum(q.numel() for q in params)
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.98), weight_decay=1e-2)
    dm = AsrDataModule(DataConfig(max_duration=args.max_duration, num_workers=0,
                                  spec_augment=bool(args.spec_augment), seed=args.seed))
    loader = dm.train_dataloader(train)
    dev_loader = AsrDataModule(DataConfig(max_duration=100, num_workers=0)).valid_dataloader(dev)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = ["minutes\tupdates\taudio_hours\tlr\ttrain_ctc_per_frame\tdev_ctc_per_frame\tdev_wer"]
    train_loss, train_frames = 0.0, 0
    print(f"{args.arch}: {nparams / 1e6:.2f} M parameters", flush=True)
    trained, updates, audio_s, next_eval, epoch = 0.0, 0, 0.0, args.eval_every * 60, 0
    done = False
    while not done:
        dm.sampler.set_epoch(epoch)
        for batch in loader:
            t0 = time.time()
            lr = args.lr * min(1.0, (updates + 1) / args.warmup)
            for g in opt.param_groups:
                g["lr"] = lr
            loss_sum, _, lens = ctc_forward(model, head, batch, tok)
            loss = loss_sum / lens.sum()
            train_loss += float(loss) * float(lens.sum())
            train_frames += int(lens.sum())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            updates += 1
            audio_s += float(batch["feature_lens"].sum()) / 100.0
            trained += time.time() - t0
            if trained >= next_eval or trained >= args.minutes * 60:
                m = evaluate(model, head, dev_loader, tok)
                rows.append(f"{trained / 60:.2f}\t{updates}\t{audio_s / 3600:.2f}\t{lr:.2e}\t"
                            f"{train_loss / max(train_frames, 1):.4f}\t{m['dev_ctc_per_frame']:.4f}\t{m['dev_wer']:.2f}")
                train_loss, train_frames = 0.0, 0
                print(rows[-1], flush=True)
                args.out.write_text("\n".join(rows) + "\n")
                next_eval += args.eval_every * 60
                if trained >= args.minutes * 60:
                    done = True
                    break
        epoch += 1


if __name__ == "__main__":
    main()
