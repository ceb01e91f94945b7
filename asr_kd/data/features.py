"""The acoustic front end, defined once.

Every model in this project (teacher, student, baselines) and every runtime
(training from stored features, training with on-the-fly features, streaming
decoding, export) uses the log-mel filter bank described by :data:`FBANK_OPTS`.
Two implementations compute it:

* **lhotse** ``Fbank`` (a torch port of Kaldi's ``compute-fbank-feats``): used
  to compute features for storage (``python -m asr_kd.bin.compute_fbank``) and
  for on-the-fly features in the data loader;
* **kaldi-native-fbank** ``OnlineFbank`` (C++, incremental): used for streaming
  decoding and deployment, see :class:`OnlineFbank`.

Both are configured from :data:`FBANK_OPTS` by :func:`lhotse_fbank_extractor`
and :func:`knf_fbank_options`; ``tests/test_data_features.py`` checks that they
agree to 1e-3 (measured: ~1e-4) on the same waveform.

The math, for frame ``m`` of a waveform ``x`` in [-1, 1] (float, *not* the
int16 scale Kaldi uses; log energies are therefore 2·ln(32768) ≈ 20.8 lower than
Kaldi's):

1. window ``w_m = x[m·160 - 120 : m·160 + 280]`` (400 samples = 25 ms every
   160 = 10 ms, centred on ``m·160 + 80``); samples outside the signal are
   reflected at the edges (``snip_edges=False``), so an utterance of ``N``
   samples has ``floor((N + 80) / 160)`` frames, which is what lhotse's
   duration-to-frames conversion assumes;
2. remove the DC offset of ``w_m``, pre-emphasise
   ``w[i] -= 0.97·w[i-1]`` (``w[-1] := w[0]``), multiply by the Povey window
   (Hann raised to 0.85), zero-pad to 512 points;
3. power spectrum ``|FFT|²`` (257 bins), 80 triangular mel filters between
   20 Hz and 8000 - 400 = 7600 Hz (Kaldi's mel bank, no normalisation);
4. ``log(max(energy, ε))`` with ε = float32 machine epsilon (1.19e-7), so
   digital silence gives ln(ε) ≈ -15.94. No frame energy column
   (``use_energy=False``), which makes ``energy_floor`` and ``raw_energy``
   irrelevant; dither is 0, so features are a deterministic function of the
   samples.

Why ``snip_edges=False``: lhotse converts durations to frame counts assuming
it (``compute_num_frames``), cut manifests stay consistent with stored
features, and a streaming front end emits one frame per 10 ms of audio
(frames whose window reaches past the end of the available audio wait for
more input or for ``input_finished()``).

Sensitivity (max abs difference against lhotse when *one* knf option is left
at knf's default instead of being aligned; measured on a 1.2 s tone + noise
with a stretch of digital silence): ``high_freq`` 0 vs -400 → 2.8,
``low_freq`` 0 → 5.3, ``remove_dc_offset`` off → 2.8, ``preemph`` 0 → 8.1,
``window_type`` hamming → 5.4, ``round_to_power_of_two`` off → 6.4, log floor
1e-10 → 7.1 (silence), knf's default dither 3e-5 → 4.4 (silence);
``energy_floor`` and ``raw_energy`` → no change (no energy column).
Every one of these is therefore set explicitly below.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np
import torch

__all__ = [
    "FbankOptions",
    "FBANK_OPTS",
    "FEATURE_PAD_VALUE",
    "lhotse_fbank_extractor",
    "knf_fbank_options",
    "feature_config_dict",
    "check_feature_config",
    "compute_fbank",
    "OnlineFbank",
    "compute_online_fbank",
]


@dataclass(frozen=True)
class FbankOptions:
    """The front-end definition (values, not an implementation).

    Attributes are named after the physical quantity; the two implementations
    spell them differently (see :func:`lhotse_fbank_extractor` and
    :func:`knf_fbank_options`).
    """

    sampling_rate: int = 16000
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    num_mel_bins: int = 80
    low_freq: float = 20.0
    # Negative: offset from the Nyquist frequency (8000 - 400 = 7600 Hz).
    high_freq: float = -400.0
    dither: float = 0.0
    preemph_coeff: float = 0.97
    remove_dc_offset: bool = True
    window_type: str = "povey"
    round_to_power_of_two: bool = True
    snip_edges: bool = False
    use_energy: bool = False
    raw_energy: bool = True
    # Only used when use_energy is True (it is not); kept aligned anyway.
    energy_floor: float = 1e-10
    # Floor applied to mel energies before the log (float32 epsilon).
    log_floor: float = float(np.finfo(np.float32).eps)
    # Waveform scale the features are computed on: float samples in [-1, 1].
    sample_scale: str = "float[-1,1]"

    @property
    def frame_shift_s(self) -> float:
        return self.frame_shift_ms / 1000.0

    @property
    def frame_length_s(self) -> float:
        return self.frame_length_ms / 1000.0

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` samples (``snip_edges=False``):
        ``floor((N + shift/2) / shift)``."""
        shift = int(round(self.frame_shift_s * self.sampling_rate))
        return int((num_samples + shift // 2) // shift)


#: The one definition of the front end.
FBANK_OPTS = FbankOptions()

#: Value written into padded feature frames by the data loader (ln 1e-10): a
#: log-mel "energy" below anything speech or digital silence (ln ε ≈ -15.9)
#: produces. Decoders that pad the tail of an utterance use the same value.
FEATURE_PAD_VALUE: float = math.log(1e-10)

_FEATURE_CONFIG_VERSION = 1


def lhotse_fbank_extractor(opts: FbankOptions = FBANK_OPTS, device: str = "cpu"):
    """lhotse ``Fbank`` configured from ``opts`` (storage and on-the-fly features)."""
    from lhotse import Fbank, FbankConfig

    cfg = FbankConfig(
        sampling_rate=opts.sampling_rate,
        frame_length=opts.frame_length_s,
        frame_shift=opts.frame_shift_s,
        round_to_power_of_two=opts.round_to_power_of_two,
        remove_dc_offset=opts.remove_dc_offset,
        preemph_coeff=opts.preemph_coeff,
        window_type=opts.window_type,
        dither=opts.dither,
        snip_edges=opts.snip_edges,
        energy_floor=opts.energy_floor,
        raw_energy=opts.raw_energy,
        use_energy=opts.use_energy,
        use_fft_mag=False,
        low_freq=opts.low_freq,
        high_freq=opts.high_freq,
        num_filters=opts.num_mel_bins,
        norm_filters=False,
        torchaudio_compatible_mel_scale=True,
        device=device,
    )
    extractor = Fbank(cfg)
    # lhotse floors mel energies at float32 eps internally; make sure a future
    # lhotse that changes it is noticed instead of silently drifting.
    eps = float(extractor.extractor._eps)
    if not math.isclose(eps, opts.log_floor, rel_tol=1e-6):
        raise RuntimeError(
            f"lhotse Fbank log floor is {eps}, the front end defines {opts.log_floor}: "
            "the installed lhotse changed its fbank; update asr_kd.data.features"
        )
    return extractor


def knf_fbank_options(opts: FbankOptions = FBANK_OPTS):
    """``kaldi_native_fbank.FbankOptions`` matching ``opts`` option by option."""
    import kaldi_native_fbank as knf

    ko = knf.FbankOptions()
    fo = ko.frame_opts
    fo.samp_freq = float(opts.sampling_rate)
    fo.frame_length_ms = float(opts.frame_length_ms)
    fo.frame_shift_ms = float(opts.frame_shift_ms)
    fo.dither = float(opts.dither)
    fo.preemph_coeff = float(opts.preemph_coeff)
    fo.remove_dc_offset = bool(opts.remove_dc_offset)
    fo.window_type = opts.window_type
    fo.round_to_power_of_two = bool(opts.round_to_power_of_two)
    fo.snip_edges = bool(opts.snip_edges)
    mo = ko.mel_opts
    mo.num_bins = int(opts.num_mel_bins)
    mo.low_freq = float(opts.low_freq)
    mo.high_freq = float(opts.high_freq)
    mo.htk_mode = False
    mo.is_librosa = False
    ko.use_energy = bool(opts.use_energy)
    ko.raw_energy = bool(opts.raw_energy)
    ko.energy_floor = float(opts.energy_floor)
    ko.htk_compat = False
    ko.use_log_fbank = True
    ko.use_power = True
    if hasattr(ko, "use_log_floor"):
        ko.use_log_floor = True
    if hasattr(ko, "eps"):
        ko.eps = float(opts.log_floor)
    return ko


def feature_config_dict(opts: FbankOptions = FBANK_OPTS) -> Dict[str, Any]:
    """A plain dict describing the front end, stored in checkpoints.

    Training compares the teacher's and the student's dicts at KD start-up
    (:func:`check_feature_config`): equal dicts mean equal features.
    """
    d = dataclasses.asdict(opts)
    d["pad_value"] = FEATURE_PAD_VALUE
    d["feature_dim"] = opts.num_mel_bins
    d["version"] = _FEATURE_CONFIG_VERSION
    return d


def check_feature_config(a: Dict[str, Any], b: Dict[str, Any], what: str = "") -> None:
    """Raise ``ValueError`` listing every key where two feature configs differ."""
    diffs = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, "<missing>"), b.get(key, "<missing>")
        same = (
            math.isclose(va, vb, rel_tol=1e-9, abs_tol=1e-12)
            if isinstance(va, float) and isinstance(vb, float)
            else va == vb
        )
        if not same:
            diffs.append(f"{key}: {va!r} != {vb!r}")
    if diffs:
        where = f" ({what})" if what else ""
        raise ValueError("feature front ends differ" + where + ": " + "; ".join(diffs))


def _as_mono_float32(samples: Any) -> np.ndarray:
    x = samples.detach().cpu().numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples)
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1:
        raise ValueError(f"expected mono samples of shape (N,) or (1, N), got {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def compute_fbank(samples: Any, opts: FbankOptions = FBANK_OPTS, extractor=None) -> torch.Tensor:
    """Features of a whole waveform with lhotse's ``Fbank`` (the storage path).

    Args:
      samples: (N,) or (1, N) float samples in [-1, 1] at ``opts.sampling_rate``.
      extractor: a reusable :func:`lhotse_fbank_extractor` (built when None).
    Returns:
      (T, num_mel_bins) float32 tensor, ``T = opts.num_frames(N)``.
    """
    x = _as_mono_float32(samples)
    extractor = extractor if extractor is not None else lhotse_fbank_extractor(opts)
    feats = extractor.extract(x, opts.sampling_rate)
    return torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))


