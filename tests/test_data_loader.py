"""Data module: batch layout, determinism, exact resume, augmentation, errors."""
import logging

import pytest
import torch

from asr_kd.data.augment import SpecAugment, SpecAugmentConfig
from asr_kd.data.datamodule import AsrDataModule, DataConfig, filter_short_cuts
from asr_kd.data.features import FEATURE_PAD_VALUE
from toy_corpus import make_noise_cuts, make_synthetic_cuts, write_transcripts
from asr_kd.data.tokenizer import Tokenizer, train_bpe

KEYS = {"features", "feature_lens", "texts", "cut_ids", "cuts"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from lhotse import LilcomChunkyWriter, NumpyFilesWriter

    from asr_kd.data.features import lhotse_fbank_extractor

    d = tmp_path_factory.mktemp("corpus")
    cuts = make_synthetic_cuts(d / "wav", num_cuts=16, max_words=4)
    tok = Tokenizer(train_bpe(write_transcripts(cuts, d / "tr.txt"), d / "lang", vocab_size=20))
    try:
        import lilcom  # noqa: F401
        writer = LilcomChunkyWriter
    except ImportError:
        writer = NumpyFilesWriter
    feats = cuts.compute_and_store_features(
        lhotse_fbank_extractor(), d / "feats", storage_type=writer, progress_bar=False
    ).to_eager()
    noise = make_noise_cuts(d / "noise")
    noise.to_file(d / "noise.jsonl.gz")
    return {"dir": d, "audio_cuts": cuts, "feat_cuts": feats, "tok": tok,
            "noise": d / "noise.jsonl.gz"}


def _cfg(**kw):
    base = dict(max_duration=3.0, num_buckets=2, num_workers=0, seed=7, spec_augment=False)
    base.update(kw)
    return DataConfig(**base)


def _epoch(dm, cuts, state=None, limit=None, epoch=None):
    dl = dm.train_dataloader(cuts, sampler_state=state)
    if epoch is not None:
        dm.sampler.set_epoch(epoch)
    out = []
    for b in dl:
        out.append(b)
        if limit is not None and len(out) == limit:
            break
    return out


def _same(a, b):
    assert [x["cut_ids"] for x in a] == [x["cut_ids"] for x in b]
    for x, y in zip(a, b):
        assert torch.equal(x["features"], y["features"])
        assert torch.equal(x["feature_lens"], y["feature_lens"])


def test_batch_layout(corpus):
    cuts = corpus["feat_cuts"]
    batches = _epoch(AsrDataModule(_cfg(return_clean=True)), cuts)
    seen = []
    for b in batches:
        assert KEYS | {"clean_features"} == set(b)
        B, T, F = b["features"].shape
        assert F == 80 and b["features"].dtype == torch.float32
        assert b["feature_lens"].dtype == torch.int64 and b["feature_lens"].shape == (B,)
        assert int(b["feature_lens"].max()) == T
        assert len(b["texts"]) == len(b["cut_ids"]) == len(b["cuts"]) == B
        assert [c.id for c in b["cuts"]] == b["cut_ids"]
        assert b["clean_features"].shape == b["features"].shape
        assert torch.equal(b["clean_features"], b["features"])  # no augmentation configured
        for i, c in enumerate(b["cuts"]):
            n = int(b["feature_lens"][i])
            assert n == c.num_frames
            assert torch.all(b["features"][i, n:] == FEATURE_PAD_VALUE)
            assert b["texts"][i] == c.supervisions[0].text
        assert sum(c.duration for c in b["cuts"]) <= 3.0 + 1e-6
        seen += b["cut_ids"]
    assert sorted(seen) == sorted(c.id for c in cuts)  # every cut once per epoch


def test_stored_and_on_the_fly_features_agree(corpus):
    stored = _epoch(AsrDataModule(_cfg(shuffle=False)), corpus["feat_cuts"], limit=2)
    fly = _epoch(AsrDataModule(_cfg(shuffle=False, on_the_fly_feats=True)), corpus["audio_cuts"], limit=2)
    assert [b["cut_ids"] for b in stored] == [b["cut_ids"] for b in fly]
    for a, b in zip(stored, fly):
        assert torch.equal(a["feature_lens"], b["feature_lens"])
        # lilcom storage is lossy: half of 2**-5
        assert (a["features"] - b["features"]).abs().max() <= 2.0 ** -6 + 1e-5


def test_same_seed_same_batches_any_workers(corpus):
    cuts = corpus["audio_cuts"]
    kw = dict(on_the_fly_feats=True, spec_augment=True, noise_cuts=corpus["noise"], noise_prob=0.5)
    a = _epoch(AsrDataModule(_cfg(**kw)), cuts)
    b = _epoch(AsrDataModule(_cfg(**kw)), cuts)
    _same(a, b)
    c = _epoch(AsrDataModule(_cfg(num_workers=2, **kw)), cuts)
    _same(a, c)
    d = _epoch(AsrDataModule(_cfg(**dict(kw, seed=8))), cuts)
    assert [x["cut_ids"] for x in a] != [x["cut_ids"] for x in d]
    e = _epoch(AsrDataModule(_cfg(**kw)), cuts, epoch=1)
    assert [x["cut_ids"] for x in a] != [x["cut_ids"] for x in e]


@pytest.mark.parametrize("first_workers", [0, 2])
def test_resume_gives_remaining_batches(corpus, first_workers):
    """Interrupt after 2 batches (workers may have prefetched more), resume, compare."""
    cuts = corpus["feat_cuts"]
    cfg = _cfg(spec_augment=True, seed=3)
    full = _epoch(AsrDataModule(cfg), cuts, epoch=1)
    assert len(full) >= 4
    dm = AsrDataModule(_cfg(spec_augment=True, seed=3, num_workers=first_workers))
    head = _epoch(dm, cuts, limit=2, epoch=1)
    state = dm.sampler.state_dict()
    assert state["batches_consumed"] == 2 and state["epoch"] == 1
    dm2 = AsrDataModule(cfg)
    dl = dm2.train_dataloader(cuts, sampler_state=state)
    dm2.sampler.set_epoch(1)  # what a training loop does at the top of the epoch
    tail = list(dl)
    _same(head + tail, full)
    assert dm2.sampler.state_dict()["batches_consumed"] == len(full)
    # the next pass (next epoch) starts from its beginning
    dm2.sampler.set_epoch(2)
    nxt = list(dl)
    assert sorted(i for b in nxt for i in b["cut_ids"]) == sorted(cuts.ids)
    assert dm2.sampler.state_dict() == dict(state, epoch=2, batches_consumed=len(nxt))


def _masked_only(clean, aug, lens):
    """Every changed cell lies in a fully masked frame or band of the valid region."""
    for i in range(clean.size(0)):
        n = int(lens[i])
        c, a = clean[i, :n], aug[i, :n]
        assert torch.equal(clean[i, n:], aug[i, n:])
        changed = c != a
        if not changed.any():
            continue
        fill = c.mean()
        assert torch.allclose(a[changed], fill.expand(int(changed.sum())))
        is_fill = (a == fill)
        rows = is_fill.all(dim=1)
        cols = is_fill.all(dim=0)
        covered = rows[:, None] | cols[None, :]
        assert bool(covered[changed].all())


def test_spec_augment_leaves_clean_untouched(corpus):
    cuts = corpus["feat_cuts"]
    plain = _epoch(AsrDataModule(_cfg(return_clean=False)), cuts)
    aug = _epoch(AsrDataModule(_cfg(return_clean=True, spec_augment=True)), cuts)
    n_changed = 0
    for p, a in zip(plain, aug):
        assert p["cut_ids"] == a["cut_ids"]
        assert torch.equal(a["clean_features"], p["features"])
        _masked_only(a["clean_features"], a["features"], a["feature_lens"])
        n_changed += int((a["clean_features"] != a["features"]).sum())
    assert n_changed > 0


def test_spec_augment_policy():
    sa = SpecAugment(SpecAugmentConfig(p=1.0))
    assert sa.time_masks_for(1000) == (2, 75)
    assert sa.time_masks_for(300) == (1, 45)
    assert sa.time_masks_for(5) == (0, 0)
    x = torch.randn(3, 400, 80)
    lens = torch.tensor([400, 250, 120])
    x[1, 250:] = FEATURE_PAD_VALUE
    x[2, 120:] = FEATURE_PAD_VALUE
    g = torch.Generator().manual_seed(0)
    y = sa(x, lens, generator=g)
    _masked_only(x, y, lens)
    assert not torch.equal(x, y)
    g2 = torch.Generator().manual_seed(0)
    assert torch.equal(sa(x, lens, generator=g2), y)


def test_noise_mixing_keeps_clean_and_length(corpus):
    cuts = corpus["audio_cuts"]
    plain = _epoch(AsrDataModule(_cfg(on_the_fly_feats=True)), cuts, limit=3)
    noisy = _epoch(AsrDataModule(_cfg(on_the_fly_feats=True, return_clean=True,
                                      noise_cuts=corpus["noise"], noise_prob=1.0,
                                      noise_snr=(0.0, 5.0))), cuts, limit=3)
    for p, n in zip(plain, noisy):
        assert p["cut_ids"] == n["cut_ids"]
        assert torch.equal(n["clean_features"], p["features"])
        assert n["features"].shape == p["features"].shape
        for i, length in enumerate(n["feature_lens"].tolist()):
            assert (n["features"][i, :length] - p["features"][i, :length]).abs().mean() > 0.1
    # stored-feature training with noise needs noise features
    with pytest.raises(ValueError, match="noise cut 'noise0' has no features"):
        AsrDataModule(_cfg(noise_cuts=corpus["noise"]))


def test_speed_perturb(corpus):
    with pytest.raises(ValueError, match="on_the_fly_feats"):
        AsrDataModule(_cfg(speed_perturb=True))
    cuts = corpus["audio_cuts"].subset(first=4)
    batches = _epoch(AsrDataModule(_cfg(speed_perturb=True, on_the_fly_feats=True)), cuts)
    ids = sorted(i for b in batches for i in b["cut_ids"])
    assert len(ids) == 12 and any(i.endswith("_sp0.9") for i in ids)
    lens = {i: int(b["feature_lens"][k]) for b in batches for k, i in enumerate(b["cut_ids"])}
    base = cuts[0].id
    assert lens[base + "_sp0.9"] > lens[base] > lens[base + "_sp1.1"]


def _broken_audio_cut(corpus, tmp_path):
    """A cut whose WAV file holds garbage bytes (valid when the manifest was made)."""
    import shutil
    from dataclasses import replace

    from lhotse import CutSet

    cut = corpus["audio_cuts"][0]
    path = tmp_path / "broken.wav"
    shutil.copy(cut.recording.sources[0].source, path)
    rec = replace(cut.recording, id="broken",
                  sources=[replace(cut.recording.sources[0], source=str(path))])
    sup = replace(cut.supervisions[0], id="broken", recording_id="broken")
    bad = replace(cut, id="broken-cut", recording=rec, supervisions=[sup])
    path.write_bytes(b"RIFF" + bytes(range(256)) * 8)
    return CutSet.from_cuts([bad]), path


def test_unreadable_audio_names_cut_and_file(corpus, tmp_path):
    bad, path = _broken_audio_cut(corpus, tmp_path)
    dm = AsrDataModule(_cfg(on_the_fly_feats=True))
    with pytest.raises(RuntimeError) as e:
        _epoch(dm, bad)
    assert "broken-cut" in str(e.value) and str(path) in str(e.value)


def test_unreadable_features_name_cut_and_file(corpus, tmp_path):
    from dataclasses import replace

    from lhotse import CutSet

    cut = corpus["feat_cuts"][0]
    missing = tmp_path / "missing.lca"
    broken = replace(cut, features=replace(cut.features, storage_path=str(missing)))
    with pytest.raises(RuntimeError) as e:
        _epoch(AsrDataModule(_cfg()), CutSet.from_cuts([broken]))
    assert cut.id in str(e.value) and str(missing) in str(e.value)
    garbage = tmp_path / "garbage.lca"
    garbage.write_bytes(b"\x00garbage" * 100)
    broken = replace(cut, features=replace(cut.features, storage_path=str(garbage)))
    with pytest.raises(RuntimeError, match=f"{cut.id}.*garbage.lca"):
        _epoch(AsrDataModule(_cfg()), CutSet.from_cuts([broken]))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # lhotse: empty bucket estimate
def test_empty_transcript_is_an_error(corpus, tmp_path):
    cuts = make_synthetic_cuts(tmp_path / "w", num_cuts=3, empty_text_ids=[1])
    with pytest.raises(ValueError) as e:
        filter_short_cuts(cuts, corpus["tok"])
    msg = str(e.value)
    assert "utt0001" in msg and "utt0001.wav" in msg and "empty transcript" in msg
    with pytest.raises(ValueError, match="utt0001.*empty transcript"):
        _epoch(AsrDataModule(_cfg(on_the_fly_feats=True, max_duration=100.0)), cuts)


def test_filter_short_cuts(corpus, caplog):
    from dataclasses import replace
    from lhotse import CutSet

    cuts = list(corpus["feat_cuts"])
    sup = cuts[0].supervisions[0]
    long_text = " ".join(["ALPHA BRAVO CHARLIE DELTA ECHO FOXTROT GOLF HOTEL"] * 6)
    victim = replace(cuts[0], id="too-short", supervisions=[replace(sup, text=long_text)])
    with caplog.at_level(logging.INFO, logger="asr_kd.data.datamodule"):
        kept = filter_short_cuts(CutSet.from_cuts(cuts + [victim]), corpus["tok"])
    assert len(kept) == len(cuts) and "too-short" not in set(kept.ids)
    assert "dropped 1 of 17" in caplog.text and "e.g. too-short" in caplog.text  # named
    # the fastest speed-perturbed copy must also be long enough
    n_frames = cuts[0].num_frames
    n_tok = len(corpus["tok"].encode([cuts[0].supervisions[0].text])[0])
    exact = (lambda t: t // 4)
    assert len(filter_short_cuts(CutSet.from_cuts(cuts[:1]), corpus["tok"], encoder_frames=exact)) == 1
    speed = 1.5 * n_frames / (4 * n_tok)  # shrinks T' below the token count
    assert speed > 1.0
    assert len(filter_short_cuts(CutSet.from_cuts(cuts[:1]), corpus["tok"], encoder_frames=exact,
                                 max_speed=speed)) == 0
    # an exact encoder length function can be supplied
    kept = filter_short_cuts(CutSet.from_cuts(cuts), corpus["tok"], encoder_frames=lambda t: 0)
    assert len(kept) == 0


def test_text_normaliser():
    from asr_kd.data.text import normalize_text

    assert normalize_text("hello, world!") == "HELLO WORLD"
    assert normalize_text("'Tis the well-known Caf\u00e9\u2019s  end.") == "TIS THE WELL KNOWN CAFE'S END"
    assert normalize_text("DON'T STOP") == "DON'T STOP"  # recipe transcripts are unchanged
    assert normalize_text("... !") == ""
    assert normalize_text("\u0436\u0443\u043a") == "\u0416\u0423\u041a"  # no ASCII base: kept, upper-cased


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_odd_transcripts_are_normalised_counted_or_refused(corpus, tmp_path, caplog):
    from dataclasses import replace

    from lhotse import CutSet

    from asr_kd.data.tokenizer import train_bpe

    cuts = list(corpus["feat_cuts"])[:3]
    sup = cuts[0].supervisions[0]

    def with_text(i, cid, text):
        return replace(cuts[i], id=cid, supervisions=[replace(cuts[i].supervisions[0], text=text)])

    tok = corpus["tok"]
    lower = with_text(0, "lower", sup.text.lower() + ",")
    assert tok.unk_id in tok.encode([lower.supervisions[0].text])[0]  # raw text: lower case is <unk>
    odd = with_text(1, "odd", cuts[1].supervisions[0].text + " \u0436\u0436")
    with caplog.at_level(logging.WARNING, logger="asr_kd.data.datamodule"):
        kept = filter_short_cuts(CutSet.from_cuts([lower, odd, cuts[2]]), tok, encoder_frames=lambda t: 1000,
                                 manifest="training manifest tr.jsonl.gz")
    assert len(kept) == 3
    assert "training manifest tr.jsonl.gz: 1 of 3 transcripts contain <unk>" in caplog.text
    assert "odd:" in caplog.text and "lower:" not in caplog.text
    allunk = with_text(1, "allunk", "\u0436\u0436\u0436 \u0436")
    with pytest.raises(ValueError, match="cut 'allunk' in the validation manifest dev.jsonl.gz: .* is all <unk>"):
        filter_short_cuts(CutSet.from_cuts([allunk]), tok, manifest="validation manifest dev.jsonl.gz")
    punct = with_text(1, "punct", "... !")
    with pytest.raises(ValueError, match="'punct' .*empty transcript after normalisation; fix or remove it "
                                         "from the validation manifest dev.jsonl.gz"):
        filter_short_cuts(CutSet.from_cuts([punct]), tok, manifest="validation manifest dev.jsonl.gz")
    # BPE training sees the same normalised text: lower-case transcripts give the same model
    upper_txt, lower_txt = tmp_path / "u.txt", tmp_path / "l.txt"
    lines = [c.supervisions[0].text for c in corpus["feat_cuts"]]
    upper_txt.write_text("\n".join(lines) + "\n")
    lower_txt.write_text("\n".join(x.lower() + "." for x in lines) + "\n")
    a = train_bpe(upper_txt, tmp_path / "a", vocab_size=20).read_bytes()
    b = train_bpe(lower_txt, tmp_path / "b", vocab_size=20).read_bytes()
    assert a == b
