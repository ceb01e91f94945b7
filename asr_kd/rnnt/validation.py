"""Input checks shared by the :mod:`asr_kd.rnnt` functions.

Every check raises ``ValueError`` with a message naming the function, the
argument and what is wrong.  Checks that need values (boundary, symbol ids)
move one small tensor to the host; that is one device synchronisation per
call on CUDA, negligible next to the loss itself.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

REDUCTIONS = ("none", "mean", "sum")
FLOAT_DTYPES = (torch.float32, torch.float64)


def check_rnnt_type(fn: str, rnnt_type: str) -> None:
    """Only the regular transducer topology is implemented."""
    if rnnt_type != "regular":
        raise ValueError(
            f"{fn}: rnnt_type={rnnt_type!r} is not supported; only 'regular' is "
            "(one symbol per arc, frames advance only on blank)"
        )


def check_reduction(fn: str, reduction: Optional[str]) -> None:
    """``reduction`` must be 'none', 'mean' or 'sum'."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"{fn}: reduction={reduction!r}; expected one of {REDUCTIONS}")


def check_float(fn: str, name: str, x: Tensor, ndim: int) -> None:
    """``x`` must be a float32/float64 tensor of rank ``ndim``."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{fn}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(
            f"{fn}: {name} must have {ndim} dimensions, got shape {tuple(x.shape)}"
        )
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{fn}: {name} must be float32 or float64, got {x.dtype}")


def check_same(fn: str, ref_name: str, ref: Tensor, **others: Tensor) -> None:
    """All tensors share ``ref``'s device (and, for floats, its dtype)."""
    for name, x in others.items():
        if x.device != ref.device:
            raise ValueError(
                f"{fn}: {name} is on {x.device} but {ref_name} is on {ref.device}"
            )
        if x.is_floating_point() and x.dtype != ref.dtype:
            raise ValueError(f"{fn}: {name} has dtype {x.dtype} but {ref_name} has {ref.dtype}")


def check_shape(fn: str, name: str, x: Tensor, expected: Tuple[int, ...], meaning: str) -> None:
    """``x.shape == expected``; ``meaning`` spells the expected layout."""
    if tuple(x.shape) != tuple(expected):
        raise ValueError(
            f"{fn}: {name} has shape {tuple(x.shape)}, expected {tuple(expected)} {meaning}"
        )


def check_index_tensor(fn: str, name: str, x: Tensor, ndim: int) -> Tensor:
    """An integer tensor of rank ``ndim``; returned as int64."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{fn}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(
            f"{fn}: {name} must have {ndim} dimensions, got shape {tuple(x.shape)}"
        )
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{fn}: {name} must be an integer (int64) tensor, got {x.dtype}")
    return x.long()


def check_boundary(
    fn: str, boundary: Optional[Tensor], num_b: int, num_s: int, num_t: int,
    device: torch.device,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Validate ``boundary`` (B, 4) rows ``[0, 0, S_b, T_b]``.

    ``None`` means ``[0, 0, S, T]`` for every row.  Requires begins of zero,
    ``0 <= S_b <= S`` and ``1 <= T_b <= T``.
    Returns ``(boundary on device (B, 4) int64, S_b (B,) host int64, T_b (B,) host int64)``.
    """
    if boundary is None:
        host = torch.tensor([[0, 0, num_s, num_t]], dtype=torch.int64).expand(num_b, 4)
        if num_t < 1:
            raise ValueError(f"{fn}: T = {num_t}: every utterance needs at least one frame")
        return host.to(device), host[:, 2].clone(), host[:, 3].clone()
    boundary = check_index_tensor(fn, "boundary", boundary, 2)
    check_shape(fn, "boundary", boundary, (num_b, 4), "(B, 4) rows [0, 0, S_b, T_b]")
    host = boundary.detach().cpu()
    if num_b == 0:
        return boundary.to(device), host[:, 2], host[:, 3]
    bad = (host[:, 0] != 0) | (host[:, 1] != 0)
    if bool(bad.any()):
        b = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{fn}: boundary[{b}] = {host[b].tolist()} has a non-zero begin; only rows "
            "[0, 0, S_b, T_b] are supported"
        )
    s_end, t_end = host[:, 2], host[:, 3]
    checks = (
        (t_end < 1, "T_b < 1 (every utterance needs at least one frame)"),
        (t_end > num_t, f"T_b > T = {num_t}"),
        (s_end < 0, "S_b < 0"),
        (s_end > num_s, f"S_b > S = {num_s}"),
    )
    for mask, what in checks:
        if bool(mask.any()):
            b = int(mask.nonzero()[0, 0])
            raise ValueError(f"{fn}: boundary[{b}] = {host[b].tolist()}: {what}")
    return boundary.to(device), s_end, t_end


def check_symbols(
    fn: str, symbols: Tensor, num_b: int, num_s: int, vocab: int, s_end: Tensor,
    termination_symbol: int, device: torch.device,
) -> Tensor:
    """Validate ``symbols`` (B, S) and return a copy on ``device`` safe for indexing.

    Ids within the first ``S_b`` positions must lie in ``[0, V)``; entries past
    ``S_b`` are padding and are replaced by ``termination_symbol`` (they never
    lie on a path, but gathers must not index out of range).
    """
    symbols = check_index_tensor(fn, "symbols", symbols, 2).to(device)
    check_shape(fn, "symbols", symbols, (num_b, num_s), "(B, S) with S = lm/logits.shape[-2] - 1")
    if not 0 <= termination_symbol < vocab:
        raise ValueError(
            f"{fn}: termination_symbol={termination_symbol} is outside [0, {vocab})"
        )
    if symbols.numel() == 0:
        return symbols
    pos = torch.arange(num_s, device=symbols.device).view(1, num_s)
    valid = pos < s_end.to(symbols.device).view(num_b, 1)
    bad = valid & ((symbols < 0) | (symbols >= vocab))
    if bool(bad.any()):
        b, s = (int(v) for v in bad.nonzero()[0])
        raise ValueError(
            f"{fn}: symbols[{b}, {s}] = {int(symbols[b, s])} is outside [0, {vocab}) "
            f"(utterance {b} has S_b = {int(s_end[b])} symbols)"
        )
    return torch.where(valid, symbols, torch.full_like(symbols, termination_symbol))


def check_ranges(fn: str, ranges: Tensor, num_b: int, num_t: int, num_r: int, num_s: int,
                 device: torch.device) -> Tensor:
    """``ranges`` (B, T, R) int64: ``ranges[..., r] = ranges[..., 0] + r`` within [0, S]."""
    ranges = check_index_tensor(fn, "ranges", ranges, 3).to(device)
    check_shape(fn, "ranges", ranges, (num_b, num_t, num_r), "(B, T, R) matching logits")
    if ranges.numel() == 0:
        return ranges
    step = torch.arange(num_r, device=ranges.device).view(1, 1, num_r)
    bad = (ranges != ranges[..., :1] + step).any() | (ranges[..., 0] < 0).any() | (
        ranges[..., -1] > num_s
    ).any()
    if bool(bad):
        raise ValueError(
            f"{fn}: ranges must hold R consecutive positions per frame within [0, S = {num_s}] "
            "(as returned by get_rnnt_prune_ranges)"
        )
    return ranges
