"""compute_fbank CLI: parallel, idempotent, atomic; errors name the cut and file."""
import os

import numpy as np
import pytest

from asr_kd.data.features import compute_fbank
from toy_corpus import make_synthetic_cuts


@pytest.fixture(scope="module")
def raw_cuts(tmp_path_factory):
    d = tmp_path_factory.mktemp("raw")
    cuts = make_synthetic_cuts(d / "wav", num_cuts=6)
    path = d / "cuts_raw.jsonl.gz"
    cuts.to_file(path)
    return path


@pytest.mark.parametrize("num_jobs", [1, 2])
def test_compute_fbank_cli(raw_cuts, tmp_path, num_jobs):
    from lhotse import CutSet

    from asr_kd.bin.compute_fbank import main

    out = tmp_path / "cuts_train.jsonl.gz"
    try:
        import lilcom  # noqa: F401  (a declared dependency; fall back if an old install lacks it)
        storage_type = "lilcom_chunky"
    except ImportError:
        storage_type = "numpy_files"
    args = ["--cuts", str(raw_cuts), "--out-cuts", str(out), "--storage", str(tmp_path / "feats"),
            "--num-jobs", str(num_jobs), "--storage-type", storage_type]
    main(args)
    cuts = CutSet.from_file(out)
    assert list(cuts.ids) == list(CutSet.from_file(raw_cuts).ids)  # input order kept
    for c in cuts:
        stored = c.load_features()
        fresh = compute_fbank(c.load_audio()).numpy()
        assert stored.shape == fresh.shape == (c.num_frames, 80)
        assert np.abs(stored - fresh).max() <= 2.0 ** -6 + 1e-5  # lilcom: half a 2**-5 tick
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    # idempotent: a rerun leaves the finished manifest alone
    mtime = os.stat(out).st_mtime_ns
    main(args)
    assert os.stat(out).st_mtime_ns == mtime


def test_compute_fbank_speed_perturb(raw_cuts, tmp_path):
    from lhotse import CutSet

    from asr_kd.bin.compute_fbank import main

    out = tmp_path / "sp.jsonl.gz"
    main(["--cuts", str(raw_cuts), "--out-cuts", str(out), "--storage", str(tmp_path / "f"),
          "--speed-factors", "0.9,1.1", "--storage-type", "numpy_files"])
    cuts = CutSet.from_file(out)
    assert len(cuts) == 18
    by_id = {c.id: c for c in cuts}
    base = next(iter(by_id))
    assert by_id[base + "_sp0.9"].num_frames > by_id[base].num_frames > by_id[base + "_sp1.1"].num_frames
    f = by_id[base + "_sp0.9"]
    assert np.array_equal(f.load_features(), compute_fbank(f.load_audio()).numpy())  # lossless storage


def test_compute_fbank_bad_audio(raw_cuts, tmp_path):
    import shutil
    from dataclasses import replace

    from lhotse import CutSet

    from asr_kd.bin.compute_fbank import main

    cuts = CutSet.from_file(raw_cuts).to_eager()
    bad_path = cuts[2].recording.sources[0].source
    # work on a copy of the audio so other tests keep their files
    wav = tmp_path / "wav"
    shutil.copytree(os.path.dirname(bad_path), wav)

    fixed = []
    for c in cuts:
        src = str(wav / os.path.basename(c.recording.sources[0].source))
        rec = replace(c.recording, sources=[replace(c.recording.sources[0], source=src)])
        fixed.append(replace(c, recording=rec))
    broken_wav = wav / os.path.basename(bad_path)
    broken_wav.write_bytes(b"not a wav file" * 50)
    manifest = tmp_path / "in.jsonl.gz"
    CutSet.from_cuts(fixed).to_file(manifest)
    out = tmp_path / "out.jsonl.gz"
    with pytest.raises(RuntimeError) as e:
        main(["--cuts", str(manifest), "--out-cuts", str(out), "--storage", str(tmp_path / "f")])
    assert fixed[2].id in str(e.value) and str(broken_wav) in str(e.value)
    assert not out.exists()
