"""k2-compatible transducer losses (``k2/python/k2/rnnt_loss.py`` API).

Public functions, with k2's names, argument order, defaults and semantics
(only ``rnnt_type="regular"``):

* :func:`mutual_information_recursion` -- the lattice recursion (scores, occupancies);
* :func:`rnnt_loss_simple`, :func:`rnnt_loss_smoothed` -- additive-joiner losses;
* :func:`get_rnnt_prune_ranges`, :func:`do_rnnt_pruning` -- pruning bounds;
* :func:`rnnt_loss_pruned` -- loss on the pruned lattice (B, T, R, V);
* :func:`rnnt_loss` -- the full loss on (B, T, S+1, V).

Backend: k2 itself when ``import k2`` works and ``ASR_KD_RNNT_BACKEND`` is not
``torch``; this package's implementation otherwise (:func:`rnnt_backend` says
which).  See :mod:`asr_kd.rnnt.backend`.
"""

from .backend import rnnt_backend
from .losses import rnnt_loss, rnnt_loss_pruned, rnnt_loss_simple, rnnt_loss_smoothed
from .mutual_information import mutual_information_recursion
from .pruning import do_rnnt_pruning, get_rnnt_prune_ranges

__all__ = [
    "mutual_information_recursion",
    "rnnt_loss_simple",
    "rnnt_loss_smoothed",
    "get_rnnt_prune_ranges",
    "do_rnnt_pruning",
    "rnnt_loss_pruned",
    "rnnt_loss",
    "rnnt_backend",
]
