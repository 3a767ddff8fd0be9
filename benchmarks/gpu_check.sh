#!/usr/bin/env bash
# One prepared GPU check (< 5 minutes): the step benchmarks on CUDA and the CUDA tests; every number
# goes to $OUT/gpu_check.txt (./gpu_check.txt when OUT is unset). Run from the repository root:
#
# Two references, timed side by side in the same process (bench_step.py / bench_cohort.py
# --reference-mode both): the plain reference step with runtime.deterministic's switches (cuDNN
# benchmark off, deterministic algorithms: what the project's own rows run), and the same step with
# the official R2KD code's settings (torch.backends.cudnn.benchmark = True, deterministic algorithms
# off), which is faster. Every ratio is printed against each, and each line names its reference.
# Without a GPU the script runs nothing useful (torch.cuda is missing; each part fails and is
# logged); for a dry run of the same benchmarks on the CPU:
#
#     python benchmarks/bench_step.py --shapes default --methods r2kd --steps 2 --stage-repeats 1
#     python benchmarks/bench_cohort.py --device cpu --shape default --steps 2 --warmup 0
#
#     bash benchmarks/gpu_check.sh
#
# The GPU machine has PyTorch, torchvision, rich, PyYAML, scikit-learn and numpy, but not pydantic,
# torch-pruning, DVC or Snakemake (docs/performance.md). Bring their wheels in a .whl/ folder at the
# repository root, downloaded on a machine with network access (versions as in this project's venv):
#
#     mkdir -p .whl
#     python3 -m pip download --dest .whl --only-binary=:all: --no-deps --python-version 3.12 \
#         --implementation cp --abi cp312 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
#         pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
#         typing-extensions==4.16.0 torch-pruning==1.6.0
#
# (pydantic-core is the only compiled one; the others are py3-none-any wheels, which the same command
# accepts.) pytest is not on that list of the machine's packages either; if it is missing, add its
# pure-Python wheels to the same folder:
#
#     python3 -m pip download --dest .whl --only-binary=:all: --no-deps pytest==9.2.0 pluggy==1.7.0 \
#         iniconfig==2.3.1 packaging==25.0
#
# The script installs the folder with:
#
#     python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
#
# Nothing here needs DVC or Snakemake; the CUDA tests that do (none today) would be skipped.
set -u
cd "$(dirname "$0")/.."
REPORT="${OUT:-.}/gpu_check.txt"
mkdir -p "$(dirname "$REPORT")"
: > "$REPORT"
log() { echo "$*" | tee -a "$REPORT"; }
step() {  # step SECONDS TITLE COMMAND...: run with a time limit, keep its output, never stop the script
    local limit=$1 title=$2; shift 2
    log ""; log "=== $title ($(date -u +%H:%M:%S), limit ${limit}s): $*"
    timeout "$limit" "$@" 2>&1 | tee -a "$REPORT"
    log "=== exit ${PIPESTATUS[0]}"
}

if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
else
    log "no .whl/ folder: assuming pydantic and torch-pruning are importable already"
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi

# Parts to run (default: all), e.g. GPU_CHECK_PARTS="tests scale stages" for a short second lease.
PARTS=" ${GPU_CHECK_PARTS:-tests step cohort matrix scale stages} "
want() { [[ "$PARTS" == *" $1 "* ]]; }

step 30 "environment" python3 -c "import torch, pydantic, torch_pruning; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), '| pydantic', pydantic.VERSION, '| torch-pruning', __import__('importlib.metadata').metadata.version('torch-pruning'))"
step 20 "nvidia-smi" nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv
export CUBLAS_WORKSPACE_CONFIG=:4096:8  # runtime.deterministic's cuBLAS setting, before any cuBLAS call
# The CUDA tests first (if a capture fails, the numbers below would be eager ones): CUDA graph vs
# eager trainer (bit for bit), fast path vs eager, loader on CUDA == CPU, a CUDA smoke run, DDP on CUDA.
want tests && step 120 "pytest -m gpu" python3 -m pytest -q -m gpu -p no:cacheprovider -s tests/test_graphs.py \
    tests/test_fast_path.py tests/test_data.py tests/test_cluster.py tests/test_distributed.py tests/test_cohort.py
# The matrix as cohorts (cohort_seeds): the 10 runs of a (pair, seed) as one cohort step (one graph,
# teachers' forwards shared) vs each run alone vs the official code's 10 steps (both references).
want cohort && step 120 "bench_cohort (cuda)" python3 benchmarks/bench_cohort.py --device cuda --steps 30 \
    --reference-mode both
# This project's step vs the plain reference step, both shapes, every method: the CUDA default
# (fast path: channels_last + batched teacher views + CUDA graph), eager, bf16 variants; the stage
# path; one CIFAR-100-sized epoch with evaluation, reference loops vs Trainer.fit. Both references:
# deterministic (the ratios in docs/performance.md up to 2026-11-27) and official settings.
want step && step 240 "bench_step (cuda)" python3 benchmarks/bench_step.py --device cuda --steps 40 --steps-large 40 \
    --stage-steps 60 --epoch --reference-mode both
# K student runs packed on the one GPU vs the reference's one run per GPU (the matrix's GPU-hours;
# deterministic reference only). 4 processes measured the same as 2 on 2026-11-26: 1 and 2 here.
want matrix && step 100 "bench_matrix (cuda)" python3 benchmarks/bench_matrix.py --device cuda --procs 1 2 --steps 100 \
    --amps none bf16
# ImageNet scale: R34 -> R18 R2KD step at 224 px vs the streaming loader at 0/2/8 workers.
want scale && step 90 "bench_imagenet (cuda)" python3 benchmarks/bench_imagenet.py --device cuda --batch 64 --steps 15 \
    --images 1000 --threads 4
# The real stage commands on the embedded default with runtime.device auto (fast path and CUDA graph
# by default), in a scratch copy; provenance must say "step": "cuda-graph".
if want stages; then
    SCRATCH=$(mktemp -d); cp -r r2kd workflow params.yaml "$SCRATCH"/; mkdir -p "$SCRATCH/data"
    stage() { step 60 "$*" env R2KD_PYTHON="${R2KD_PYTHON:-python3}" PYTHONPATH="${PYTHONPATH:-}" bash -c "cd $SCRATCH && workflow/scripts/r2kd $*"; }
    stage prepare
    stage train-teacher wrn_16_2
    stage prune wrn_16_2
    stage pair wrn_16_2-resnet8
    stage distill wrn_16_2-resnet8 r2kd default 0
    step 10 "stage outputs" bash -c "cd $SCRATCH && grep -h '\"step\"\|\"device\"' runs/students/*/*/s0/provenance.json; cat runs/students/*/*/s0/metrics.json runs/teachers/*/metrics.json; cat .r2kd/timing/*/*.json 2>/dev/null | head -20"
fi
log ""; log "report: $REPORT"
