"""Zipformer ONNX export: sherpa-onnx ``zipformer2`` decodes exactly like asr_kd's own streaming decoder.

Reuses tests/test_export_onnx.py's corpus fixture (5 synthetic utterances, a
20-piece BPE model), its training loop and its tail convention: every
utterance gets TAIL_SILENCE (0.5 s) of zeros appended, and our decoder runs
with ``tail="drop"``, which schedules chunks as sherpa-onnx does (a chunk runs
once MORE than 4K + 13 feature frames from its start exist; no padded last
chunk).  0.5 s is more than one 320 ms chunk plus the Zipformer's 130 ms
look-ahead, so the speech at the end is inside decoded chunks.
"""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("sherpa_onnx")

import onnxruntime as ort  # noqa: E402

from test_export_onnx import _bias_joiner, _padded, _save, setup, token_error_rate, train_on_setup  # noqa: E402,F401

from asr_kd.bin import export_onnx  # noqa: E402
from asr_kd.data.features import compute_online_fbank  # noqa: E402
from asr_kd.decode import StreamingDecoder, encode, search  # noqa: E402
from asr_kd.export import sherpa  # noqa: E402
from asr_kd.export.metadata import read_metadata  # noqa: E402
from asr_kd.export.onnx_zipformer import (OnnxZipformerStreamingEncoder, from_sherpa_states,  # noqa: E402
                                          state_names, to_sherpa_states)
from asr_kd.models import build_transducer, preset_config  # noqa: E402

K_TRAIN, L_TRAIN = 4, 8  # 160 ms chunks, 320 ms left context
EXPORTS = {"160ms": (4, 8, None), "320ms": (8, 4, (320, 160))}  # name: (K, L, explicit (--chunk-ms, --left-ms))


def _zipformer(role: str, **kw):
    return build_transducer(preset_config("tiny", role, vocab_size=20, encoder_type="zipformer", dropout=0.0, **kw))


@pytest.fixture(scope="module")
def zip_models(setup):
    """A tiny streaming Zipformer trained until it recognises its 5 utterances, and a random biased teacher."""
    torch.manual_seed(5)
    student = _zipformer("student", chunk_sizes=(K_TRAIN,), left_contexts=(L_TRAIN,))
    student, refs, feats = train_on_setup(student, setup, 120, lr=5e-3, chunk_size=K_TRAIN, left_context=L_TRAIN)
    torch.manual_seed(6)
    teacher = _bias_joiner(_zipformer("teacher"), setup["wavs"][0])
    return {"student": student, "refs": refs, "feats": feats, "teacher": teacher,
            "student_ckpt": _save(student, setup["bpe"], setup["dir"] / "zip_student.pt"),
            "teacher_ckpt": _save(teacher, setup["bpe"], setup["dir"] / "zip_teacher.pt")}


@pytest.fixture(scope="module")
def exports(setup, zip_models):
    """The student exported by the command line at two chunk sizes (the first with --int8, model defaults)."""
    out = {}
    for name, (k, lc, explicit) in EXPORTS.items():
        d = setup["dir"] / f"zip-{name}"
        argv = ["--checkpoint", str(zip_models["student_ckpt"]), "--out-dir", str(d)]
        argv += ["--chunk-ms", str(explicit[0]), "--left-context-ms", str(explicit[1])] if explicit else ["--int8"]
        assert export_onnx.main(argv) == 0
        out[name] = d
    return out


@pytest.fixture(scope="module")
def recognizer():
    """sherpa-onnx recognizers, built once per (export dir, int8, model_type): building one takes ~3 s."""
    cache = {}

    def get(model_dir: Path, int8: bool = False, model_type: str = ""):
        key = (str(model_dir), int8, model_type)
        if key not in cache:
            cache[key] = sherpa.online_recognizer(model_dir, int8=int8, model_type=model_type)
        return cache[key]

    return get


