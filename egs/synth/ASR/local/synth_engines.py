"""Text-to-speech with per-word timings from three Debian engines.

Each engine returns a :class:`Synthesis`: the waveform at the engine's own
rate and one ``(start, end)`` pair in seconds per word of the input (words =
the whitespace tokens of the spoken text, which the normaliser made equal to
the transcript words). How the timings are obtained:

* **flite** (``libflite`` through ctypes): the utterance's Word relation; a
  word's start is the start of its first segment, its end the end of its last
  segment (``R:SylStructure.daughter1.daughter1.R:Segment`` ...). Words are
  grouped by their Token parent, so ``It's`` (flite words ``it`` + ``'s``) is
  one transcript word. Exact: the waveform is generated from these segments.
* **festival** (batch Scheme script, one process per batch): the same
  relations, read per Token with ``item.feat``; HTS voices report the
  durations the HTS engine actually generated.
* **espeak-ng** (``libespeak-ng`` through ctypes, synchronous mode, one
  forked child per utterance for determinism): the
  library's WORD events give each word's start sample. espeak-ng sometimes
  speaks two short words as one unit (``of the``) and reports one event; the
  unit's span is then shared among its words in proportion to their letters.
  Ends are not reported: a word ends at the last 5 ms frame above
  ``peak - 45 dB`` before the next word's start, and a start after a pause is
  moved to the first frame above that level (espeak-ng emits the event at the
  pause).

Determinism: flite and espeak-ng draw noise from libc ``rand()``, reseeded
before every utterance; festival is deterministic within a batch.

Speaker parameters (see ``synth_voices``): ``speed`` -> espeak-ng words per
minute, flite ``duration_stretch = 1/speed``, festival ``Duration_Stretch``
(diphone) or the HTS engine's ``-r`` speed; ``pitch`` -> espeak-ng pitch,
flite ``f0_shift``, festival diphone ``int_lr_params`` F0 mean and range.
"""
from __future__ import annotations

import ctypes as C
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from synth_voices import ESPEAK_BASE_PITCH, ESPEAK_BASE_WPM, Speaker

WordTimes = List[Tuple[float, float]]


class SynthesisError(RuntimeError):
    """An engine failed, or its timings do not match the words of the text."""


@dataclass
class Synthesis:
    """Engine output. ``samples`` float32 (N,) in [-1, 1] at ``sample_rate``;
    ``words[i] = (start, end)`` seconds of word i of the spoken text."""

    samples: np.ndarray
    sample_rate: int
    words: WordTimes


def text_words(spoken: str) -> List[str]:
    return spoken.split()


def check_words(words: WordTimes, num_words: int, duration: float, what: str) -> WordTimes:
    """Validate engine timings: one per word, ordered, inside the audio."""
    if len(words) != num_words:
        raise SynthesisError(f"{what}: engine gave timings for {len(words)} words, text has {num_words}")
    prev_end = 0.0
    out = []
    for i, (s, e) in enumerate(words):
        s, e = max(0.0, float(s)), min(float(e), duration)
        if not (e > s) or s < prev_end - 1e-3:
            raise SynthesisError(f"{what}: word {i} has bad times start={s:.3f} end={e:.3f} "
                                 f"(previous end {prev_end:.3f}, audio {duration:.3f} s)")
        out.append((max(s, prev_end), e))
        prev_end = e
    return out


def group_word_times(rows: Sequence[Tuple[object, float, float]]) -> WordTimes:
    """Merge engine words into text words: ``rows`` are (token key, start, end) in order.

    Consecutive rows with the same token key form one text word (``It's`` ->
    ``it`` + ``'s``); an engine word without segments (end 0, e.g. a clitic
    merged into its host) only contributes its token.
    """
    out: List[List[float]] = []
    prev = object()
    for key, s, e in rows:
        if key != prev or not out:
            out.append([np.inf, -np.inf])
            prev = key
        if e > 0:
            out[-1][0] = min(out[-1][0], s)
            out[-1][1] = max(out[-1][1], e)
    return [(float(a), float(b)) for a, b in out]


def frame_levels_db(x: np.ndarray, sr: int, frame_s: float = 0.005) -> Tuple[np.ndarray, int]:
    """Per-frame energy in dB (frames of ``frame_s``), and the frame length in samples."""
    n = max(1, int(round(frame_s * sr)))
    m = len(x) // n
    if m == 0:
        return np.full(1, -200.0), n
    e = (x[: m * n].astype(np.float64).reshape(m, n) ** 2).mean(axis=1)
    return 10.0 * np.log10(e + 1e-20), n


