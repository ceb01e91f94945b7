"""Front end: lhotse Fbank (storage) and kaldi-native-fbank (online) agree."""
import numpy as np
import pytest
import torch

from asr_kd.data.features import (
    FBANK_OPTS,
    FEATURE_PAD_VALUE,
    OnlineFbank,
    check_feature_config,
    compute_fbank,
    compute_online_fbank,
    feature_config_dict,
    lhotse_fbank_extractor,
)

SR = 16000


def _waveform(seed: int, seconds: float) -> np.ndarray:
    """Tones + noise + a stretch of digital silence (exercises the log floor)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1830 * t * (1 + 0.2 * t))
    x = x + 0.03 * rng.standard_normal(t.size)
    x[int(0.3 * SR):int(0.45 * SR)] = 0.0
    x[-400:] *= 0.001
    return x.astype(np.float32)


@pytest.mark.parametrize("seed,seconds", [(0, 1.234), (1, 0.5013), (2, 2.0)])
def test_lhotse_and_knf_agree(seed, seconds):
    x = _waveform(seed, seconds)
    offline = compute_fbank(x)
    online = compute_online_fbank(x)
    assert offline.shape == online.shape == (FBANK_OPTS.num_frames(x.size), 80)
    assert offline.dtype == online.dtype == torch.float32
    diff = (offline - online).abs().max().item()
    assert diff <= 1e-3, diff


def test_chunked_online_equals_whole():
    x = _waveform(3, 1.1)
    whole = compute_online_fbank(x)
    for chunk in (160, 1234, 4000):
        assert torch.equal(compute_online_fbank(x, chunk_samples=chunk), whole)


def test_online_frames_become_ready_incrementally():
    x = _waveform(4, 1.0)
    fb = OnlineFbank()
    fb.accept_waveform(x[:8000])  # 0.5 s
    ready = fb.num_frames_ready
    # a frame is ready once its 25 ms window (centred on 10 ms steps) is covered
    assert 45 <= ready <= 50
    first = fb.get_frames(0, ready)
    fb.accept_waveform(x[8000:])
    fb.input_finished()
    assert fb.num_frames_ready == 100
    assert torch.equal(fb.get_frames(0, ready), first)
    with pytest.raises(ValueError, match="ready"):
        fb.get_frames(90, 20)
    with pytest.raises(RuntimeError):
        fb.accept_waveform(x[:10])


def test_lilcom_storage_is_lossy_but_close(tmp_path):
    """Stored features differ from fresh ones by ~1e-2 (the documented train/deploy gap)."""
    pytest.importorskip("lilcom")
    from lhotse import LilcomChunkyWriter

    x = _waveform(5, 1.0)
    fresh = compute_fbank(x).numpy()
    with LilcomChunkyWriter(tmp_path / "f") as w:
        key = w.write("k", fresh.copy())  # the writer quantises its input in place
        path = w.storage_path
    from lhotse import LilcomChunkyReader

    stored = LilcomChunkyReader(path).read(key)
    err = np.abs(stored - fresh).max()
    # lilcom's default tick is 2**-5: errors up to half a tick
    assert 1e-3 < err <= 2.0 ** -6 + 1e-6


def test_feature_config():
    a = feature_config_dict()
    assert a["num_mel_bins"] == 80 and a["sampling_rate"] == 16000 and a["dither"] == 0.0
    assert a["snip_edges"] is False and a["pad_value"] == FEATURE_PAD_VALUE
    check_feature_config(a, feature_config_dict())
    b = dict(a, num_mel_bins=40, high_freq=0.0)
    with pytest.raises(ValueError, match="num_mel_bins.*80.*40|high_freq"):
        check_feature_config(a, b, "teacher vs student")
    ext = lhotse_fbank_extractor()
    assert ext.config.num_filters == 80 and ext.config.dither == 0.0 and not ext.config.snip_edges
