"""Pure loss functions on logits (no state, no modules): one small module per method.

Formulas, defaults and their sources: docs/losses.md.
"""

from r2kd.losses.ce import cross_entropy
from r2kd.losses.dist import dist_loss, dist_terms, inter_class_relation, intra_class_relation, pearson_rows
from r2kd.losses.dkd import dkd_loss, dkd_warmup_factor, nckd_loss, tckd_loss
from r2kd.losses.kd import kd_loss
from r2kd.losses.r2kd import (
    correlation_distance,
    hard_ranks,
    mix_teacher_logits,
    rank_loss,
    soft_ranks,
    spearman_rows,
    value_loss,
)

__all__ = [
    "correlation_distance",
    "cross_entropy",
    "dist_loss",
    "dist_terms",
    "dkd_loss",
    "dkd_warmup_factor",
    "hard_ranks",
    "inter_class_relation",
    "intra_class_relation",
    "kd_loss",
    "mix_teacher_logits",
    "nckd_loss",
    "pearson_rows",
    "rank_loss",
    "soft_ranks",
    "spearman_rows",
    "tckd_loss",
    "value_loss",
]
