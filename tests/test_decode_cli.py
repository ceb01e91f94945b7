"""End to end: python -m asr_kd.bin.decode and asr_kd.bin.compare on a tiny synthetic set."""
import json
from pathlib import Path
import re

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet, Recording, SupervisionSegment
from lhotse.supervision import AlignmentItem
from lhotse.utils import fastcopy

from asr_kd.bin import compare as compare_cli
from asr_kd.bin import decode as decode_cli
from asr_kd.data.features import feature_config_dict
from toy_corpus import WORDS, make_synthetic_cuts, write_transcripts
from asr_kd.data.tokenizer import Tokenizer, file_sha256, train_bpe
from asr_kd.decode import DecodeSettings, decode_cuts
from asr_kd.metrics.results import REQUIRED_FIELDS
from asr_kd.models import build_transducer, preset_config


def _with_word_times(cut):
    """Word alignment from the synthesis recipe of tests/toy_corpus.py (0.1 s lead, tone + 50 ms gap)."""
    sup = cut.supervisions[0]
    t, items = 0.1, []
    for w in sup.text.split():
        dur = 0.18 + 0.04 * (WORDS.index(w) % 3)
        items.append(AlignmentItem(w, round(t, 4), round(dur, 4)))
        t += dur + 0.05
    sup = fastcopy(sup, alignment={"word": items})
    return fastcopy(cut, supervisions=[sup])


def _bad_cut(d, name, samples, text="ALPHA"):
    path = d / f"{name}.wav"
    sf.write(str(path), samples.astype(np.float32), 16000, subtype="PCM_16")
    rec = Recording.from_file(path, recording_id=name)
    cut = rec.to_cut()
    cut.supervisions = [SupervisionSegment(name, name, 0.0, rec.duration, text=text)]
    return cut


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("dec")
    cuts = make_synthetic_cuts(d / "wav", num_cuts=5, seed=3)
    write_transcripts(cuts, d / "text.txt")
    bpe = train_bpe(d / "text.txt", d / "lang", vocab_size=20)
    good = CutSet.from_cuts([_with_word_times(c) for c in cuts])
    bad = [_bad_cut(d, "empty", np.zeros(0)), _bad_cut(d, "short", 0.1 * np.ones(500)),
           _bad_cut(d, "silence", np.zeros(16000))]
    all_cuts = good + CutSet.from_cuts(bad)
    all_cuts.to_file(d / "cuts_test.jsonl.gz")
    cuts.to_file(d / "cuts_noali.jsonl.gz")  # no word alignments
    torch.manual_seed(0)
    cfg = preset_config("tiny", "student", vocab_size=Tokenizer(bpe).vocab_size, chunk_sizes=(8,),
                        left_contexts=(16,))
    model = build_transducer(cfg).eval()
    with torch.no_grad():  # random model: let tokens win on some frames
        model.joiner.output_linear.bias[0] -= 1.0
    ckpt = d / "epoch-1.pt"
    torch.save({"model": model.state_dict(), "model_config": cfg.to_dict(),
                "feature_config": feature_config_dict(), "bpe_model": str(bpe),
                "bpe_sha256": file_sha256(bpe), "epoch": 1, "batch_idx": 0}, ckpt)
    return d, ckpt, bpe, model


# the <setting> part of output file names, as docs/decoding.md describes it
SETTING_RX = (r"(?:greedy|modified_beam_search_beam\d+)-(?:offline|streaming|simulated-streaming)"
              r"(?:-chunk\d+ms-left(?:-1|\d+)ms)?")


def _run(d, ckpt, out, *extra):
    args = ["--checkpoint", str(ckpt), "--cuts", str(d / "cuts_test.jsonl.gz"), "--out-dir", str(out),
            "--model-name", "tiny", "--no-progress", *extra]
    assert decode_cli.main(args) == 0
    return json.loads((out / "results.json").read_text())


