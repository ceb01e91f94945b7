"""Stateless transducer prediction network ("decoder").

The prediction network sees only the last ``c = context_size`` tokens:

    e_u  = Embed(y_u)                                     (D_d,)  blank embeds to 0
    g_u  = ReLU( sum_{j=0}^{c-1} w_j * e_{u-c+1+j} )      depthwise (per channel) conv
    out  = (g_0 .. g_{U-1})                               (N, U, D_d)

``y`` starts with the blank id (the "start" symbol); positions before the
start read as blank.  Blank's embedding row is the padding row of
``nn.Embedding`` (kept at zero, never updated), so "no history" and "blank
history" are the same input.  With ``need_pad=False`` the caller passes
exactly the last ``c`` tokens per hypothesis and gets one output frame,
which equals the corresponding frame of the padded full-sequence call --
what greedy and beam search use.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Decoder"]


class Decoder(nn.Module):
    """Embedding + depthwise context convolution over the last ``context_size`` tokens."""

    def __init__(self, vocab_size: int, decoder_dim: int, blank_id: int = 0, context_size: int = 2) -> None:
        super().__init__()
        if context_size < 1:
            raise ValueError(f"TransducerConfig: context_size must be >= 1, got {context_size}")
        if not 0 <= blank_id < vocab_size:
            raise ValueError(f"TransducerConfig: blank_id {blank_id} outside vocabulary of size {vocab_size}")
        self.vocab_size = vocab_size
        self.decoder_dim = decoder_dim
        self.blank_id = blank_id
        self.context_size = context_size
        self.embedding = nn.Embedding(vocab_size, decoder_dim, padding_idx=blank_id)
        self.context_conv = (
            nn.Conv1d(decoder_dim, decoder_dim, context_size, groups=decoder_dim, bias=False)
            if context_size > 1
            else None
        )

    def forward(self, y: Tensor, need_pad: bool = True) -> Tensor:
        """Decoder output for each prefix.

        Args:
          y: (N, U) int64 token ids. With ``need_pad=True``, a whole sequence
            (normally ``[blank] + labels``); with ``need_pad=False``, the last
            ``context_size`` tokens of each hypothesis, (N, context_size).
          need_pad: left-pad with ``context_size - 1`` blanks (True) or not.

        Returns:
          (N, U, decoder_dim) with need_pad, else (N, 1, decoder_dim).
        """
        if y.dim() != 2:
            raise ValueError(f"transducer decoder: input y must be (N, U), got {tuple(y.shape)}")
        if not need_pad and y.size(1) != self.context_size:
            raise ValueError(
                f"transducer decoder: need_pad=False expects (N, {self.context_size}) tokens (context_size), "
                f"got {tuple(y.shape)}"
            )
        e = self.embedding(y)  # (N, U, D)
        if self.context_conv is None:
            return F.relu(e)
        e = e.transpose(1, 2)  # (N, D, U)
        if need_pad:
            e = F.pad(e, (self.context_size - 1, 0))  # zeros == blank embedding
        return F.relu(self.context_conv(e).transpose(1, 2))
