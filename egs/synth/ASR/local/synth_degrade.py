"""Turn an engine waveform into a corpus recording, keeping word times exact.

Chain (per utterance, every random choice drawn from ``utt_rng(seed, utt_id)``):

1. **trim** (numpy, engine rate): cut leading/trailing audio quieter than
   ``peak - 45 dB`` (5 ms frames), keeping 20 ms/50 ms margins and never
   cutting into a word; word times shift by ``-trim_start``;
2. **pad** (numpy): ``pad_s`` seconds of zeros before and after (uniform in
   ``[pad_min, pad_max]``); times shift by ``+lead``. The zeros never reach
   the output: noise is added over the whole signal in step 4;
3. **sox** (one process, raw float32 in and out, ``-R`` for repeatability):
   ``rate -v 16k`` then, at random, ``reverb`` (room), a telephone band
   (``sinc 300-3400``), an EQ (1-3 ``equalizer`` peaks/dips, optional
   ``lowpass``/``highpass``). These effects are zero-delay in sox (linear-phase
   resampler and sinc filter with delay compensation; reverb keeps the dry
   path): checked with impulses by ``tests/test_synth_corpus.py``;
4. **noise** (numpy): white, pink (1/f power), brown (1/f^2) or babble (3-6
   random stretches of the babble bank, synthetic speech of sentences kept out
   of every split), scaled to an SNR drawn uniformly in ``[snr_min, snr_max]``
   dB, speech power measured between the first word start and the last word
   end. Every noise type carries a white floor 20 dB below it, so that no
   band is empty (brown noise alone is near-constant over many samples);
5. **level**: peak normalised to a level drawn in [-14, -1] dBFS, then
   rounded to 16-bit with TPDF dither.

The returned word times are in the output's time base: every trim and pad
offset has been applied.
"""
from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from synth_voices import stable_hash

TARGET_SR = 16000
TRIM_DB = 45.0
NOISE_TYPES = ("white", "pink", "brown", "babble")
FLOOR_GAIN = 0.1  # white floor added to every noise type (-20 dB)


@dataclass(frozen=True)
class DegradeConfig:
    """Probabilities and ranges of the random degradations (see the module docstring)."""

    snr_min: float = 5.0
    snr_max: float = 30.0
    pad_min: float = 0.15
    pad_max: float = 0.6
    p_reverb: float = 0.3
    p_telephone: float = 0.1
    p_eq: float = 0.4
    noise_weights: Tuple[float, float, float, float] = (0.15, 0.3, 0.2, 0.35)  # order of NOISE_TYPES
    peak_db_min: float = -14.0
    peak_db_max: float = -1.0

    def to_dict(self) -> dict:
        return asdict(self)


#: named degradation levels (``build_corpus.py --degradation``); "full" is the chain above
#: at its default settings, "mild" keeps every effect but rarer and with quieter
#: noise, "clean" only keeps a noise floor 40-50 dB under the speech (no digital silence)
DEGRADATION_LEVELS: Dict[str, DegradeConfig] = {
    "full": DegradeConfig(),
    "mild": DegradeConfig(snr_min=15.0, snr_max=35.0, p_reverb=0.15, p_telephone=0.05, p_eq=0.3),
    "clean": DegradeConfig(snr_min=40.0, snr_max=50.0, p_reverb=0.0, p_telephone=0.0, p_eq=0.0),
}


def utt_rng(seed: int, utt_id: str) -> np.random.Generator:
    """The utterance's own random generator: a function of (seed, utt_id) only."""
    return np.random.default_rng(stable_hash(seed, "utt", utt_id))