def test_decode_modes_rows_and_determinism(setup, tmp_path):
    d, ckpt, _, _ = setup
    out = tmp_path / "out"
    rows = _run(d, ckpt, out, "--mode", "streaming", "--chunk-sizes-ms", "320,640")
    rows = _run(d, ckpt, out, "--mode", "simulated-streaming", "--chunk-sizes-ms", "320", "640")
    rows = _run(d, ckpt, out, "--mode", "offline")
    rows = _run(d, ckpt, out, "--mode", "streaming", "--method", "modified_beam_search", "--beam", "2",
                "--chunk-sizes-ms", "320")
    assert len(rows) == 6
    for r in rows:
        assert set(REQUIRED_FIELDS) <= set(r)
        assert r["test_set"] == "test" and r["model"] == "tiny" and r["num_threads"] == 1
        assert r["num_utts"] == 8 and r["num_empty_by_bad_audio"] == 3
        assert r["ref_times"] == "corpus"
        assert r["rtf"] > 0
        # every corpus word has a duration, so every correct word has a word-end latency
        assert r["num_word_end_words"] == r["num_symbol_delay_words"]
    by = {(r["mode"], r["decoding"], r["chunk_ms"]): r for r in rows}
    stream, sim = by[("streaming", "greedy", 320)], by[("simulated-streaming", "greedy", 320)]
    assert stream["chunk_frames"] == 32 and stream["left_context_ms"] == 640
    assert by[("offline", "greedy", None)]["chunk_ms"] is None
    for k in ("wer", "first_token_latency_ms", "mean_symbol_delay_ms", "mean_availability_delay_ms"):
        assert stream[k] == sim[k]
    # streaming and simulated streaming: the same hypotheses and times, file for file
    for kind, ext in (("recogs", "txt"), ("errs", "txt"), ("timings", "jsonl")):
        a = out / f"{kind}-test-greedy-streaming-chunk320ms-left640ms-tiny.{ext}"
        b = out / f"{kind}-test-greedy-simulated-streaming-chunk320ms-left640ms-tiny.{ext}"
        assert a.read_bytes() == b.read_bytes()
    timings = [json.loads(x) for x in (out / "timings-test-greedy-offline-tiny.jsonl").read_text().splitlines()]
    notes = {t["id"]: t["note"] for t in timings}
    assert "empty audio" in notes["empty"] and "shorter" in notes["short"] and "silence" in notes["silence"]
    assert all(t["hyp"] == [] for t in timings if t["note"])
    assert any(t["hyp"] for t in timings)
    # every output file name pattern docs/decoding.md states matches what was written
    doc = (Path(__file__).resolve().parents[1] / "docs" / "decoding.md").read_text()
    patterns = set(re.findall(r"`((?:recogs|errs|wer-summary|timings)-<[^`]*)`", doc))
    assert {p.split("-<")[0] for p in patterns} == {"recogs", "errs", "wer-summary", "timings"}
    written = [p.name for p in out.iterdir()]
    for pattern in patterns:
        fields = {"<set>": "test", "<model>": "tiny", "<setting>": SETTING_RX}
        rx = re.compile("".join(fields.get(part, re.escape(part)) for part in re.split(r"(<[a-z]+>)", pattern)) + "$")
        assert any(rx.match(n) for n in written), f"docs/decoding.md names {pattern}; written: {sorted(written)}"
        assert all(rx.match(n) for n in written if n.startswith(pattern.split("-<")[0] + "-")), pattern
    # decoding twice gives identical files
    first = {p.name: p.read_bytes() for p in out.glob("*.txt")}
    _run(d, ckpt, out, "--mode", "streaming", "--chunk-sizes-ms", "320,640")
    assert {p.name: p.read_bytes() for p in out.glob("*.txt")} == first
    assert len(json.loads((out / "results.json").read_text())) == 6


def test_latency_null_without_reference_times(setup, tmp_path, caplog):
    d, ckpt, _, _ = setup
    out = tmp_path / "o"
    args = ["--checkpoint", str(ckpt), "--cuts", str(d / "cuts_noali.jsonl.gz"), "--out-dir", str(out),
            "--no-progress", "--mode", "streaming", "--chunk-sizes-ms", "320"]
    assert decode_cli.main(args) == 0
    row = json.loads((out / "results.json").read_text())[0]
    assert row["first_token_latency_ms"] is None and row["mean_symbol_delay_ms"] is None
    assert row["ref_times"] is None and row["latency_reasons"]
    assert "no word alignment" in caplog.text
    # forced-alignment fallback fills them in and says where they came from
    assert decode_cli.main(args + ["--align-checkpoint", str(ckpt), "--results-json",
                                   str(out / "fa.json")]) == 0
    row = json.loads((out / "fa.json").read_text())[0]
    assert row["ref_times"].startswith("forced-alignment")
    assert row["mean_symbol_delay_ms"] is not None or row["num_symbol_delay_words"] == 0
    # the aligner gives word starts only: no word-end latency, and the row says why
    assert row["word_end_latency_p50_ms"] is None and row["num_word_end_words"] == 0
    assert any("forced alignment gives word starts only" in r for r in row["latency_reasons"])
    assert any(r.startswith("word-end latency:") for r in row["latency_reasons"])


