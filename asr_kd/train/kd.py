"""Distillation in the training step: stage 1 (hidden MSE), stage 2 (output KL), joint.

``build_kd_loss_computer(cfg, model, base, ...)`` (called by
``asr_kd.train.loss_factory.build_loss_computer`` when ``--kd-stage`` is given)
loads the frozen teacher, checks that it is compatible with the student and
returns a :class:`KDLossComputer`. One step, with N encoder frames in the
batch, L_s / L_p the student's simple / pruned losses summed over the batch,
a(step) / c(step) their warm-up weights (``asr_kd.train.losses``)::

    loss = (a L_s + c L_p) / N  +  lambda_h * L_h  +  lambda_o * L_o / N

(the loss-normalisation rule: transducer and output-KD terms are batch sums
divided by the batch's encoder frames N; the hidden MSE is a mean over frames
and dims)

    L_h = 1/P * sum_{pairs (i, j)} MSE(W_i h^S_i, h^T_j)          stages hidden, joint
    L_o = sum_b sum_{valid nodes of b} w_node KL(q_node || p_node)  stages output, joint

MSE is ``asr_kd.distill.hidden_mse_loss`` (mean over valid frames and dims)
and the P layer pairs are averaged, so lambda_h does not depend on how many
pairs are mapped. ``W_i`` is a learned Linear (student side only) when the
dims differ (``--kd-projection auto``), identity otherwise. L_o is
``asr_kd.distill.output_kd_loss`` on the pruned lattice: both joiners
evaluated on the same ranges (the student's by default), teacher smoothed.
``w_node`` is 1, or the range owner's occupancy (``--kd-occupancy true``),
times 0 at the lead-in nodes with ``--kd-mask-lead true``
(``asr_kd.distill.lead``: the nodes at u = 0, where the full-context
teacher already gives the first label its mass in the leading silence).

Nothing is computed twice: the student forward is the base loss computer's
(``forward_model``), giving the transducer losses, the student's ranges,
its pruned logits and hidden layers; the teacher runs its encoder once (or
reads it from ``--teacher-cache``), its decoder once, its joiner on the
student's ranges (``joint_on_ranges``) and, for logging the coverage, its
simple lattice (one (B,T,V)+(B,S+1,V) "trivial joiner" pass, the cost of the
student's simple loss).

Coverage = sum of the teacher's simple-lattice node occupancies on the KL
nodes / sum over all its valid nodes (= S_b + T_b per utterance): the share
of the teacher's alignment mass that the KL sees. A teacher is calibrated
near its own alignments only, so low coverage means the KL trains the
student on nodes where the teacher's targets are guesses.

Teacher interface (bring your own teacher). Any ``nn.Module`` with

    .encoder(features (B,T,F), feature_lens (B,), return_layers=[...])
        -> object with .out (B,T',D), .lens (B,), .hidden [(B,T',D), ...]
    .encoder.layers (len = number of layers; a Zipformer's stacks), .encoder.output_dim,
    .encoder.subsampling_factor (must equal the student's: same frame rate),
    .encoder.output_lengths (must equal the student's: same encoder frames per utterance)
    .decoder(y (B,S+1) int64, blank-prefixed) -> (B,S+1,Dd)
    .joint_on_ranges(encoder_out, decoder_out, ranges (B,T',R)) -> (B,T',R,V)
    .simple_am_proj, .simple_lm_proj  (encoder/decoder dims -> V; coverage and --kd-ranges teacher)
    .blank_id, .vocab_size            (must equal the student's)

and the student's tokenizer and feature front end can be passed to
:class:`KDLossComputer` directly; ``build_kd_loss_computer`` loads an
``asr_kd`` checkpoint and checks tokenizer and features from its metadata.

Encoders. Teacher and student may each be a Conformer or a Zipformer
(``asr_kd.models.encoders``) as long as they give the same number of encoder
frames per utterance: a Zipformer pair or a Conformer pair. A mixed pair is
refused at start-up (the Conformer gives (T - 3) // 4 frames, the Zipformer
(T - 13) // 4, and their frames do not cover the same audio). Layer indices
of a Zipformer are its stacks (stack i's output averaged to 25 Hz, d_i
wide); the last index is the encoder output (max d_i wide). Projections are
sized per layer pair (``hidden_dims``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from asr_kd import rnnt
from asr_kd.data.features import check_feature_config, feature_config_dict
from asr_kd.data.tokenizer import file_sha256
from asr_kd.distill import delay_frames, hidden_mse_loss, lead_mask, output_kd_loss_with_stats
from asr_kd.distill.cache import MissingCutError, TeacherCache
from asr_kd.models.encoders import hidden_dims, layer_unit
from asr_kd.models.transducer import node_occupancy, valid_nodes
from asr_kd.models.checkpoint import load_checkpoint, load_model
from asr_kd.train.kd_config import KDConfig, resolve_layer
from asr_kd.train.loss_computer import LossComputer
from asr_kd.train.losses import TransducerLossComputer, batch_to_device

__all__ = [
    "KDConfig",
    "KDLossComputer",
    "build_kd_loss_computer",
    "check_teacher_compatible",
    "load_teacher",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- teacher


def check_teacher_compatible(teacher_ckpt: dict[str, Any], teacher_path: str, student: nn.Module,
                             teacher: nn.Module, bpe_model: str, feature_config: dict[str, Any]) -> None:
    """ValueError unless teacher and student share tokenizer, front end, vocabulary, frame rate and frame count.

    Args:
      teacher_ckpt: the teacher checkpoint dict (bpe_sha256, feature_config).
      teacher_path: its path (named in the errors).
      student / teacher: the two models.
      bpe_model: the student's --bpe-model file.
      feature_config: the student's ``feature_config_dict()``.
    """
    where = f"--teacher-checkpoint {teacher_path}"
    t_sha, s_sha = teacher_ckpt.get("bpe_sha256"), file_sha256(bpe_model)
    if t_sha != s_sha:
        raise ValueError(
            f"teacher and student tokenizers differ: {where} was trained with "
            f"{teacher_ckpt.get('bpe_model')} (sha256 {t_sha}), the student uses --bpe-model {bpe_model} "
            f"(sha256 {s_sha}); lattices would not align"
        )
    t_feat = teacher_ckpt.get("feature_config")
    if t_feat is None:
        raise ValueError(f"{where} has no feature_config; cannot check the feature front end")
    try:
        check_feature_config(t_feat, feature_config, f"teacher {teacher_path} vs student")
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    pairs = [
        ("vocabulary size", teacher.vocab_size, student.vocab_size),
        ("blank id", teacher.blank_id, student.blank_id),
        ("subsampling factor (frame rate)", teacher.encoder.subsampling_factor, student.encoder.subsampling_factor),
    ]
    for what, t, s in pairs:
        if t != s:
            raise ValueError(f"teacher {what} {t} ({where}) != student {what} {s}")
    probe = torch.arange(0, 400)  # feature frames: every remainder mod 4 and both receptive fields
    t_len, s_len = teacher.encoder.output_lengths(probe), student.encoder.output_lengths(probe)
    if not torch.equal(t_len, s_len):
        i = int((t_len != s_len).nonzero()[0, 0])
        raise ValueError(
            f"the teacher's encoder ({_encoder_name(teacher)}, {where}) and the student's "
            f"({_encoder_name(student)}) give different numbers of encoder frames (e.g. {int(t_len[i])} vs "
            f"{int(s_len[i])} for {i} feature frames), so their frames cannot be paired; distil a conformer "
            "student from a conformer teacher and a zipformer student from a zipformer teacher"
        )


def _encoder_name(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "encoder_type", type(model.encoder).__name__))


def load_teacher(path: str, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """Frozen teacher from an asr_kd checkpoint: eval mode, requires_grad False, on ``device``.

    A causal (chunk-wise) teacher is accepted with a warning naming the file.
    """
    ckpt = load_checkpoint(path)
    teacher = load_model(path, device)
    freeze(teacher)
    if teacher.encoder.cfg.causal:
        log.warning("--teacher-checkpoint %s is a chunk-wise (causal) model: the method expects a full-context "
                    "teacher (trained with --causal false); its targets carry no future context", path)
    return teacher, {k: ckpt.get(k) for k in ("bpe_model", "bpe_sha256", "feature_config", "model_config")}


def freeze(module: nn.Module) -> nn.Module:
    """eval mode and requires_grad False for every parameter (the teacher is never trained)."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _pick_layers(encoder_out: Tensor, hidden: Sequence[Tensor], requested: Sequence[int], wanted: Sequence[int],
                 last: int) -> list[Tensor]:
    """Tensors of ``wanted`` layers: the last layer is the encoder output, others come from ``hidden``.

    ``hidden[k]`` is the output of layer ``requested[k]`` (the encoder's ``return_layers``).
    """
    by_layer = dict(zip(requested, hidden))
    return [encoder_out if i == last else by_layer[i] for i in wanted]


