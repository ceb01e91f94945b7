import os

import pytest
import torch

# Two cores on the development and CI machines: keep each test single-threaded
# so parallel helpers and pytest-xdist-free runs stay predictable.
torch.set_num_threads(1)
os.environ.setdefault("ASR_KD_RNNT_BACKEND", "torch")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    """(cuts with stored fbank, bpe.model): 10 synthetic cuts, a 24-piece BPE (DDP tests)."""
    from lhotse import NumpyFilesWriter

    from asr_kd.data.features import lhotse_fbank_extractor
    from toy_corpus import make_synthetic_cuts, write_transcripts
    from asr_kd.data.tokenizer import train_bpe

    d = tmp_path_factory.mktemp("ddp_corpus")
    cuts = make_synthetic_cuts(d / "wav", num_cuts=10, max_words=3, seed=4)
    bpe = train_bpe(write_transcripts(cuts, d / "tr.txt"), d / "lang", vocab_size=24)
    cuts.compute_and_store_features(lhotse_fbank_extractor(), d / "feats", storage_type=NumpyFilesWriter,
                                    progress_bar=False).to_file(d / "cuts.jsonl.gz")
    return d / "cuts.jsonl.gz", bpe
