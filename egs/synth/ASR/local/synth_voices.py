"""Speakers, voices, splits and the utterance plan of the synthetic corpus.

Vocabulary:

* a **voice** is an engine plus one of its voices (``flite-slt``,
  ``festival-slthts``, ``espeak-en-gb-scotland``): one synthetic "person";
* a **speaker** is a voice at a fixed variant/speed/pitch
  (``flite-slt-s112-p092``): the unit of the speaker-disjoint splits.
  ``speed`` is a speaking-rate factor (1.2 = 20 % faster) and ``pitch`` an F0
  factor, both applied by the engine itself (no post-processing), so the
  engine's word timings stay exact.

Splits (all speaker-disjoint; no sentence is in two splits):

* voices in ``held_out`` never appear in ``train``/``dev``/``test_seen``: all
  their speakers form ``test_heldout``;
* every other voice with at least three speakers gives one speaker to ``dev``
  and one to ``test_seen`` (never its neutral speed=pitch=1 speaker) and the
  rest to ``train``; voices with fewer speakers are train-only.

So ``test_seen`` measures new speakers of voices heard in training (another
rate/pitch), ``test_heldout`` voices never heard. ``dev`` has seen voices
only.

Weights: utterances of a split are shared among its voices in proportion to
their weight, then equally among each voice's speakers. The realistic engines
(flite's clustergen voices, festival's HTS voice) carry most of the weight: a
real-speech recogniser finds espeak-ng far less intelligible.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

SPLITS = ("train", "dev", "test_seen", "test_heldout")

#: espeak-ng speaking rate (words per minute) at speed 1.0, and pitch (0..99) at pitch 1.0
ESPEAK_BASE_WPM = 165
ESPEAK_BASE_PITCH = 50


@dataclass(frozen=True)
class Speaker:
    """One engine/voice/variant/speed/pitch combination."""

    engine: str  # "espeak" | "flite" | "festival"
    voice: str  # engine voice name (espeak: the language/accent name)
    variant: str = ""  # espeak-ng voice variant (m1, f3, klatt2, ...); empty otherwise
    speed: float = 1.0
    pitch: float = 1.0

    @property
    def voice_id(self) -> str:
        return f"{self.engine}-{VOICE_SHORT.get(self.voice, self.voice)}"

    @property
    def id(self) -> str:
        var = f"-{self.variant}" if self.variant else ""
        return f"{self.voice_id}{var}-s{round(self.speed * 100):03d}-p{round(self.pitch * 100):03d}"

    @property
    def neutral(self) -> bool:
        return self.speed == 1.0 and self.pitch == 1.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class VoiceSpec:
    """A voice, its sampling weight and its speakers as (variant, speed, pitch)."""

    engine: str
    voice: str
    weight: float
    grid: Tuple[Tuple[str, float, float], ...]

    def speakers(self) -> List[Speaker]:
        return [Speaker(self.engine, self.voice, v, s, p) for v, s, p in self.grid]

    @property
    def voice_id(self) -> str:
        return Speaker(self.engine, self.voice).voice_id


VOICE_SHORT = {"cmu_us_slt_arctic_hts": "slthts", "kal_diphone": "kal", "ked_diphone": "ked"}


def _grid(speeds: Sequence[float], pitches: Sequence[float], variant: str = "") -> Tuple:
    return tuple((variant, s, p) for s in speeds for p in pitches)


S3 = (0.88, 1.0, 1.12)
S5 = (0.84, 0.92, 1.0, 1.08, 1.16)
P3 = (0.92, 1.0, 1.09)

ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
                  "en-us-nyc", "en-029", "en-gb-x-gbcwmd")
ESPEAK_VARIANTS = ("m1", "f2", "m3", "f4", "m7", "klatt2", "f5", "m2", "klatt4", "f1", "m4", "m6")
#: (speed, pitch) of an accent's five speakers
ESPEAK_SLOTS = ((1.0, 1.0), (0.9, 0.85), (1.1, 1.15), (0.95, 1.2), (1.06, 0.9))


def espeak_voices(weight: float = 0.3) -> List[VoiceSpec]:
    """The 8 English accents of espeak-ng, 5 speakers each (variant cycles with the accent)."""
    out = []
    for a, accent in enumerate(ESPEAK_ACCENTS):
        grid = tuple((ESPEAK_VARIANTS[(a * 3 + k) % len(ESPEAK_VARIANTS)], s, p)
                     for k, (s, p) in enumerate(ESPEAK_SLOTS))
        out.append(VoiceSpec("espeak", accent, weight, grid))
    return out


def default_voices() -> List[VoiceSpec]:
    """All voices: flite (4), festival (3), espeak-ng (8 accents)."""
    return [
        # realistic: clustergen (flite) and HTS (festival) statistical parametric voices
        VoiceSpec("flite", "slt", 3.0, _grid(S3, P3)),
        VoiceSpec("flite", "awb", 3.0, _grid(S3, P3)),
        VoiceSpec("flite", "rms", 3.0, _grid(S5, (1.0,))),  # flite ignores f0 changes for rms
        VoiceSpec("festival", "cmu_us_slt_arctic_hts", 3.0, _grid(S5, (1.0,))),  # no F0 control
        # diphone voices
        VoiceSpec("flite", "kal16", 1.0, _grid(S3, P3)),
        VoiceSpec("festival", "kal_diphone", 1.0, _grid(S3, P3)),
        VoiceSpec("festival", "ked_diphone", 1.0, _grid(S3, P3)),
    ] + espeak_voices()


#: voices never used in train/dev/test_seen
DEFAULT_HELD_OUT = ("flite-awb", "festival-ked", "espeak-en-029", "espeak-en-gb-x-gbcwmd")


def stable_hash(*parts: object) -> int:
    """64-bit hash of the parts' string forms (stable across runs and machines)."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little")


