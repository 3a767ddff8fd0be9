"""Per-epoch logs as CSV, the format `dvc plots` reads."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from r2kd.files import write_text


# Wall-clock columns stay out of the log: it is a result, and must be identical across reruns.
NONDETERMINISTIC = ("seconds",)


def write_log(path: Path, rows: list[dict[str, float]]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row if key not in NONDETERMINISTIC))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows)
    write_text(path, buffer.getvalue())


def read_log(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]