@pytest.mark.parametrize("name", list(EXPORTS))
def test_metadata_and_files(exports, zip_models, name):
    k, lc, _ = EXPORTS[name]
    d = exports[name]
    meta = read_metadata(d / "encoder.onnx")
    cfg = zip_models["student"].encoder.cfg
    assert meta["model_type"] == "zipformer2"
    assert (int(meta["decode_chunk_len"]), int(meta["T"])) == (4 * k, 4 * k + 13)
    assert meta["left_context_len"] == ",".join(str(2 * lc // ds) for ds in cfg.downsampling_factors)
    assert meta["num_encoder_layers"] == "1,1,1,1,1,1" and meta["encoder_dims"] == "32,32,48,48,48,32"
    assert meta["cnn_module_kernels"] == "7,7,5,5,5,7" and meta["num_heads"] == "2,2,2,2,2,2"
    assert meta["query_head_dims"] == "8,8,8,8,8,8" and meta["value_head_dims"] == "8,8,8,8,8,8"
    dec = read_metadata(d / "decoder.onnx")
    assert (dec["vocab_size"], dec["context_size"]) == ("20", "2")
    summary = json.loads((d / "export.json").read_text())
    assert (summary["encoder_type"], summary["chunk_ms"], summary["left_context_ms"]) == ("zipformer", 40 * k, 40 * lc)
    assert not list(d.glob("*.data")), "weights must live inside the .onnx files"
    sess = ort.InferenceSession(str(d / "encoder.onnx"), providers=["CPUExecutionProvider"])
    names = state_names(cfg)
    assert [i.name for i in sess.get_inputs()] == ["x", *names]
    assert [o.name for o in sess.get_outputs()] == ["encoder_out", *(f"new_{n}" for n in names)]
    assert sess.get_inputs()[-1].type == "tensor(int64)"
    # what sherpa-onnx builds from the metadata: zeros of these shapes (batch 1)
    shapes = {i.name: i.shape for i in sess.get_inputs()}
    lens = [int(v) for v in meta["left_context_len"].split(",")]
    assert shapes["cached_key_3"] == [lens[3], "N", 2 * 8] and shapes["cached_nonlin_attn_3"] == [1, "N", lens[3], 36]
    assert shapes["cached_conv1_0"] == ["N", 32, 3] and shapes["embed_states"] == ["N", 128, 3, 19]


@pytest.mark.parametrize("name", list(EXPORTS))
def test_onnx_encoder_equals_streaming_forward(exports, zip_models, name):
    """Two streams batched (the second starting 2 chunks later), outputs and every state, chunk by chunk."""
    k, lc, _ = EXPORTS[name]
    model = zip_models["student"]
    enc, cfg = model.encoder, model.encoder.cfg
    sess = ort.InferenceSession(str(exports[name] / "encoder.onnx"), providers=["CPUExecutionProvider"])
    names = state_names(cfg)
    torch.manual_seed(3)
    shift, n_in = 4 * k, 4 * k + 13
    feats = torch.randn(2, shift * 5 + 13, 80) - 6.0
    states = enc.init_states(2, lc)
    states["offset"] = torch.tensor([0, 2 * k])
    flat = [t.numpy() for t in to_sherpa_states(states, cfg)]
    for c in range(5):
        win = feats[:, shift * c: shift * c + n_in]
        with torch.no_grad():
            ref, states = enc.streaming_forward(win, states, k, lc)
            ref = model.joiner.encoder_proj(ref).numpy()
        got, *flat = sess.run(None, {"x": win.numpy(), **dict(zip(names, flat))})
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * np.abs(ref).max())
        want = to_sherpa_states(states, cfg)
        assert len(flat) == len(want) == 6 * 6 + 2
        for n, a, b in zip(names, flat, want):
            np.testing.assert_allclose(a, b.numpy(), rtol=0, atol=1e-4, err_msg=n)
        assert flat[-1].tolist() == [2 * k * (c + 1), 2 * k * (c + 3)]  # processed_lens, 50 Hz frames


def test_state_layout_round_trip(zip_models):
    model = zip_models["student"]
    wrapper = OnnxZipformerStreamingEncoder(model, 4, 8)
    st = model.encoder.init_states(3, 8)
    st = {n: torch.randn_like(v) if v.is_floating_point() else torch.tensor([0, 4, 8]) for n, v in st.items()}
    back = from_sherpa_states(to_sherpa_states(st, wrapper.cfg), wrapper.cfg)
    assert back.keys() == st.keys() and all(torch.equal(back[n], st[n]) for n in st)
    zeros = wrapper.init_states(1)
    assert all(not z.any() for z in zeros) and zeros[-1].dtype == torch.int64


@pytest.mark.parametrize("name,model_type", [("160ms", ""), ("320ms", "zipformer2")])
def test_sherpa_streaming_equals_streaming_decoder(setup, exports, zip_models, recognizer, name, model_type):
    """sherpa-onnx greedy streaming == StreamingDecoder(tail="drop"), audio fed in 100 ms pieces.

    model_type "" makes sherpa-onnx pick its zipformer2 runtime from the encoder metadata.
    """
    k, lc, _ = EXPORTS[name]
    d = exports[name]
    rec = recognizer(d, model_type=model_type)
    ids = sherpa.read_token_ids(d / "tokens.txt")
    ours = StreamingDecoder(zip_models["student"], k, lc, tail="drop")
    hyps = []
    for w in setup["wavs"]:
        x = _padded(w)
        got = sherpa.decode_online(rec, x, ids, piece_samples=1600)
        assert got == ours.decode_waveforms([x], piece_samples=1600)[0].tokens
        assert got, "every utterance should decode to something (non-vacuous test)"
        hyps.append(got)
    assert sum(map(len, hyps)) > 20
    if name == "160ms":  # the training chunk: the model has learnt its utterances
        assert token_error_rate(zip_models["refs"], hyps) < 10.0


def test_int8_copies_keep_metadata_and_transcripts(setup, exports, zip_models, recognizer):
    """On the trained student, sherpa-onnx int8 decodes (all but at most one utterance) what fp32 decodes;
    the encoder error stays small."""
    d = exports["160ms"]
    for name in ("encoder", "decoder", "joiner"):
        assert read_metadata(d / f"{name}.onnx").items() <= read_metadata(d / f"{name}.int8.onnx").items()
    ids = sherpa.read_token_ids(d / "tokens.txt")
    fp32_rec, int8_rec = recognizer(d), recognizer(d, int8=True)
    fp32_hyps = [sherpa.decode_online(fp32_rec, _padded(w), ids) for w in setup["wavs"]]
    int8_hyps = [sherpa.decode_online(int8_rec, _padded(w), ids) for w in setup["wavs"]]
    assert token_error_rate(zip_models["refs"], fp32_hyps) < 10.0
    # int8 is a lossy copy: on this tiny model a token near an utterance's end may flip (seen: one
    # deletion in 70 tokens); what a user needs is int8 transcripts that stay those of fp32
    assert sum(a == b for a, b in zip(int8_hyps, fp32_hyps)) >= len(fp32_hyps) - 1
    assert token_error_rate(fp32_hyps, int8_hyps) <= 5.0

    cfg = zip_models["student"].encoder.cfg
    states = [t.numpy() for t in OnnxZipformerStreamingEncoder(zip_models["student"], 4, 8).init_states(1)]
    feeds = {"x": zip_models["feats"][0][None, 32:61].numpy(), **dict(zip(state_names(cfg), states))}
    fp32 = ort.InferenceSession(str(d / "encoder.onnx")).run(None, feeds)[0]
    int8 = ort.InferenceSession(str(d / "encoder.int8.onnx")).run(None, feeds)[0]
    assert np.abs(int8 - fp32).max() < 0.05 * np.abs(fp32).max()


def test_sherpa_offline_teacher_equals_offline_decode(setup, zip_models):
    out = setup["dir"] / "zip-teacher"
    assert export_onnx.main(["--checkpoint", str(zip_models["teacher_ckpt"]), "--out-dir", str(out)]) == 0
    assert read_metadata(out / "encoder.onnx")["model_type"] == "zipformer2"
    assert json.loads((out / "export.json").read_text())["kind"] == "offline"
    rec = sherpa.offline_recognizer(out)
    ids = sherpa.read_token_ids(out / "tokens.txt")
    model = zip_models["teacher"]
    total = 0
    for w in setup["wavs"]:
        f = compute_online_fbank(w)[None]
        e, lens = encode(model, f, torch.tensor([f.size(1)]), "offline")
        ref = search(model, e, lens, "greedy")[0].tokens
        got = sherpa.decode_offline(rec, w, ids)
        assert got == ref and got
        total += len(got)
    assert total > 20


def test_unsupported_settings_are_refused(setup, zip_models, tmp_path, capsys):
    def refused(ckpt, *extra):
        assert export_onnx.main(["--checkpoint", str(ckpt), "--out-dir", str(tmp_path / "o"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err
        return err

    torch.manual_seed(4)
    unlimited = _save(_zipformer("student", chunk_sizes=(4,), left_contexts=(-1,)), setup["bpe"],
                      tmp_path / "unlimited.pt")
    err = refused(unlimited)
    assert "unlimited left context" in err and "--left-context-ms (a multiple of 160)" in err
    assert "--left-context-ms -1 (unlimited)" in refused(unlimited, "--left-context-ms", "-1")
    ckpt = zip_models["student_ckpt"]
    assert "--chunk-ms must be a multiple of 160 ms" in refused(ckpt, "--chunk-ms", "120")
    assert "--chunk-ms must be a positive multiple of 40" in refused(ckpt, "--chunk-ms", "100")
    assert "--left-context-ms must be a positive multiple of 160 ms" in refused(ckpt, "--left-context-ms", "200")


def test_bench_tool_on_a_zipformer_export(setup, exports, zip_models):
    spec = importlib.util.spec_from_file_location("bench_onnx", Path(__file__).parents[1] / "tools" / "bench_onnx.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = bench.get_parser().parse_args(["--checkpoint", str(zip_models["student_ckpt"]), "--cuts",
                                          str(setup["dir"] / "cuts.jsonl.gz"), "--onnx-dir", str(exports["160ms"])])
    report = bench.run(args)
    r = report["runtimes"]
    assert report["model_type"] == "zipformer2"
    assert r["sherpa_fp32"]["identical_to_pytorch"] == "5/5"
    assert r["sherpa_int8"]["identical_to_pytorch"] in ("4/5", "5/5")  # int8 is lossy (see the int8 test above)
    assert r["sherpa_fp32"]["wer"] == r["pytorch"]["wer"]
    assert report["chunk_ms"] == 160 and report["tail_silence_s"] == pytest.approx(0.36)  # chunk + 130 ms + 70 ms
