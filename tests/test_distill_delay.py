"""Tests of asr_kd.distill.delay_frames against an index-by-index reference."""

import pytest
import torch

from asr_kd.distill import delay_frames


@pytest.mark.parametrize("frames", [0, 1, 3, 7, 9])
def test_matches_reference(frames: int) -> None:
    x = torch.randn(2, 7, 5)
    out = delay_frames(x, frames)
    assert out.shape == x.shape
    for t in range(x.size(1)):
        assert torch.equal(out[:, t], x[:, max(t - frames, 0)]), t


def test_zero_is_identity_and_negative_is_refused() -> None:
    x = torch.randn(1, 4, 3)
    assert delay_frames(x, 0) is x
    with pytest.raises(ValueError, match="frames must be >= 0, got -1"):
        delay_frames(x, -1)
