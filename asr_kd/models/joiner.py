"""Transducer joint network.

    z = W_o tanh(W_e enc + b_e + W_d dec + b_d) + b_o        (..., vocab_size)

``enc`` and ``dec`` broadcast against each other, so the same module serves
the full lattice (enc (B,T,1,De), dec (B,1,S+1,Dd)), the pruned lattice
(both (B,T,R,·) after ``do_rnnt_pruning``) and search ((N,1,1,·)).  With
``project_input=False`` the inputs are already ``encoder_proj`` /
``decoder_proj`` outputs (joiner_dim wide), as the pruned loss requires:
projecting before gathering costs O(T + S) instead of O(T R) projections.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Joiner"]


class Joiner(nn.Module):
    """encoder_proj + decoder_proj -> tanh -> output_linear."""

    def __init__(self, encoder_dim: int, decoder_dim: int, joiner_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.encoder_proj = nn.Linear(encoder_dim, joiner_dim)
        self.decoder_proj = nn.Linear(decoder_dim, joiner_dim)
        self.output_linear = nn.Linear(joiner_dim, vocab_size)

    def forward(self, encoder_out: Tensor, decoder_out: Tensor, project_input: bool = True) -> Tensor:
        """Logits over the vocabulary.

        Args:
          encoder_out: (..., encoder_dim), or (..., joiner_dim) if not project_input.
          decoder_out: (..., decoder_dim), or (..., joiner_dim) if not project_input;
            broadcastable against encoder_out after projection.
          project_input: apply encoder_proj / decoder_proj first.

        Returns:
          (..., vocab_size) unnormalised logits.
        """
        if project_input:
            encoder_out = self.encoder_proj(encoder_out)
            decoder_out = self.decoder_proj(decoder_out)
        return self.output_linear(torch.tanh(encoder_out + decoder_out))