# ---------------------------------------------------------------- espeak-ng


class _EspeakEvent(C.Structure):
    _fields_ = [("type", C.c_int), ("unique_identifier", C.c_uint), ("text_position", C.c_int),
                ("length", C.c_int), ("audio_position", C.c_int), ("sample", C.c_int),
                ("user_data", C.c_void_p), ("id", C.c_char * 8)]


_ESPEAK_CB = C.CFUNCTYPE(C.c_int, C.POINTER(C.c_short), C.c_int, C.POINTER(_EspeakEvent))
_EV_WORD, _EV_END_LIST = 1, 0
_ESPEAK_RATE, _ESPEAK_PITCH = 1, 3


def _reset_libc_rand() -> None:
    """Seed libc's ``rand()`` as a fresh process has it (``srand(1)``).

    flite's clustergen voices draw excitation noise from ``rand()``, so without
    this their waveform would depend on what the process synthesised before.
    """
    C.CDLL("libc.so.6").srand(1)


class EspeakEngine:
    """espeak-ng through libespeak-ng.

    libespeak-ng keeps state between calls (flutter phase, echo buffer,
    ``rand()``), so the same text twice in one process gives different
    samples. Each utterance is therefore synthesised in a forked child of a
    process that never initialised the library: every utterance starts from
    the same pristine state, as with the ``espeak-ng`` command line.
    """

    def __init__(self) -> None:
        try:
            self.lib = C.CDLL("libespeak-ng.so.1")
        except OSError as e:
            raise SynthesisError("libespeak-ng.so.1 not found (Debian package espeak-ng)") from e
        self.sample_rate = 0
        self._chunks: List[np.ndarray] = []
        self._events: List[Tuple[int, int]] = []  # (text_position 1-based, sample)
        self._cb = _ESPEAK_CB(self._callback)  # keep a reference
        self.lib.espeak_Synth.argtypes = [C.c_char_p, C.c_size_t, C.c_uint, C.c_int, C.c_uint,
                                          C.c_uint, C.c_void_p, C.c_void_p]
        self.lib.espeak_SetVoiceByName.argtypes = [C.c_char_p]

    def synth(self, spoken: str, spk: Speaker) -> Synthesis:
        """Synthesise in a forked child (see the class docstring); errors come back as SynthesisError."""
        import pickle

        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never returns
            code = 0
            try:
                os.close(r)
                try:
                    res: object = self._synth_here(spoken, spk)
                except SynthesisError as e:
                    res = e
                data = pickle.dumps(res)
                with os.fdopen(w, "wb") as f:
                    f.write(data)
            except BaseException:  # noqa: BLE001 - the parent reports the failure
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
        if status != 0 or not data:
            raise SynthesisError(f"espeak-ng child failed (status {status}) on {spoken!r}")
        res = pickle.loads(data)
        if isinstance(res, SynthesisError):
            raise res
        return res

    def _callback(self, wav, n, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        i = 0
        while events[i].type != _EV_END_LIST:
            ev = events[i]
            if ev.type == _EV_WORD:
                pos = ev.sample if ev.sample > 0 else int(round(ev.audio_position * self.sample_rate / 1000))
                self._events.append((ev.text_position, pos))
            i += 1
        return 0

    #: espeak-ng voice names that differ from the language code
    NAMES = {"en-gb": "gmw/en"}

    def _synth_here(self, spoken: str, spk: Speaker) -> Synthesis:
        """Synthesise in this process (initialising the library on first use)."""
        if self.sample_rate == 0:
            self.sample_rate = int(self.lib.espeak_Initialize(2, 0, None, 0))  # AUDIO_OUTPUT_SYNCHRONOUS
            if self.sample_rate <= 0:
                raise SynthesisError("espeak_Initialize failed")
            self.lib.espeak_SetSynthCallback(self._cb)
        _reset_libc_rand()
        name = self.NAMES.get(spk.voice, spk.voice) + (f"+{spk.variant}" if spk.variant else "")
        if self.lib.espeak_SetVoiceByName(name.encode()) != 0:
            raise SynthesisError(f"espeak-ng has no voice {name!r}")
        self.lib.espeak_SetParameter(_ESPEAK_RATE, int(round(ESPEAK_BASE_WPM * spk.speed)), 0)
        self.lib.espeak_SetParameter(_ESPEAK_PITCH, int(np.clip(round(ESPEAK_BASE_PITCH * spk.pitch), 0, 99)), 0)
        self._chunks, self._events = [], []
        data = spoken.encode("ascii")
        # POS_CHARACTER=1, espeakCHARS_UTF8=1
        if self.lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 1, None, None) != 0:
            raise SynthesisError(f"espeak_Synth failed for {spoken!r}")
        x = (np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)).astype(np.float32) / 32768.0
        words = self._word_times(spoken, x)
        return Synthesis(x, self.sample_rate, words)

    def _word_times(self, spoken: str, x: np.ndarray) -> WordTimes:
        sr = self.sample_rate
        toks = text_words(spoken)
        offsets, pos = [], 0
        for t in toks:
            pos = spoken.index(t, pos)
            offsets.append(pos)
            pos += len(t)
        # token index of each event (the token whose span holds the 1-based position)
        starts: Dict[int, int] = {}
        for tp, sample in self._events:
            c = tp - 1
            idx = max((i for i, o in enumerate(offsets) if o <= c), default=None)
            if idx is not None and c < offsets[idx] + len(toks[idx]) and idx not in starts:
                starts[idx] = sample
        if 0 not in starts:
            raise SynthesisError(f"espeak-ng reported no event for the first word of {spoken!r}")
        # words without an event share the span of the evented word before them
        raw: List[float] = [0.0] * len(toks)
        i = 0
        while i < len(toks):
            j = i + 1
            while j < len(toks) and j not in starts:
                j += 1
            a = starts[i]
            b = starts[j] if j < len(toks) else len(x)
            letters = np.array([len(toks[k].strip(",.;:!?")) for k in range(i, j)], float)
            cum = np.concatenate([[0.0], np.cumsum(letters) / letters.sum()])
            for k in range(i, j):
                raw[k] = a + (b - a) * cum[k - i]
            i = j
        bounds = [int(r) for r in raw] + [len(x)]
        level, n = frame_levels_db(x, sr)
        thresh = level.max() - 45.0
        words = []
        for k in range(len(toks)):
            a, b = bounds[k], max(bounds[k + 1], bounds[k] + 1)
            fa = -(-a // n)  # frames entirely inside [a, b)
            fb = max(fa + 1, b // n)
            active = np.nonzero(level[fa:fb] > thresh)[0]
            if len(active):
                s = max(a, (fa + active[0]) * n)
                e = min(b, (fa + active[-1] + 1) * n)
            else:
                s, e = a, b
            if e - s < 0.02 * sr:
                e = min(b, s + int(0.02 * sr))
            words.append((s / sr, e / sr))
        return words


# ---------------------------------------------------------------- flite


class _CstWave(C.Structure):
    _fields_ = [("type", C.c_char_p), ("sample_rate", C.c_int), ("num_samples", C.c_int),
                ("num_channels", C.c_int), ("samples", C.POINTER(C.c_short))]


class _CstVoiceHead(C.Structure):
    _fields_ = [("name", C.c_char_p), ("features", C.c_void_p)]


class FliteEngine:
    """flite through libflite (voices registered on first use)."""

    _START = b"R:SylStructure.daughter1.daughter1.R:Segment.p.end"
    _END = b"R:SylStructure.daughtern.daughtern.R:Segment.end"

    def __init__(self) -> None:
        try:
            fl = C.CDLL("libflite.so.1", mode=C.RTLD_GLOBAL)
        except OSError as e:
            raise SynthesisError("libflite.so.1 not found (Debian package flite)") from e
        fl.flite_init()
        vp = C.c_void_p
        for name, res, args in (("flite_synth_text", vp, [C.c_char_p, vp]), ("utt_relation", vp, [vp, C.c_char_p]),
                                ("relation_head", vp, [vp]), ("item_next", vp, [vp]),
                                ("item_as", vp, [vp, C.c_char_p]), ("item_parent", vp, [vp]),
                                ("ffeature_float", C.c_float, [vp, C.c_char_p]), ("utt_wave", vp, [vp]),
                                ("delete_utterance", None, [vp]),
                                ("flite_feat_set_float", None, [vp, C.c_char_p, C.c_float])):
            f = getattr(fl, name)
            f.restype, f.argtypes = res, args
        self.fl = fl
        self._voices: Dict[str, int] = {}

    def voice(self, name: str) -> int:
        if name not in self._voices:
            try:
                lib = C.CDLL(f"libflite_cmu_us_{name}.so.1", mode=C.RTLD_GLOBAL)
            except OSError as e:
                raise SynthesisError(f"flite voice {name!r} not installed (libflite_cmu_us_{name}.so.1)") from e
            reg = getattr(lib, f"register_cmu_us_{name}")
            reg.restype, reg.argtypes = C.c_void_p, [C.c_char_p]
            v = reg(None)
            if not v:
                raise SynthesisError(f"cannot register flite voice {name!r}")
            self._voices[name] = v
        return self._voices[name]

    def synth(self, spoken: str, spk: Speaker) -> Synthesis:
        fl = self.fl
        v = self.voice(spk.voice)
        feats = _CstVoiceHead.from_address(v).features
        fl.flite_feat_set_float(feats, b"duration_stretch", 1.0 / spk.speed)
        fl.flite_feat_set_float(feats, b"f0_shift", spk.pitch)
        _reset_libc_rand()
        utt = fl.flite_synth_text(spoken.encode("ascii"), v)
        if not utt:
            raise SynthesisError(f"flite failed on {spoken!r}")
        try:
            w = _CstWave.from_address(fl.utt_wave(utt))
            x = np.ctypeslib.as_array(w.samples, (w.num_samples,)).astype(np.float32) / 32768.0
            sr = int(w.sample_rate)
            rows = []
            item = fl.relation_head(fl.utt_relation(utt, b"Word"))
            while item:
                tok = fl.item_parent(fl.item_as(item, b"Token"))
                rows.append((tok, fl.ffeature_float(item, self._START), fl.ffeature_float(item, self._END)))
                item = fl.item_next(item)
        finally:
            fl.delete_utterance(utt)
        return Synthesis(x, sr, group_word_times(rows))


# ---------------------------------------------------------------- festival

_FESTIVAL_PRELUDE = r"""
(define (asrkd_dump utt wav tim)
  (utt.save.wave utt wav 'riff)
  (let ((fd (fopen tim "w")) (tok (utt.relation.first utt 'Token)) (k 0))
    (while tok
      (mapcar
        (lambda (d)
          (if (item.relation d 'Word)
            (format fd "%d\t%f\t%f\n" k
                    (item.feat d "R:SylStructure.daughter1.daughter1.R:Segment.segment_start")
                    (item.feat d "R:SylStructure.daughtern.daughtern.R:Segment.end"))))
        (item.daughters tok))
      (set! k (+ k 1))
      (set! tok (item.next tok)))
    (fclose fd)))
"""

#: the diphone voices' own int_lr_params F0 target (mean, std) in Hz
_FESTIVAL_F0 = {"kal_diphone": (105.0, 14.0), "ked_diphone": (105.0, 15.0)}


def _scheme_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class FestivalEngine:
    """festival in batch mode: one process synthesises a list of utterances of one voice."""

    def __init__(self, festival: str = "festival", timeout_s: float = 600.0) -> None:
        exe = shutil.which(festival)
        if exe is None:
            raise SynthesisError("festival is not installed (Debian package festival)")
        self.exe, self.timeout_s = exe, timeout_s

    def _settings(self, spk: Speaker) -> str:
        if spk.voice.endswith("_hts"):
            if spk.pitch != 1.0:
                raise SynthesisError(f"festival HTS voice {spk.voice} has no pitch control (speaker {spk.id})")
            return ("(Parameter.set 'Duration_Stretch 1.0)\n"
                    f"(set! hts_engine_params (append '((\"-r\" {spk.speed:.4f})) "
                    f"{spk.voice}::hts_engine_params))\n")
        mean, std = _FESTIVAL_F0.get(spk.voice, (105.0, 14.0))
        return (f"(Parameter.set 'Duration_Stretch {1.0 / spk.speed:.4f})\n"
                f"(set! int_lr_params '((target_f0_mean {mean * spk.pitch:.2f}) (target_f0_std {std * spk.pitch:.2f}) "
                "(model_f0_mean 170) (model_f0_std 34)))\n")

    def synth_batch(self, items: Sequence[Tuple[str, Speaker]]) -> List[Optional[Synthesis]]:
        """Synthesise ``(spoken, speaker)`` items (all of one voice); ``None`` where festival failed."""
        if not items:
            return []
        voices = {spk.voice for _, spk in items}
        if len(voices) != 1:
            raise ValueError(f"a festival batch must use one voice, got {sorted(voices)}")
        import soundfile as sf

        with tempfile.TemporaryDirectory(prefix="asrkd-fest-") as tmp:
            lines = [_FESTIVAL_PRELUDE, f"(voice_{items[0][1].voice})\n"]
            for k, (spoken, spk) in enumerate(items):
                lines.append(self._settings(spk))
                wav, tim = os.path.join(tmp, f"{k}.wav"), os.path.join(tmp, f"{k}.txt")
                lines.append(f"(asrkd_dump (SynthText {_scheme_string(spoken)}) {_scheme_string(wav)} "
                             f"{_scheme_string(tim)})\n")
            script = os.path.join(tmp, "batch.scm")
            with open(script, "w") as f:
                f.writelines(lines)
            proc = subprocess.run([self.exe, "-b", script], capture_output=True, text=True,
                                  timeout=self.timeout_s)
            out: List[Optional[Synthesis]] = []
            for k in range(len(items)):
                wav, tim = os.path.join(tmp, f"{k}.wav"), os.path.join(tmp, f"{k}.txt")
                if not (os.path.exists(wav) and os.path.exists(tim)):
                    out.append(None)
                    continue
                x, sr = sf.read(wav, dtype="float32", always_2d=True)
                rows = []
                with open(tim) as f:
                    for line in f:
                        k_tok, start, end = line.rstrip("\n").split("\t")
                        rows.append((int(k_tok), float(start), float(end)))
                out.append(Synthesis(x[:, 0].copy(), int(sr), group_word_times(rows)))
            if all(o is None for o in out):
                raise SynthesisError(f"festival produced nothing (rc={proc.returncode}): {proc.stderr[-500:]}")
            return out


# ---------------------------------------------------------------- dispatch

_ENGINES: Dict[str, object] = {}


def get_engine(name: str):
    """The per-process engine instance for ``name`` ("espeak" | "flite" | "festival")."""
    if name not in _ENGINES:
        cls = {"espeak": EspeakEngine, "flite": FliteEngine, "festival": FestivalEngine}.get(name)
        if cls is None:
            raise ValueError(f"unknown engine {name!r}")
        _ENGINES[name] = cls()
    return _ENGINES[name]


def synthesize_many(items: Sequence[Tuple[str, Speaker]]) -> List[Tuple[Optional[Synthesis], str]]:
    """Synthesise ``(spoken, speaker)`` items; returns ``(synthesis or None, error message)``.

    Festival items of one voice go through one festival process; timings are
    checked against the text (:func:`check_words`).
    """
    results: List[Tuple[Optional[Synthesis], str]] = [(None, "")] * len(items)
    fest_idx = [i for i, (_, s) in enumerate(items) if s.engine == "festival"]
    by_voice: Dict[str, List[int]] = {}
    for i in fest_idx:
        by_voice.setdefault(items[i][1].voice, []).append(i)
    raw: Dict[int, Optional[Synthesis]] = {}
    for idx in by_voice.values():
        outs = get_engine("festival").synth_batch([items[i] for i in idx])
        raw.update(zip(idx, outs))
    for i, (spoken, spk) in enumerate(items):
        try:
            if spk.engine == "festival":
                syn = raw[i]
                if syn is None:
                    raise SynthesisError("festival produced no output")
            else:
                syn = get_engine(spk.engine).synth(spoken, spk)
            syn.words = check_words(syn.words, len(text_words(spoken)), len(syn.samples) / syn.sample_rate,
                                    f"{spk.id} {spoken!r}")
            if len(syn.samples) == 0 or not np.any(syn.samples):
                raise SynthesisError(f"{spk.id} {spoken!r}: empty waveform")
            results[i] = (syn, "")
        except SynthesisError as e:
            results[i] = (None, str(e))
    return results


def engines_available() -> Dict[str, bool]:
    """Which engines this machine has (binary/library present)."""
    def lib_ok(name: str) -> bool:
        try:
            C.CDLL(name)
            return True
        except OSError:
            return False
    return {"espeak": lib_ok("libespeak-ng.so.1"), "flite": lib_ok("libflite.so.1"),
            "festival": shutil.which("festival") is not None}