def _pad_symbols(tokens: Sequence[Sequence[int]], blank_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(B, S) blank-padded int64 labels and their lengths (B,)."""
    lens = [len(t) for t in tokens]
    sym = torch.full((len(tokens), max(lens, default=0)), blank_id, dtype=torch.int64)
    for i, t in enumerate(tokens):
        if t:
            sym[i, : len(t)] = torch.as_tensor(list(t), dtype=torch.int64)
    return sym.to(device), torch.as_tensor(lens, dtype=torch.int64, device=device)


# --------------------------------------------------------------------------- loss computer


class KDLossComputer(LossComputer):
    """Transducer loss + distillation terms (see the module docstring).

    Trainable state (``LossComputer`` hooks): the base's (``ctc_head``) and the
    projections, named ``kd_projections`` (checkpoint state ``{"base": ...,
    "projections": ...}``). The teacher is never trained, saved or synchronised.

    Args:
      base: the student's ``TransducerLossComputer`` (transducer loss, tokens, warm-ups).
      teacher: the frozen teacher (see "Teacher interface"); kept eval, no grad.
      cfg: KDConfig.
      student: the student model (layer counts, dims, device of the projections).
      cache: optional TeacherCache (then the teacher encoder is not run in training).
    """

    def __init__(self, base: TransducerLossComputer, teacher: nn.Module, cfg: KDConfig, student: nn.Module,
                 cache: Optional[TeacherCache] = None) -> None:
        self.base = base
        self.cfg = cfg
        self.cache = cache
        # Not an nn.Module attribute of anything the trainer registers: the teacher
        # never reaches the optimiser, DDP or checkpoints.
        self.teacher = freeze(teacher)
        device = next(student.parameters()).device
        s_layers, t_layers = len(student.encoder.layers), len(teacher.encoder.layers)
        s_unit, t_unit = layer_unit(student.encoder), layer_unit(teacher.encoder)
        self.student_layers = [resolve_layer(s, s_layers, "student", s_unit) for s, _ in cfg.hidden_layers]
        self.teacher_layers = [resolve_layer(t, t_layers, "teacher", t_unit) for _, t in cfg.hidden_layers]
        # The last index means the encoder output (after the encoder's final norm: what the
        # joiner sees); the others are layer (Zipformer: stack) outputs, requested via return_layers.
        self.student_last, self.teacher_last = s_layers - 1, t_layers - 1
        self.student_request = sorted({i for i in self.student_layers if i != self.student_last})
        self.teacher_request = sorted({i for i in self.teacher_layers if i != self.teacher_last})
        # (student dim, teacher dim) of every layer pair: a Zipformer's stacks differ in width
        s_dims, t_dims = hidden_dims(student.encoder), hidden_dims(teacher.encoder)
        dims = [(s_dims[s], t_dims[t]) for s, t in zip(self.student_layers, self.teacher_layers)]
        differ = [(pair, d) for pair, d in zip(cfg.hidden_layers, dims) if d[0] != d[1]]
        if cfg.uses_hidden and cfg.projection == "false" and differ:
            (s, t), (ds, dt) = differ[0]
            raise ValueError(
                f"--kd-projection false but the student encoder dim {ds} != teacher dim {dt} "
                f"(--kd-hidden-layers pair {s}:{t}); use --kd-projection auto"
            )
        use_proj = cfg.uses_hidden and (cfg.projection == "true" or (cfg.projection == "auto" and bool(differ)))
        self.projections: Optional[nn.ModuleList] = None
        if use_proj:
            self.projections = nn.ModuleList(nn.Linear(ds, dt) for ds, dt in dims).to(device)
        self.needs_clean_features = cfg.teacher_input == "clean"
        self._training = True
        self._warned_fallback = False

    # ----------------------------------------------------------- hooks of the training loop

    def trainable_modules(self) -> dict[str, nn.Module]:
        """The base's (CTC head) and the projections. Never the teacher."""
        own = {"kd_projections": self.projections} if self.projections is not None else {}
        return {**self.base.trainable_modules(), **own}

    def state_dict(self) -> dict[str, Any]:
        """Base state + projections; the teacher is not saved (it is reloaded from its checkpoint)."""
        sd: dict[str, Any] = {"base": self.base.state_dict()}
        if self.projections is not None:
            sd["projections"] = self.projections.state_dict()
        return sd

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        self.base.load_state_dict(sd.get("base", {}))
        if self.projections is not None and "projections" in sd:
            self.projections.load_state_dict(sd["projections"])

    def carry_state_dict(self, sd: Mapping[str, Any], where: str) -> None:
        """The base's CTC head, and the projections when the other run has them with the same shapes."""
        self.base.carry_state_dict(sd, where)
        if self.projections is not None and sd.get("projections"):
            try:
                self.projections.load_state_dict(sd["projections"])
                log.info("--continue-from: KD projections carried from %s", where)
            except RuntimeError:
                log.warning("--continue-from: KD projections of %s do not fit this run's; they start fresh", where)

    def train(self, mode: bool = True) -> None:
        self._training = bool(mode)
        self.base.train(mode)
        if self.projections is not None:
            self.projections.train(mode)
        self.teacher.eval()  # always: dropout off, deterministic targets

    @property
    def training(self) -> bool:
        return self._training

    # ----------------------------------------------------------- teacher side

    def _teacher_encoder(self, batch: dict[str, Any], device: torch.device, student_lens: Optional[Tensor],
                         ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Teacher encoder output (B,T',D), lens (B,), hidden layers: from the cache or live."""
        layers = self.teacher_layers if self.cfg.uses_hidden else []
        if self.cache is not None and student_lens is not None:
            ids = list(batch["cut_ids"])
            try:
                out, hidden = self.cache.batch(ids, student_lens, layers, device)
                return out, student_lens, hidden  # hidden[k] is layer layers[k] (last = out)
            except MissingCutError:
                # Validation sets are often not cached; the teacher is loaded anyway.
                if self.training:
                    raise
                if not self._warned_fallback:
                    log.warning("validation cuts are not in the teacher cache: running the teacher live on them")
                    self._warned_fallback = True
        key = "clean_features" if self.cfg.teacher_input == "clean" else "features"
        if key not in batch:
            raise ValueError(
                f"--kd-teacher-input {self.cfg.teacher_input} needs batch[{key!r}] "
                "(the data module must be built with return_clean=True)"
            )
        feats, lens = batch_to_device(batch, device, (key, "feature_lens"))
        request = self.teacher_request if self.cfg.uses_hidden else []
        with torch.no_grad():
            enc = self.teacher.encoder(feats, lens, return_layers=request)
        return enc.out, enc.lens, _pick_layers(enc.out, enc.hidden, request, layers, self.teacher_last)

    def teacher_lattice(self, t_enc: Tensor, symbols: Tensor, boundary: Tensor,
                         ) -> tuple[Tensor, Tensor, Tensor]:
        """Teacher decoder output (B,S+1,Dd) and its simple-lattice occupancies (px_grad, py_grad)."""
        lm_scale, am_scale = self.base.cfg.lm_scale, self.base.cfg.am_scale
        with torch.no_grad():
            blank = torch.full((symbols.size(0), 1), self.teacher.blank_id, dtype=torch.int64, device=symbols.device)
            t_dec = self.teacher.decoder(torch.cat((blank, symbols), dim=1))
            lm = self.teacher.simple_lm_proj(t_dec).float()
            am = self.teacher.simple_am_proj(t_enc).float()
            with torch.autocast(device_type=t_enc.device.type, enabled=False):
                _, (px_grad, py_grad) = rnnt.rnnt_loss_smoothed(
                    lm=lm, am=am, symbols=symbols, termination_symbol=self.teacher.blank_id,
                    lm_only_scale=lm_scale, am_only_scale=am_scale, boundary=boundary,
                    reduction="sum", return_grad=True,
                )  # fmt: skip
        return t_dec, px_grad, py_grad

    # ----------------------------------------------------------- the step

    def __call__(self, model: nn.Module, batch: dict[str, Any], step: int) -> tuple[Tensor, dict[str, float]]:
        cfg = self.cfg
        device = next(model.parameters()).device
        tokens = self.base.tokens(batch)
        if "tokens" not in batch:
            batch = dict(batch, tokens=tokens)  # encode the texts once
        student_lens = None
        if self.cache is not None:
            (feature_lens,) = batch_to_device(batch, device, ("feature_lens",))
            student_lens = model.encoder.output_lengths(feature_lens).to(device)

        t_enc, t_lens, t_hidden = self._teacher_encoder(batch, device, student_lens)
        if cfg.teacher_delay_frames:  # every teacher target below comes from the delayed frames
            t_enc = delay_frames(t_enc, cfg.teacher_delay_frames)
            t_hidden = [delay_frames(h, cfg.teacher_delay_frames) for h in t_hidden]
        teacher_ranges = px_grad = py_grad = t_dec = None
        if cfg.uses_output:
            symbols, sym_lens = _pad_symbols(tokens, self.teacher.blank_id, device)
            boundary = torch.zeros(len(tokens), 4, dtype=torch.int64, device=device)
            boundary[:, 2], boundary[:, 3] = sym_lens, t_lens
            t_dec, px_grad, py_grad = self.teacher_lattice(t_enc, symbols, boundary)
            if cfg.ranges == "teacher":
                teacher_ranges = rnnt.get_rnnt_prune_ranges(px_grad, py_grad, boundary, self.base.cfg.prune_range)

        out = self.base.forward_model(
            model, batch, step, return_layers=self.student_request if cfg.uses_hidden else (), ranges=teacher_ranges
        )
        if out.encoder_out.shape[1] != t_enc.shape[1] or not torch.equal(out.encoder_lens, t_lens.to(device)):
            raise ValueError(
                f"student and teacher encoder lengths differ ({out.encoder_lens.tolist()} vs "
                f"{t_lens.tolist()}) for cuts {list(batch.get('cut_ids', []))[:8]}: frame rates or inputs differ"
            )
        loss, info = self.base.transducer_loss(out, step)
        info["transducer_loss"] = info["loss"]
        frames = out.num_frames.to(torch.float32).clamp(min=1.0)

        if cfg.uses_hidden:
            terms = []
            s_hidden = _pick_layers(out.encoder_out, out.hidden, self.student_request, self.student_layers,
                                    self.student_last)
            for i, (s_h, t_h) in enumerate(zip(s_hidden, t_hidden)):
                if self.projections is not None:
                    s_h = self.projections[i](s_h)
                terms.append(hidden_mse_loss(s_h, t_h.to(s_h.dtype), out.encoder_lens))
            l_h = torch.stack(terms).mean()
            loss = loss + cfg.hidden_scale * l_h
            info["kd_hidden_loss"] = float(l_h.detach())

        if cfg.uses_output:
            assert t_dec is not None and px_grad is not None and py_grad is not None
            with torch.no_grad():
                t_logits = self.teacher.joint_on_ranges(t_enc, t_dec, out.ranges)
                t_occ = node_occupancy(px_grad, py_grad, out.ranges, out.boundary)
            if cfg.occupancy:
                weights = t_occ if cfg.ranges == "teacher" else out.node_occupancy
            else:
                weights = None
            if cfg.mask_lead:  # no teacher target in the lead-in (asr_kd.distill.lead)
                keep = lead_mask(out.ranges, out.boundary)
                weights = keep if weights is None else weights * keep
                valid = valid_nodes(out.ranges, out.boundary)  # padded frames are neither masked nor kept
                info["kd_lead_masked_share"] = float(((1 - keep) * valid).sum()) / max(float(valid.sum()), 1.0)
            kl, stats = output_kd_loss_with_stats(
                out.logits, t_logits, out.ranges, out.boundary, smoothing=cfg.smoothing, reduction="sum",
                symbols=out.symbols, occupancy=weights, distribution=cfg.distribution,
                blank_id=int(model.blank_id), **cfg.smooth_opts(),
            )  # fmt: skip
            loss = loss + cfg.output_scale * kl / frames
            total_mass = float((out.boundary[:, 2] + out.boundary[:, 3]).sum().clamp(min=1))
            info.update(
                kd_output_loss=float(kl.detach()) / float(frames),
                kd_teacher_entropy=float(stats.teacher_entropy_before),
                kd_teacher_entropy_smoothed=float(stats.teacher_entropy_after),
                kd_alpha_mean=float(stats.alpha_mean),
                kd_alpha_min_share=float(stats.alpha_min_share),
                kd_smoothed_share=float(stats.smoothed_share),
                kd_coverage=float(t_occ.sum()) / total_mass,
            )
        info["loss"] = float(loss.detach())
        return loss, info


# --------------------------------------------------------------------------- construction


def build_kd_loss_computer(cfg: KDConfig, model: nn.Module, base: TransducerLossComputer, *, bpe_model: str,
                           on_the_fly_feats: bool = False) -> KDLossComputer:
    """Load and check the teacher of ``cfg`` and wrap ``base`` (see module docstring).

    ``bpe_model``: the student's --bpe-model file (the teacher must share it);
    ``on_the_fly_feats``: the student's --on-the-fly-feats (checked against a --teacher-cache).
    """
    path = str(cfg.teacher_checkpoint)
    if not Path(path).is_file():
        raise ValueError(f"--teacher-checkpoint {path} does not exist")
    device = next(model.parameters()).device
    teacher, meta = load_teacher(path, device)
    check_teacher_compatible(meta, path, model, teacher, bpe_model, feature_config_dict())
    cache = None
    if cfg.teacher_cache:
        cache = TeacherCache(cfg.teacher_cache)
        t_layers = len(teacher.encoder.layers)
        t_unit = layer_unit(teacher.encoder)
        cache.check(file_sha256(path), path, [resolve_layer(t, t_layers, "teacher", t_unit)
                                              for _, t in cfg.hidden_layers] if cfg.uses_hidden else [],
                    feature_config_dict(), on_the_fly_feats=on_the_fly_feats)
    lc = KDLossComputer(base, teacher, cfg, model, cache=cache)
    n_teacher = sum(p.numel() for p in teacher.parameters())
    log.info("distillation: stage %s, teacher %s (%.2f M parameters, frozen)%s; %s", cfg.stage, path,
             n_teacher / 1e6, f", cache {cfg.teacher_cache}" if cache else "", cfg)
    return lc
