"""Stage-1 distillation loss: the student learns the teacher's hidden layers.

    L_h = 1 / (N * D) * sum_{b, t < T_b, d} (h^S_{b,t,d} - h^T_{b,t,d})^2,
    N = sum_b T_b

i.e. the mean squared error over valid (unpadded) frames and all feature
dimensions. The teacher side is detached: the teacher is frozen.
"""

from __future__ import annotations

import torch


def hidden_mse_loss(student: torch.Tensor, teacher: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean squared error between hidden sequences over valid frames.

    Args:
      student: (B, T, D) student hidden states (after any learned projection).
      teacher: (B, T, D) teacher hidden states; detached here.
      lengths: (B,) int, number of valid frames per utterance (<= T).

    Returns:
      0-dim tensor, float32 (float64 for float64 input): the mean over the
      ``sum(lengths) * D`` valid entries. Padded frames are never read, so
      they neither change the loss nor receive gradient (even if they hold
      inf/nan).
    """
    where = "asr_kd.distill.hidden_mse_loss"
    if student.dim() != 3 or teacher.dim() != 3:
        raise ValueError(
            f"{where}: student and teacher must be (B, T, D), got {tuple(student.shape)} "
            f"and {tuple(teacher.shape)}"
        )
    if student.shape != teacher.shape:
        raise ValueError(
            f"{where}: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} shapes differ "
            "(map layers and project the student to the teacher's dimension first)"
        )
    batch, frames, _ = student.shape
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(f"{where}: lengths must be ({batch},), got {tuple(lengths.shape)}")
    if lengths.is_floating_point():
        raise ValueError(f"{where}: lengths must be integer, got {lengths.dtype}")
    lengths = lengths.to(student.device)
    if batch > 0 and (int(lengths.min()) < 0 or int(lengths.max()) > frames):
        raise ValueError(f"{where}: lengths must lie in [0, T={frames}], got {lengths.tolist()}")
    mask = torch.arange(frames, device=student.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
    if not bool(mask.any()):
        raise ValueError(f"{where}: no valid frames in the batch (lengths={lengths.tolist()})")
    dtype = torch.float64 if student.dtype == torch.float64 else torch.float32
    diff = student[mask].to(dtype) - teacher.detach()[mask].to(dtype)  # (N, D)
    return diff.pow(2).mean()
