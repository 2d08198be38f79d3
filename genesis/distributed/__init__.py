"""genesis.distributed: optimizer state and gradients sharded over torch.distributed ranks
(ZeRO stages 1 and 2), on contiguous parameter and gradient buffers. Needs torch; see
docs/distributed.md.

- ``FlatParameters``: a model's parameters and gradients in one flat buffer per dtype, so a
  genesis optimizer's step is one core call (useful without any distribution).
- ``ZeroOptimizer``: wraps any genesis optimizer class; each rank keeps state only for its
  shard.
- ``save_checkpoint`` / ``load_checkpoint``: per-rank shard files and an index; a checkpoint
  written by N ranks loads on M.
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .comm import CollectiveError
from .flat_buffer import FlatBuffer, FlatParameters
from .zero import ZeroOptimizer

__all__ = ["FlatBuffer", "FlatParameters", "ZeroOptimizer", "save_checkpoint", "load_checkpoint", "CollectiveError"]
