"""Teacher cache: contents equal a live teacher, resumable writes, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from asr_kd.distill.cache import MissingCutError, TeacherCache, cache_key, write_teacher_cache


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from lhotse import NumpyFilesWriter

    from asr_kd.data.features import lhotse_fbank_extractor
    from toy_corpus import make_synthetic_cuts
    from asr_kd.models import build_transducer, preset_config

    d = tmp_path_factory.mktemp("cache_corpus")
    cuts = make_synthetic_cuts(d / "wav", num_cuts=5, max_words=3, seed=2)
    cuts = cuts.compute_and_store_features(
        lhotse_fbank_extractor(), d / "feats", storage_type=NumpyFilesWriter, progress_bar=False
    ).to_eager()
    cuts.to_file(d / "cuts.jsonl.gz")
    torch.manual_seed(0)
    teacher = build_transducer(preset_config("tiny", "teacher", 20)).eval()
    return {"dir": d, "cuts": cuts, "manifest": d / "cuts.jsonl.gz", "teacher": teacher}


def _write(setup, out, layers=(0,), sha="abc", **kw):
    return write_teacher_cache(setup["teacher"], [setup["manifest"]], out, list(layers), "t.pt", sha,
                               shard_size=2, max_duration=3.0, progress=False, **kw)


def test_cache_holds_teacher_outputs_per_cut(setup, tmp_path) -> None:
    from asr_kd.data.dataset import load_cut_features
    from asr_kd.data.features import feature_config_dict

    _write(setup, tmp_path / "c")
    cache = TeacherCache(tmp_path / "c")
    assert len(cache.index) == 5 and len(list((tmp_path / "c" / "shards").glob("*.pt"))) == 3
    cache.check("abc", "t.pt", [0, 1], feature_config_dict())  # layer 1 = last = encoder output
    for cut in setup["cuts"]:
        f = load_cut_features(cut, on_the_fly=False)
        with torch.no_grad():
            enc = setup["teacher"].encoder(f[None], torch.tensor([f.shape[0]]), return_layers=[0])
        e = cache.entry(cut.id)
        assert torch.allclose(e["encoder_out"], enc.out[0], atol=1e-5)
        assert torch.allclose(e[cache_key(0)], enc.hidden[0][0], atol=1e-5)
    ids = [c.id for c in setup["cuts"]][:3]
    lens = torch.tensor([cache.entry(i)["encoder_out"].shape[0] for i in ids])
    out, hidden = cache.batch(ids, lens, [0, 1], torch.device("cpu"))
    assert out.shape == (3, int(lens.max()), 64) and len(hidden) == 2
    assert torch.equal(hidden[1], out)  # the last layer is served from the encoder output
    assert float(out[int(lens.argmin()), int(lens.min()):].abs().sum()) == 0.0  # zero padding


def test_rerun_skips_finished_shards(setup, tmp_path) -> None:
    _write(setup, tmp_path / "c")
    shards = sorted((tmp_path / "c" / "shards").glob("*.pt"))
    mtimes = [p.stat().st_mtime_ns for p in shards]
    shards[-1].unlink()  # an interrupted run: the last shard was never written
    (tmp_path / "c" / "index.json").unlink()
    _write(setup, tmp_path / "c")
    assert [p.stat().st_mtime_ns for p in shards[:-1]] == mtimes[:-1]
    assert shards[-1].is_file() and len(TeacherCache(tmp_path / "c").index) == 5
    assert not list((tmp_path / "c" / "shards").glob(".*tmp*"))


def test_errors_are_clear(setup, tmp_path) -> None:
    from asr_kd.data.features import feature_config_dict

    _write(setup, tmp_path / "c")
    with pytest.raises(ValueError, match="written with other settings"):
        _write(setup, tmp_path / "c", layers=())
    cache = TeacherCache(tmp_path / "c")
    with pytest.raises(MissingCutError, match="cut 'nope' is not in the teacher cache"):
        cache.batch(["nope"], torch.tensor([3]), [], torch.device("cpu"))
    with pytest.raises(ValueError, match="sha256"):
        cache.check("other", "t2.pt", [], feature_config_dict())
    with pytest.raises(ValueError, match=r"needs teacher layers \[5\]"):
        cache.check("abc", "t.pt", [5], feature_config_dict())
    with pytest.raises(ValueError, match="feature front ends differ"):
        cache.check("abc", "t.pt", [], dict(feature_config_dict(), num_mel_bins=40))
    cut_id = setup["cuts"][0].id
    n = cache.entry(cut_id)["encoder_out"].shape[0]
    with pytest.raises(ValueError, match=f"cut '{cut_id}'.*{n} encoder frames"):
        cache.batch([cut_id], torch.tensor([n + 1]), [], torch.device("cpu"))
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="not a complete teacher cache"):
        TeacherCache(tmp_path / "d")
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["layers"] == [0] and meta["teacher_sha256"] == "abc"
