# One Snakemake rule per expanded DVC stage, built from dvc.yaml through r2kd.dag (DVC's resolver).
#
# Why generated: the stage list must not be written twice. Parameters come from params.yaml, exactly
# as for DVC; each rule carries the values of the params keys its stage declares, so Snakemake
# reruns a rule when (and only when) those values change. `--config` is not used: change
# params.yaml (or `dvc exp run -S`), so both tools always see the same parameters.
import os
import sys

ROOT = workflow.basedir  # the directory of the top-level Snakefile
sys.path.insert(0, ROOT)  # run from a source checkout even without `pip install -e`

from r2kd.config import load_params
from r2kd.dag import load_stages, upstream_outputs

if config:
    raise WorkflowError(
        "r2kd reads every parameter from params.yaml; --config/--configfile would be ignored. "
        "Edit params.yaml (or use `dvc exp run -S key=value`) instead."
    )

PARAMS = load_params(os.path.join(ROOT, "params.yaml"))
STAGES = load_stages(ROOT)
THREADS = max(PARAMS.runtime.threads, 1)

ALL_OUTPUTS = [out for stage in STAGES for out in stage.outs]


for _stage in STAGES:
    _res = PARAMS.resources_for(_stage.group)

    rule:
        name: _stage.rule_name
        input:
            [path for dep in _stage.deps for path in upstream_outputs(dep, STAGES)],
        output:
            _stage.outs,
        params:
            values=_stage.params_json,
            # via params: `shell:` is evaluated at run time, when `_stage` is the loop's last value
            cmd=_stage.cmd,
        threads: THREADS
        resources:
            mem_mb=_res.mem_mb,
            runtime=_res.runtime,
            gpu=_res.gpu,
        shell:
            "{params.cmd}"