def speech_bounds(x: np.ndarray, sr: int, words: List[Tuple[float, float]]) -> Tuple[int, int]:
    """Sample range [s, e) to keep: audible region plus margins, always covering all words."""
    from synth_engines import frame_levels_db

    level, n = frame_levels_db(x, sr)
    active = np.nonzero(level > level.max() - TRIM_DB)[0]
    if len(active) == 0:
        s, e = 0, len(x)
    else:
        s = max(0, active[0] * n - int(0.02 * sr))
        e = min(len(x), (active[-1] + 1) * n + int(0.05 * sr))
    s = min(s, int(np.floor(words[0][0] * sr)))
    e = max(e, min(len(x), int(np.ceil(words[-1][1] * sr))))
    return s, e


def sox_effects(rng: np.random.Generator, cfg: DegradeConfig) -> Tuple[List[str], Dict]:
    """Draw the sox effect chain (after resampling) and a description of it."""
    eff: List[str] = []
    info: Dict = {}
    if rng.random() < cfg.p_reverb:
        rev = int(rng.integers(10, 80))
        hf = int(rng.integers(20, 80))
        room = int(rng.integers(20, 100))
        wet = float(rng.uniform(-8.0, 0.0))
        eff += ["reverb", str(rev), str(hf), str(room), "100", "0", f"{wet:.1f}"]
        info["reverb"] = {"reverberance": rev, "hf_damping": hf, "room_scale": room, "wet_gain_db": round(wet, 1)}
    if rng.random() < cfg.p_telephone:
        lo, hi = int(rng.integers(250, 400)), int(rng.integers(3000, 3600))
        eff += ["sinc", f"{lo}-{hi}"]
        info["telephone"] = [lo, hi]
    elif rng.random() < cfg.p_eq:
        bands = []
        for _ in range(int(rng.integers(1, 4))):
            f = float(np.exp(rng.uniform(np.log(150.0), np.log(6000.0))))
            q = float(rng.uniform(0.5, 2.0))
            g = float(rng.uniform(-10.0, 8.0))
            eff += ["equalizer", f"{f:.0f}", f"{q:.2f}q", f"{g:.1f}"]
            bands.append([round(f), round(q, 2), round(g, 1)])
        info["eq"] = bands
        r = rng.random()
        if r < 0.25:
            fc = int(rng.integers(3500, 7000))
            eff += ["lowpass", str(fc)]
            info["lowpass"] = fc
        elif r < 0.45:
            fc = int(rng.integers(80, 300))
            eff += ["highpass", str(fc)]
            info["highpass"] = fc
    # effects can push peaks above full scale: level is fixed afterwards in numpy
    return eff, info


def run_sox(x: np.ndarray, sr: int, effects: List[str]) -> np.ndarray:
    """Resample ``x`` (float32 at ``sr``) to 16 kHz and apply ``effects`` with sox."""
    cmd = ["sox", "-R", "-D", "-V1", "-t", "f32", "-r", str(sr), "-c", "1", "-",
           "-t", "f32", "-r", str(TARGET_SR), "-c", "1", "-", "rate", "-v", str(TARGET_SR)] + effects
    proc = subprocess.run(cmd, input=np.ascontiguousarray(x, dtype=np.float32).tobytes(),
                          capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"sox failed ({' '.join(cmd)}): {proc.stderr.decode(errors='replace')[-400:]}")
    return np.frombuffer(proc.stdout, dtype=np.float32).copy()


