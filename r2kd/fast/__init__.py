"""Speed wrappers around the plain step, with its numbers: ``graphs`` (the step as one CUDA graph) and
``cohort`` (the runs of one (pair, seed) in lockstep, sharing views and frozen forwards)."""
