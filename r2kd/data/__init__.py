"""Datasets. ``r2kd.data.write.prepare`` materialises one into a fixed on-disk format (it imports
every dataset parser); ``r2kd.data.prepared`` reads that format back and ``r2kd.data.loader`` serves
batches from it — all a training stage needs, so this package's __init__ imports nothing.

See docs/data.md for each dataset, where its files go, and the normalisation and base augmentation.
"""