def colored_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown), unit RMS.

    Shaped in the frequency domain; below 20 Hz the spectrum is held flat so
    that brown noise has no huge DC drift.
    """
    white = rng.standard_normal(n)
    if exponent == 0:
        y = white
    else:
        spec = np.fft.rfft(white)
        f = np.fft.rfftfreq(n, 1.0 / TARGET_SR)
        f = np.maximum(f, 20.0)
        spec *= f ** (-exponent / 2.0)
        y = np.fft.irfft(spec, n)
    return (y / (np.sqrt(np.mean(y ** 2)) + 1e-12)).astype(np.float64)


def babble_noise(rng: np.random.Generator, n: int, bank: np.ndarray) -> np.ndarray:
    """Sum of 3..6 random stretches of the babble bank (each at -6..0 dB), unit RMS."""
    y = np.zeros(n)
    for _ in range(int(rng.integers(3, 7))):
        if len(bank) > n:
            start = int(rng.integers(0, len(bank) - n))
            seg = bank[start:start + n]
        else:
            seg = np.resize(bank, n)
        y += seg * 10 ** (rng.uniform(-6.0, 0.0) / 20.0)
    return y / (np.sqrt(np.mean(y ** 2)) + 1e-12)


def degrade(samples: np.ndarray, sr: int, words: List[Tuple[float, float]], rng: np.random.Generator,
            cfg: DegradeConfig, babble_bank: Optional[np.ndarray] = None
            ) -> Tuple[np.ndarray, List[Tuple[float, float]], Dict]:
    """Apply the chain to one engine waveform.

    Args:
      samples: (N,) float32 engine output at ``sr``.
      words: (start, end) seconds in ``samples``' time base.
      babble_bank: (M,) float 16 kHz speech; without it babble is not drawn.

    Returns ``(audio int16 (N',) at 16 kHz, word times in the output, info)``.
    """
    s, e = speech_bounds(samples, sr, words)
    lead = float(rng.uniform(cfg.pad_min, cfg.pad_max))
    trail = float(rng.uniform(cfg.pad_min, cfg.pad_max))
    n_lead, n_trail = int(round(lead * sr)), int(round(trail * sr))
    x = np.concatenate([np.zeros(n_lead, np.float32), samples[s:e], np.zeros(n_trail, np.float32)])
    shift = (n_lead - s) / sr
    effects, info = sox_effects(rng, cfg)
    y = run_sox(x, sr, effects).astype(np.float64)
    dur = len(y) / TARGET_SR
    out_words = [(min(a + shift, dur), min(b + shift, dur)) for a, b in words]

    weights = np.array(cfg.noise_weights, dtype=np.float64)
    if babble_bank is None or len(babble_bank) == 0:
        weights[NOISE_TYPES.index("babble")] = 0.0
    kind = NOISE_TYPES[int(rng.choice(len(NOISE_TYPES), p=weights / weights.sum()))]
    if kind == "babble":
        noise = babble_noise(rng, len(y), babble_bank)
    else:
        noise = colored_noise(rng, len(y), {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind])
    # a white floor 20 dB under every noise: brown noise and babble pauses alone leave the
    # upper bands (nearly) empty, which is digital silence to a log-mel front end
    noise = noise + FLOOR_GAIN * rng.standard_normal(len(y))
    snr = float(rng.uniform(cfg.snr_min, cfg.snr_max))
    a = int(out_words[0][0] * TARGET_SR)
    b = max(a + 1, int(np.ceil(out_words[-1][1] * TARGET_SR)))
    p_speech = float(np.mean(y[a:b] ** 2))
    y = y + noise * np.sqrt(p_speech / 10 ** (snr / 10.0))
    peak_db = float(rng.uniform(cfg.peak_db_min, cfg.peak_db_max))
    y *= 10 ** (peak_db / 20.0) / (np.max(np.abs(y)) + 1e-12)
    # TPDF dither (+-1 LSB) before rounding to 16 bit
    dither = rng.random(len(y)) - rng.random(len(y))
    audio = np.clip(np.round(y * 32767.0 + dither), -32768, 32767).astype(np.int16)
    info.update({"noise": kind, "snr_db": round(snr, 2), "peak_dbfs": round(peak_db, 2),
                 "trim_start_s": round(s / sr, 6), "pad_lead_s": round(n_lead / sr, 6),
                 "pad_trail_s": round(n_trail / sr, 6), "engine_sample_rate": sr})
    return audio, out_words, info


def longest_constant_run(audio: np.ndarray) -> int:
    """Length of the longest run of identical consecutive samples (digital-silence check)."""
    if len(audio) == 0:
        return 0
    change = np.nonzero(np.diff(audio.astype(np.int32)) != 0)[0]
    edges = np.concatenate([[-1], change, [len(audio) - 1]])
    return int(np.max(np.diff(edges)))