class OnlineFbank:
    """Incremental front end (kaldi-native-fbank) producing the training features.

    Feed audio as it arrives with :meth:`accept_waveform`; a frame becomes
    ready once its 25 ms window is covered by the audio received so far (the
    last one or two frames of an utterance need :meth:`input_finished`, which
    reflects the signal at its end exactly as the offline front end does).
    Frame indices are absolute (0 = first frame of the utterance).
    """

    def __init__(self, opts: FbankOptions = FBANK_OPTS) -> None:
        import kaldi_native_fbank as knf

        self.opts = opts
        self._fbank = knf.OnlineFbank(knf_fbank_options(opts))
        self._finished = False

    def accept_waveform(self, samples: Any) -> None:
        """Append samples: (n,) float32 in [-1, 1] at ``opts.sampling_rate``."""
        if self._finished:
            raise RuntimeError("OnlineFbank.accept_waveform() called after input_finished()")
        x = _as_mono_float32(samples)
        if x.size:
            self._fbank.accept_waveform(float(self.opts.sampling_rate), x.tolist())

    def input_finished(self) -> None:
        """No more audio: flush the frames that needed right-edge reflection."""
        if not self._finished:
            self._fbank.input_finished()
            self._finished = True

    @property
    def num_frames_ready(self) -> int:
        return int(self._fbank.num_frames_ready)

    @property
    def is_finished(self) -> bool:
        return self._finished

    def get_frames(self, start: int, n: int) -> torch.Tensor:
        """Frames ``start .. start+n-1`` as a (n, num_mel_bins) float32 tensor."""
        if start < 0 or n < 0 or start + n > self.num_frames_ready:
            raise ValueError(
                f"requested frames [{start}, {start + n}) but only {self.num_frames_ready} are ready"
            )
        if n == 0:
            return torch.zeros(0, self.opts.num_mel_bins, dtype=torch.float32)
        rows = [np.asarray(self._fbank.get_frame(i), dtype=np.float32) for i in range(start, start + n)]
        return torch.from_numpy(np.stack(rows))


def compute_online_fbank(samples: Any, opts: FbankOptions = FBANK_OPTS,
                         chunk_samples: Optional[int] = None) -> torch.Tensor:
    """All frames of a waveform through :class:`OnlineFbank`.

    Args:
      samples: (N,) float samples in [-1, 1].
      chunk_samples: feed the audio in pieces of this many samples (None: at once);
        the result does not depend on it.
    Returns:
      (T, num_mel_bins) float32 tensor, the same T as :func:`compute_fbank`.
    """
    x = _as_mono_float32(samples)
    fb = OnlineFbank(opts)
    step = x.size if not chunk_samples else int(chunk_samples)
    for s in range(0, x.size, max(step, 1)):
        fb.accept_waveform(x[s:s + step])
    fb.input_finished()
    return fb.get_frames(0, fb.num_frames_ready)
