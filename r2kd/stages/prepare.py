"""Stage `prepare`: materialise the dataset named in params.yaml under data/prepared/."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from r2kd import paths
from r2kd.config import Params
from r2kd.data.write import prepare


def run(params: Params) -> None:
    meta = prepare(params.data, paths.PREPARED, workers=params.runtime.workers)
    table = Table(title=f"prepared {meta['name']}", show_header=False)
    for key in ("num_classes", "channels", "image_size", "counts", "mean", "std"):
        table.add_row(key, str(meta.get(key)))
    Console(stderr=True).print(table)
