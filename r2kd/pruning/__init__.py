"""Pruning the trained teacher into the second, noisier teacher of R2KD (METHOD.md §5, docs/prune.md).

``prune_teacher`` makes a pruned deep copy (r2kd/pruning/methods.py), ``set_bn_mode`` freezes it for
distillation; it is stored like every model, with its pruned structure (r2kd/modelfile.py).
"""

from r2kd.pruning.bn import set_bn_mode
from r2kd.pruning.methods import prune_teacher

__all__ = ["prune_teacher", "set_bn_mode"]