def test_missing_audio_and_bad_arguments(setup, tmp_path, capsys, caplog):
    d, ckpt, bpe, model = setup
    lost = _bad_cut(tmp_path, "lost", 0.1 * np.ones(4000))
    (tmp_path / "lost.wav").unlink()
    with pytest.raises(RuntimeError, match="lost.wav"):
        decode_cuts(model, Tokenizer(bpe).id_to_piece, CutSet.from_cuts([lost]), DecodeSettings(strict=True))
    garbage = _bad_cut(tmp_path, "garbage", 0.1 * np.ones(4000))
    (tmp_path / "garbage.wav").write_bytes(b"RIFF not really a wav file")
    good = list(CutSet.from_file(d / "cuts_test.jsonl.gz"))[:3]
    CutSet.from_cuts(good + [lost, garbage]).to_file(tmp_path / "cuts_bad.jsonl.gz")
    base = ["--checkpoint", str(ckpt), "--cuts", str(tmp_path / "cuts_bad.jsonl.gz"), "--no-progress",
            "--model-name", "m"]
    # default: the bad files are named and counted, the rest is decoded
    with caplog.at_level("WARNING"):
        assert decode_cli.main(base + ["--out-dir", str(tmp_path / "x")]) == 0
    for name in ("lost.wav", "garbage.wav"):
        assert any(name in r.getMessage() and "cannot read audio" in r.getMessage() and "\n" not in r.getMessage()
                   for r in caplog.records)
    row = json.loads((tmp_path / "x" / "results.json").read_text())[0]
    assert row["num_utts"] == 5 and row["num_empty_by_bad_audio"] == 2
    recogs = (tmp_path / "x" / "recogs-bad-greedy-offline-m.txt").read_text()
    assert all(c.id in recogs for c in good)
    # --strict: the first unreadable file stops the decode, with one line naming it
    assert decode_cli.main(base + ["--out-dir", str(tmp_path / "y"), "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "garbage.wav" in err[-1] or "lost.wav" in err[-1]
    assert not (tmp_path / "y" / "results.json").exists()
    for extra, msg in ((["--mode", "streaming", "--chunk-sizes-ms", "300"], "multiple of 40"),
                       (["--cuts", str(tmp_path / "nope.jsonl.gz")], "nope.jsonl.gz")):
        args = ["--checkpoint", str(ckpt), "--cuts", str(d / "cuts_test.jsonl.gz"),
                "--out-dir", str(tmp_path / "y"), "--no-progress", *extra]
        assert decode_cli.main(args) == 2
        assert msg in capsys.readouterr().err
    assert decode_cli.main(["--checkpoint", str(tmp_path / "missing.pt"), "--cuts", "c",
                            "--out-dir", str(tmp_path)]) == 2
    assert "missing.pt" in capsys.readouterr().err


def test_compare_cli(setup, tmp_path, capsys):
    d, ckpt, _, _ = setup
    out = tmp_path / "c"
    _run(d, ckpt, out, "--mode", "streaming", "--chunk-sizes-ms", "320,640")
    a = out / "recogs-test-greedy-streaming-chunk320ms-left640ms-tiny.txt"
    b = out / "recogs-test-greedy-streaming-chunk640ms-left640ms-tiny.txt"
    assert compare_cli.main([str(a), str(b), "--name-a", "c320", "--name-b", "c640",
                             "--num-samples", "200", "--json", str(out / "cmp.json")]) == 0
    text = capsys.readouterr().out
    assert "c320" in text and "95% CI" in text
    res = json.loads((out / "cmp.json").read_text())
    assert res["num_utts"] == 8 and res["ci_low"] <= res["diff"] <= res["ci_high"]
    assert compare_cli.main([str(a), str(out / "none.txt")]) == 2


def test_latency_end_to_end_with_oracle_references(setup, tmp_path):
    """References = the model's own hypotheses: WER 0 and latencies recomputable by hand."""
    d, ckpt, _, _ = setup
    out = tmp_path / "a"
    _run(d, ckpt, out, "--mode", "streaming", "--chunk-sizes-ms", "320")
    name = "timings-test-greedy-streaming-chunk320ms-left640ms-tiny.jsonl"
    timings = {t["id"]: t for t in map(json.loads, (out / name).read_text().splitlines())}
    cuts = CutSet.from_file(d / "cuts_test.jsonl.gz")
    oracle, lat, delay, avail_delay, end_lat = [], [], [], [], []
    for c in cuts:
        t = timings[c.id]
        if not t["hyp"]:
            continue
        starts = [max(0.0, e - 0.05) for e in t["hyp_emission_s"]]
        items = [AlignmentItem(w, s, 0.1) for w, s in zip(t["hyp"], starts)]
        sup = fastcopy(c.supervisions[0], text=" ".join(t["hyp"]), alignment={"word": items})
        oracle.append(fastcopy(c, supervisions=[sup]))
        lat.append(1000 * (t["hyp_availability_s"][0] - starts[0]))
        delay += [1000 * (e - s) for e, s in zip(t["hyp_emission_s"], starts)]
        avail_delay += [1000 * (a - s) for a, s in zip(t["hyp_availability_s"], starts)]
        end_lat += [1000 * (a - (s + 0.1)) for a, s in zip(t["hyp_availability_s"], starts)]
    assert len(oracle) >= 2
    CutSet.from_cuts(oracle).to_file(tmp_path / "cuts_oracle.jsonl.gz")
    args = ["--checkpoint", str(ckpt), "--cuts", str(tmp_path / "cuts_oracle.jsonl.gz"),
            "--out-dir", str(out), "--no-progress", "--mode", "streaming", "--chunk-sizes-ms", "320"]
    assert decode_cli.main(args) == 0
    row = [r for r in json.loads((out / "results.json").read_text()) if r["test_set"] == "oracle"][0]
    assert row["wer"] == 0.0 and row["first_token_share_qualifying"] == 1.0
    assert row["first_token_latency_ms"] == pytest.approx(np.mean(lat), abs=0.06)
    assert row["first_token_latency_p90_ms"] == pytest.approx(np.percentile(lat, 90), abs=0.06)
    assert row["first_token_latency_median_ms"] == pytest.approx(np.percentile(lat, 50), abs=0.06)
    assert row["first_token_share_anticipated"] == pytest.approx(np.mean(np.asarray(lat) < 0), abs=1e-4)
    assert row["num_word_end_words"] == len(end_lat)
    assert row["word_end_latency_p50_ms"] == pytest.approx(np.percentile(end_lat, 50), abs=0.06)
    assert row["word_end_latency_p90_ms"] == pytest.approx(np.percentile(end_lat, 90), abs=0.06)
    assert row["mean_symbol_delay_ms"] == pytest.approx(np.mean(delay), abs=0.06)
    assert row["mean_availability_delay_ms"] == pytest.approx(np.mean(avail_delay), abs=0.06)
    assert row["mean_availability_delay_ms"] >= row["mean_symbol_delay_ms"]


def test_two_models_in_one_out_dir_and_checkpoint_with_epoch(setup, tmp_path, capsys):
    d, ckpt, _, _ = setup
    out = tmp_path / "shared"
    for name in ("model-a", "model-b"):
        assert decode_cli.main(["--checkpoint", str(ckpt), "--cuts", str(d / "cuts_test.jsonl.gz"),
                                "--out-dir", str(out), "--model-name", name, "--no-progress"]) == 0
    assert sorted(p.name for p in out.glob("recogs-*")) == ["recogs-test-greedy-offline-model-a.txt",
                                                           "recogs-test-greedy-offline-model-b.txt"]
    assert len(json.loads((out / "results.json").read_text())) == 2
    assert decode_cli.main(["--checkpoint", str(ckpt), "--exp-dir", str(d), "--epoch", "1", "--cuts",
                            str(d / "cuts_test.jsonl.gz"), "--out-dir", str(out)]) == 2
    assert "not both" in capsys.readouterr().err


def test_device_auto_resolves_to_what_torch_sees(setup, tmp_path):
    assert decode_cli.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert decode_cli.resolve_device("cpu") == "cpu" and decode_cli.resolve_device("cuda:1") == "cuda:1"
    d, ckpt, _, _ = setup
    rows = _run(d, ckpt, tmp_path / "out", "--mode", "offline")  # no --device: auto
    assert {r["device"] for r in rows} == {"cuda" if torch.cuda.is_available() else "cpu"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible to torch here)")
@pytest.mark.parametrize("extra", [["--mode", "offline"], ["--mode", "streaming", "--chunk-sizes-ms", "320"],
                                   ["--mode", "streaming", "--chunk-sizes-ms", "320", "--method",
                                    "modified_beam_search", "--beam", "2"]])
def test_cuda_decoding_equals_cpu(setup, tmp_path, extra):
    d, ckpt, _, _ = setup
    cpu = _run(d, ckpt, tmp_path / "cpu", "--device", "cpu", *extra)
    gpu = _run(d, ckpt, tmp_path / "gpu", "--device", "cuda", *extra)
    for a, b in zip(cpu, gpu):
        assert a["wer"] == b["wer"] and a["device"] == "cpu" and b["device"] == "cuda"
    for f in (tmp_path / "cpu").glob("recogs-*.txt"):
        assert f.read_text() == (tmp_path / "gpu" / f.name).read_text()
