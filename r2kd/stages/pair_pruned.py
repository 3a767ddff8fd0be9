"""Stage `pair_pruned <id>`: per method of the pipeline table, the pruned teacher its students run.

runs/pairs/<id>/<method>.json names the pruned teacher's file and SHA-256 for a method that runs it and
nothing for any other, so a new pruned teacher reruns only those students (docs/architecture.md). A pin
is written for every method of the table, not only those params.yaml lists, so editing `methods`
changes no pin.
"""

from __future__ import annotations

from r2kd import paths, pipeline
from r2kd.config import Params
from r2kd.files import write_json
from r2kd.recorded import params_record
from r2kd.stages.pair import check_pair
from r2kd.stages.record import input_hashes


def run(params: Params, pair: str) -> None:
    check_pair(params, pair)
    teacher = params.pairs[pair].teacher
    pinned = {"teacher": teacher, "files": input_hashes([paths.pruned_dir(teacher) / "model.pt"])}
    for name, method in pipeline.METHODS.items():
        write_json(paths.method_pin(pair, name), {"pair": pair, "method": name,
                                                  "pruned": pinned if method.uses_pruned_teacher else None})
    write_json(paths.pins_dir(pair) / "record.json", {**pinned, "params": params_record(params, "pair_pruned", pair=pair)})
