"""The synthetic corpus builder of egs/synth/ASR (local/): text normalisation,
splits, engines, degradations, manifests, determinism and idempotency.

The engine tests need the Debian packages sox, espeak-ng and flite (installed
by tools/test.sh when root); without them they are skipped with that reason.
festival is not needed here.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

LOCAL = Path(__file__).resolve().parents[1] / "egs" / "synth" / "ASR" / "local"
sys.path.insert(0, str(LOCAL))

import synth_text as T  # noqa: E402
import synth_voices as V  # noqa: E402


def _engines_missing() -> str:
    from synth_engines import engines_available

    have = engines_available()
    missing = [n for n in ("espeak", "flite") if not have[n]]
    if shutil.which("sox") is None:
        missing.append("sox")
    return ", ".join(missing)


_MISSING = _engines_missing()
needs_tts = pytest.mark.skipif(bool(_MISSING), reason=f"Debian TTS tools missing: {_MISSING} "
                               "(apt-get install sox espeak-ng flite)")


# ---------------------------------------------------------------- text normalisation


@pytest.mark.parametrize("raw,spoken,transcript", [
    ("Mr. Smith went to Washington.", "Mister Smith went to Washington.", "MISTER SMITH WENT TO WASHINGTON"),
    ("Don't 'stop' now, it's the boys' turn!", "Don't stop now, it's the boys turn!",
     "DON'T STOP NOW IT'S THE BOYS TURN"),
    ("A well-known fact -- truly", "A well known fact, truly.", "A WELL KNOWN FACT TRULY"),
    ("Fruits, e.g. apples, are sweet.", "Fruits, for example apples, are sweet.",
     "FRUITS FOR EXAMPLE APPLES ARE SWEET"),
    ("salt & pepper (ground) for Dr. Jones.", "Salt and pepper ground for Doctor Jones.",
     "SALT AND PEPPER GROUND FOR DOCTOR JONES"),
    ("O Lord, hear my voice...", "O Lord, hear my voice.", "O LORD HEAR MY VOICE"),
])
def test_normalize_accepts(raw, spoken, transcript):
    s = T.normalize_sentence(raw)
    assert s is not None, raw
    assert (s.spoken, s.transcript) == (spoken, transcript)
    # the spoken words are the transcript words
    assert [w.strip(",.;:!?").upper() for w in s.spoken.split()] == s.transcript.split()


@pytest.mark.parametrize("raw", [
    "He had 3 dogs and a cat.",            # digits
    "The NASA budget grew again.",         # acronym
    "Henry VIII had six wives.",           # Roman numeral (capitals)
    "See chapter iv for the details.",     # Roman numeral (lower case)
    "Save fifty percent now with $ off.",  # symbol
    "Use the a/b testing method.",         # slash
    "Buy an iPhone today please.",         # inner capital
    "Hmm, that is very odd.",              # no vowel: engines spell it
    "Plan b is not good.",                 # single letter other than a, I, O
    "Too short.",                          # < 3 words
    " ".join(["word"] * 21) + ".",         # > 20 words
    "Caf\u00e9 au lait is nice.",          # non-ASCII
])
def test_normalize_rejects(raw):
    assert T.normalize_sentence(raw) is None


def test_kjv_capitals_and_clause_split():
    s = T.normalize_sentence("Thus saith the LORD of hosts.", allcaps_to_title=True)
    assert s.spoken == "Thus saith the Lord of hosts." and s.transcript == "THUS SAITH THE LORD OF HOSTS"
    verse = ("And it came to pass, when the men of the city saw it, that they rose up early; and they went out "
             "against Israel to battle, he and all his people, at a time appointed, before the plain.")
    parts = T.split_sentences(verse, clause_split=True)
    assert len(parts) == 2 and all(len(p.split()) <= 20 for p in parts)
    assert T.split_sentences("Mr. Brown left. She stayed! Did they go? Yes.") == \
        ["Mister Brown left.", "She stayed!", "Did they go?", "Yes."]


@pytest.mark.skipif(not all(T.source_available().values()),
                    reason="text packages missing (fortunes, bible-kjv, wordnet-base)")
def test_pool_size():
    pool = T.build_pool()
    assert len(pool) >= 30000
    assert len({s.transcript for s in pool}) == len(pool)
    assert all(3 <= s.num_words <= 20 for s in pool)
    assert {s.source for s in pool} == {"fortunes", "kjv", "wordnet"}


# ---------------------------------------------------------------- plan and splits


SENTENCES = [T.normalize_sentence(t, source="test") for t in [
    "The quick brown fox jumps over the lazy dog.",
    "It's a well known fact that cats like milk.",
    "She sells sea shells by the sea shore.",
    "Never put off till tomorrow what you can do today.",
    "A journey of a thousand miles begins with one step.",
    "The early bird catches the worm, they say.",
    "All that glitters is not gold.",
    "Where there is smoke, there is fire.",
    "Actions speak louder than words, my friend.",
    "Better late than never, as the saying goes.",
    "The pen is mightier than the sword.",
    "Fortune favors the bold and the brave.",
    "Knowledge is power, and power corrupts.",
    "Time and tide wait for no man.",
    "Every cloud has a silver lining.",
    "Honesty is the best policy in the end.",
]]


def micro_voices():
    return [
        V.VoiceSpec("flite", "slt", 3.0, (("", 1.0, 1.0), ("", 0.9, 1.0), ("", 1.1, 1.1))),
        V.VoiceSpec("espeak", "en-us", 1.0, (("m3", 1.0, 1.0), ("f2", 0.9, 1.1), ("m1", 1.1, 0.9))),
        V.VoiceSpec("flite", "kal16", 1.0, (("", 1.0, 1.0), ("", 1.1, 1.0))),
    ]


MICRO_SIZES = {"train": 6, "dev": 2, "test_seen": 2, "test_heldout": 2}


def test_plan_splits():
    plan = V.make_plan(SENTENCES, MICRO_SIZES, seed=3, voices=micro_voices(), held_out=("flite-kal16",),
                       num_babble=2)
    by_split = {s: [u for u in plan.utts if u.split == s] for s in V.SPLITS}
    assert {s: len(u) for s, u in by_split.items()} == MICRO_SIZES
    spk = {s: {u.speaker.id for u in us} for s, us in by_split.items()}
    txt = {s: {u.transcript for u in us} for s, us in by_split.items()}
    for a in V.SPLITS:
        for b in V.SPLITS:
            if a < b:
                assert not spk[a] & spk[b] and not txt[a] & txt[b]
    babble_txt = {u.transcript for u in plan.babble}
    assert not babble_txt & set().union(*txt.values())
    assert all(u.speaker.voice_id == "flite-kal16" for u in by_split["test_heldout"])
    train_voices = {u.speaker.voice_id for u in by_split["train"]}
    assert "flite-kal16" not in train_voices
    # test_seen: new speakers of voices heard in training
    assert {u.speaker.voice_id for u in by_split["test_seen"]} <= train_voices
    # same inputs, same plan
    again = V.make_plan(SENTENCES, MICRO_SIZES, seed=3, voices=micro_voices(), held_out=("flite-kal16",),
                        num_babble=2)
    assert again.utts == plan.utts
    assert V.allocate(10, [3, 1, 1]) == [6, 2, 2] and sum(V.allocate(7, [1, 1, 1])) == 7


def test_plan_train_reads_distinct_speakers():
    """train_reads=2: each training sentence read by two different speakers, still
    disjoint from the other splits."""
    sizes = {"train": 8, "dev": 2, "test_seen": 2, "test_heldout": 2}
    voices = [V.VoiceSpec(v.engine, v.voice, 1.0, v.grid) for v in micro_voices()]  # 4 + 4 train slots
    plan = V.make_plan(SENTENCES, sizes, seed=5, voices=voices, held_out=("flite-kal16",), train_reads=2)
    train = [u for u in plan.utts if u.split == "train"]
    assert len(train) == 8
    readers = {}
    for u in train:
        readers.setdefault(u.transcript, []).append(u.speaker.id)
    assert len(readers) == 4 and all(len(r) == 2 and r[0] != r[1] for r in readers.values())
    others = {u.transcript for u in plan.utts if u.split != "train"}
    assert not others & set(readers)
    with pytest.raises(ValueError, match="train_reads"):
        V.make_plan(SENTENCES, sizes, seed=5, voices=voices, held_out=("flite-kal16",), train_reads=0)
    with pytest.raises(ValueError, match="distinct sentences"):  # 6 of 8 slots on one speaker
        V.make_plan(SENTENCES, sizes, seed=5, voices=micro_voices(), held_out=("flite-kal16",), train_reads=2)


def test_closed_vocabulary_restriction():
    import closed_vocab as C

    kept, vocab = C.restrict_pool(SENTENCES, size=50, min_words=4, max_words=8)
    assert len(vocab) == 50 and vocab[0] == "THE"  # most frequent first
    allowed = set(vocab)
    assert len(kept) == 2 and all(set(s.transcript.split()) <= allowed and 4 <= s.num_words <= 8 for s in kept)
    left_out = [s for s in SENTENCES if s not in kept and 4 <= s.num_words <= 8]
    assert all(not set(s.transcript.split()) <= allowed for s in left_out)
    with pytest.raises(ValueError, match="min_words"):
        C.restrict_pool(SENTENCES, size=12, min_words=5, max_words=4)


def test_default_inventory():
    voices = V.default_voices()
    ids = [s.id for v in voices for s in v.speakers()]
    assert len(ids) == len(set(ids))
    assert len({v.voice for v in voices if v.engine == "espeak"}) == 8
    splits = V.assign_speakers(voices, V.DEFAULT_HELD_OUT, seed=0)
    held = {s.voice_id for _, s in splits["test_heldout"]}
    assert held == set(V.DEFAULT_HELD_OUT)
    assert not held & {s.voice_id for _, s in splits["train"]}
    # realistic engines carry most of the training weight
    w = {v.voice_id: v.weight for v in voices if v.voice_id not in V.DEFAULT_HELD_OUT}
    espeak = sum(x for k, x in w.items() if k.startswith("espeak"))
    assert espeak < 0.25 * sum(w.values())


# ---------------------------------------------------------------- sox and degradations


@needs_tts
@pytest.mark.parametrize("sr", [22050, 32000])
def test_sox_effects_keep_timing(sr):
    from synth_degrade import run_sox

    x = np.zeros(sr, np.float32)
    x[sr // 2] = 1.0
    for eff in ([], ["sinc", "300-3400"], ["reverb", "50", "50", "80", "100", "0", "0"],
                ["equalizer", "1000", "1q", "6"], ["highpass", "150"]):
        y = run_sox(x, sr, eff)
        assert len(y) == 16000
        assert abs(int(np.argmax(np.abs(y))) - 8000) <= 2, eff


# ---------------------------------------------------------------- micro corpus end to end


@pytest.fixture(scope="module")
def micro_corpus(tmp_path_factory):
    from build_corpus import build_corpus
    from make_manifests import make_manifests
    from synth_degrade import DegradeConfig

    root = tmp_path_factory.mktemp("synth")
    cfg = DegradeConfig(snr_min=15.0, snr_max=30.0)
    kw = dict(sizes=MICRO_SIZES, seed=7, num_babble=2, cfg=cfg, voices=micro_voices(),
              held_out=("flite-kal16",), pool=SENTENCES, progress=False)
    summary = build_corpus(root / "a", num_jobs=1, **kw)
    build_corpus(root / "b", num_jobs=2, **kw)
    counts = make_manifests(root / "a", root / "a_manifests")
    return root, summary, counts, kw


@needs_tts
def test_micro_corpus_manifests(micro_corpus):
    from lhotse import CutSet, RecordingSet, SupervisionSet
    from synth_degrade import longest_constant_run

    root, summary, counts, _ = micro_corpus
    assert counts == MICRO_SIZES
    assert summary["_build"]["failed"] == 0
    man = root / "a_manifests"
    speakers, texts = {}, {}
    for split in MICRO_SIZES:
        recs = RecordingSet.from_file(man / f"recordings_{split}.jsonl.gz")
        sups = SupervisionSet.from_file(man / f"supervisions_{split}.jsonl.gz")
        cuts = CutSet.from_file(man / f"cuts_{split}_raw.jsonl.gz")
        assert len(recs) == len(sups) == len(cuts) == MICRO_SIZES[split]
        speakers[split] = {s.speaker for s in sups}
        texts[split] = {s.text for s in sups}
        for cut in cuts:
            sup = cut.supervisions[0]
            assert cut.sampling_rate == 16000 and cut.num_channels == 1
            audio = cut.load_audio()
            assert audio.shape == (1, cut.num_samples)
            assert longest_constant_run(np.round(audio[0] * 32768).astype(np.int16)) <= 8, cut.id
            assert sup.text == sup.text.upper()
            items = sup.alignment["word"]
            assert [it.symbol for it in items] == sup.text.split()
            prev = 0.0
            for it in items:
                assert it.duration > 0 and it.start >= prev - 1e-4 and it.end <= cut.duration + 1e-4
                prev = it.end
            # word spans hold the speech: louder than the noise-only lead pad
            x = audio[0].astype(np.float64)
            first, last = int(items[0].start * 16000), int(items[-1].end * 16000)
            lead = x[: max(160, first - 800)]
            assert np.mean(x[first:last] ** 2) > 3 * np.mean(lead ** 2), cut.id
    for a in MICRO_SIZES:
        for b in MICRO_SIZES:
            if a < b:
                assert not speakers[a] & speakers[b]
                assert not texts[a] & texts[b]
    assert (man / "transcripts_train.txt").read_text().count("\n") == MICRO_SIZES["train"]


@needs_tts
def test_micro_corpus_deterministic_and_idempotent(micro_corpus):
    from build_corpus import build_corpus

    root, _, _, kw = micro_corpus
    a, b = root / "a", root / "b"
    flacs = sorted(p.relative_to(a) for p in (a / "wav").rglob("*.flac"))
    assert len(flacs) == sum(MICRO_SIZES.values())
    for rel in flacs:  # same seed, different --num-jobs: identical bytes
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
        ja = json.loads((a / rel).with_suffix(".json").read_text())
        jb = json.loads((b / rel).with_suffix(".json").read_text())
        assert ja == jb
    # rerun: nothing is rebuilt
    mtimes = {rel: os.stat(a / rel).st_mtime_ns for rel in flacs}
    build_corpus(a, num_jobs=1, **kw)
    assert {rel: os.stat(a / rel).st_mtime_ns for rel in flacs} == mtimes
    # a damaged utterance (truncated audio) is rebuilt, identically
    victim = a / flacs[0]
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 2])
    build_corpus(a, num_jobs=1, **kw)
    assert victim.read_bytes() == good


@needs_tts
def test_word_times_follow_trim_and_pad(micro_corpus):
    """The recorded times equal the engine times shifted by pad - trim."""
    from synth_engines import synthesize_many

    root, _, _, _ = micro_corpus
    meta = json.loads(next((root / "a" / "wav" / "train").glob("flite-slt-*.json")).read_text())
    spk = V.Speaker(**meta["speaker"])
    syn, err = synthesize_many([(meta["spoken"], spk)])[0]
    assert syn is not None, err
    d = meta["degradation"]
    shift = d["pad_lead_s"] - d["trim_start_s"]
    for (w, s, e), (s0, e0) in zip(meta["words"], syn.words):
        assert abs(s - (s0 + shift)) < 1e-4 and abs(e - (e0 + shift)) < 1e-4, w
