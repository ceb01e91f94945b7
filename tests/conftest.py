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
