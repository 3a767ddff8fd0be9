"""Speed wrappers around the plain serial step (r2kd.train.TrainStep over
r2kd.methods.objective.DistillObjective). Each gives the same numbers as the step it wraps:

- ``graphs``: the step replayed as one CUDA graph (``runtime.fast_path`` on CUDA);
- ``cohort``: the runs of one (pair, seed) trained in lockstep, sharing their views and frozen
  teachers' forwards (``runtime.share_teachers``).
"""
