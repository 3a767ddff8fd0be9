"""Datasets (docs/data.md; module map: docs/architecture.md). This __init__ imports nothing: a training
stage needs only ``prepared`` and ``loader``, never the dataset parsers that ``write.prepare`` imports.
"""