def assign_speakers(voices: Sequence[VoiceSpec], held_out: Sequence[str], seed: int
                    ) -> Dict[str, List[Tuple[VoiceSpec, Speaker]]]:
    """Map each split to its (voice, speaker) pairs (rules in the module docstring)."""
    known = {v.voice_id for v in voices}
    unknown = set(held_out) - known
    if unknown:
        raise ValueError(f"held-out voices {sorted(unknown)} are not among the voices {sorted(known)}")
    out: Dict[str, List[Tuple[VoiceSpec, Speaker]]] = {s: [] for s in SPLITS}
    for v in voices:
        spks = v.speakers()
        if len({s.id for s in spks}) != len(spks):
            raise ValueError(f"voice {v.voice_id} has duplicate speakers")
        if v.voice_id in held_out:
            out["test_heldout"].extend((v, s) for s in spks)
            continue
        if len(spks) < 3:
            out["train"].extend((v, s) for s in spks)
            continue
        others = sorted((s for s in spks if not s.neutral), key=lambda s: stable_hash(seed, s.id))
        dev, test = others[0], others[1]
        out["dev"].append((v, dev))
        out["test_seen"].append((v, test))
        out["train"].extend((v, s) for s in spks if s not in (dev, test))
    return out


def allocate(total: int, weights: Sequence[float]) -> List[int]:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder)."""
    w = np.asarray(weights, dtype=np.float64)
    if total <= 0 or len(w) == 0 or w.sum() <= 0:
        return [0] * len(w)
    exact = total * w / w.sum()
    base = np.floor(exact).astype(int)
    rest = total - int(base.sum())
    order = sorted(range(len(w)), key=lambda i: (-(exact[i] - base[i]), i))
    for i in order[:rest]:
        base[i] += 1
    return [int(b) for b in base]


@dataclass(frozen=True)
class UttSpec:
    """Everything that determines one utterance (its audio is a function of this and the seed)."""

    utt_id: str
    split: str
    speaker: Speaker
    source: str
    spoken: str
    transcript: str

    def to_dict(self) -> dict:
        d = asdict(self)
        d["speaker"] = self.speaker.to_dict()
        return d

    @staticmethod
    def from_dict(d: dict) -> "UttSpec":
        return UttSpec(d["utt_id"], d["split"], Speaker(**d["speaker"]), d["source"], d["spoken"],
                       d["transcript"])


@dataclass
class Plan:
    """The utterances of all splits, plus the babble sentences (used only as noise)."""

    utts: List[UttSpec]
    babble: List[UttSpec] = field(default_factory=list)


def _check_distinct_readers(slots: List[Speaker], num_distinct: int) -> None:
    """Copies of a sentence sit ``num_distinct`` slots apart and the slots are grouped
    by speaker, so the copies have distinct speakers iff no speaker has more slots."""
    counts: Dict[str, int] = {}
    for spk in slots:
        counts[spk.id] = counts.get(spk.id, 0) + 1
    worst = max(counts, key=counts.get)
    if counts[worst] > num_distinct:
        raise ValueError(f"train_reads: speaker {worst} has {counts[worst]} utterances but there are only "
                         f"{num_distinct} distinct sentences: lower train_reads or add speakers")


def make_plan(pool: Sequence, sizes: Dict[str, int], seed: int,
              voices: Optional[Sequence[VoiceSpec]] = None,
              held_out: Sequence[str] = DEFAULT_HELD_OUT,
              text_weights: Optional[Dict[str, float]] = None, num_babble: int = 0,
              train_reads: int = 1) -> Plan:
    """Draw sentences for every split and give them to speakers.

    Args:
      pool: sentences (objects with ``source``, ``spoken``, ``transcript``),
        unique transcripts.
      sizes: utterances per split (missing splits: 0).
      text_weights: share of each text source (default: equal); a source with
        too few sentences left gives its share to the others.
      num_babble: extra sentences, spoken by train speakers, kept out of every
        split and used only to make babble noise.
      train_reads: each training sentence is read by this many different
        speakers (``ceil(n / train_reads)`` sentences for ``n`` utterances):
        more audio per distinct sentence when the text pool is small (a
        closed vocabulary), with the voices still varying.

    Sentences are drawn without replacement (so no sentence is in two splits),
    per source in a seeded random order.
    """
    if train_reads < 1:
        raise ValueError(f"train_reads must be >= 1, got {train_reads}")
    voices = list(default_voices() if voices is None else voices)
    bad = set(sizes) - set(SPLITS)
    if bad:
        raise ValueError(f"unknown splits {sorted(bad)}; known: {SPLITS}")
    rng = np.random.default_rng(stable_hash(seed, "plan"))
    by_source: Dict[str, List] = {}
    for s in pool:
        by_source.setdefault(s.source, []).append(s)
    sources = sorted(by_source)
    queues = {}
    for src in sources:
        items = by_source[src]
        queues[src] = [items[i] for i in rng.permutation(len(items))]
    tw = text_weights or {s: 1.0 for s in sources}
    need = sum(-(-int(n) // train_reads) if split == "train" else int(n)
               for split, n in sizes.items()) + num_babble
    if need > len(pool):
        raise ValueError(f"the plan needs {need} sentences but the pool has only {len(pool)}")

    def draw(n: int) -> List:
        quotas = allocate(n, [tw.get(s, 0.0) for s in sources])
        got = []
        for src, q in zip(sources, quotas):
            got.extend(queues[src][:q])
            queues[src] = queues[src][q:]
        short = n - len(got)
        for src in sources:  # top up from whatever is left
            if short <= 0:
                break
            take = queues[src][:short]
            queues[src] = queues[src][len(take):]
            got.extend(take)
            short -= len(take)
        order = rng.permutation(len(got))
        return [got[i] for i in order]

    by_split = assign_speakers(voices, held_out, seed)
    plan = Plan(utts=[])
    for split in SPLITS:
        n = int(sizes.get(split, 0))
        pairs = by_split[split]
        if n == 0:
            continue
        if not pairs:
            raise ValueError(f"split {split!r} wants {n} utterances but has no speakers")
        reads = train_reads if split == "train" else 1
        distinct = draw(-(-n // reads))
        # every read of the sentences in one order: the copies of a sentence are len(distinct) apart
        sents = (distinct * reads)[:n]
        # voice quotas by weight, then equal speaker quotas within each voice
        voice_ids = sorted({v.voice_id for v, _ in pairs})
        vweight = {v.voice_id: v.weight for v, _ in pairs}
        vquota = dict(zip(voice_ids, allocate(n, [vweight[v] for v in voice_ids])))
        slots: List[Speaker] = []
        for vid in voice_ids:
            spks = sorted((s for v, s in pairs if v.voice_id == vid), key=lambda s: s.id)
            spks = [spks[i] for i in rng.permutation(len(spks))]
            for s, q in zip(spks, allocate(vquota[vid], [1.0] * len(spks))):
                slots.extend([s] * q)
        if reads > 1:
            _check_distinct_readers(slots, len(distinct))
        for k, (spk, sent) in enumerate(zip(slots, sents)):
            plan.utts.append(UttSpec(f"{spk.id}-{k:05d}", split, spk, sent.source, sent.spoken,
                                     sent.transcript))
    if num_babble:
        train_spk = sorted({s for _, s in by_split["train"]}, key=lambda s: s.id)
        if not train_spk:
            raise ValueError("babble needs train speakers")
        for k, sent in enumerate(draw(num_babble)):
            spk = train_spk[k % len(train_spk)]
            plan.babble.append(UttSpec(f"babble-{spk.id}-{k:05d}", "babble", spk, sent.source,
                                       sent.spoken, sent.transcript))
    return plan
