#!/usr/bin/env bash
# The CUDA check of issue 8, for one machine with GPUs (about 6 min on one H100/H200, 16 cores):
# GPU list, `cxraug bench all` on CUDA at moderate sizes, `cxraug bench study` (the projected full-study
# time), `cxraug bench compile` (torch.compile vs eager), a 2-process torchrun/NCCL check (skipped,
# and said so, with fewer than 2 GPUs), and the tests
# that exercise CUDA paths. Run from the repository root:
#     OUT=/some/dir bash scripts/gpu_check.sh
# Every step's output goes to $OUT/<step>.log; a failing step is logged and the script goes on.
set -u
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
export MLFLOW_DISABLE_TELEMETRY=true CXRAUG_NO_PROGRESS=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export MLFLOW_TRACKING_URI="sqlite:///$(mktemp -d)/mlflow.db"

step() {  # step NAME TIMEOUT_S COMMAND...: run, log, record the exit status, never stop the script
    local name=$1 limit=$2
    shift 2
    local started=$SECONDS
    echo "== $name: $*" | tee -a "$SUMMARY"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "   $name: exit $rc in $((SECONDS - started)) s (log: $OUT/$name.log)" | tee -a "$SUMMARY"
    tail -n 3 "$OUT/$name.log" | sed 's/^/   | /'
}

# Python: the carried .venv when it runs here, else a fresh one from the package registry
PY=.venv/bin/python
if ! "$PY" -c "import cxraug, torch" > /dev/null 2>&1; then
    PY=python3
    if ! "$PY" -c "import cxraug, torch" > /dev/null 2>&1; then
        step venv 300 bash -c "python3 -m venv .venv-gpu && .venv-gpu/bin/pip install -q -e '.[dev]'"
        PY=.venv-gpu/bin/python
    fi
fi
echo "python: $PY" | tee -a "$SUMMARY"

step nvidia-smi 30 nvidia-smi -L
step torch-cuda 60 "$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), torch.cuda.device_count(), torch.cuda.get_device_name() if torch.cuda.is_available() else '-')"

# the study's nets and batches (params.yaml) on 2000 demo phantoms at 64 px, 20 steps per loop
# BENCH_ARGS=--smoke runs the same steps at tiny sizes (to try this script on a CPU machine)
step bench 330 "$PY" -m cxraug.cli bench all --params params.yaml ${BENCH_ARGS:---images 2000 --steps 20} --out "$OUT/bench-cuda.md"

GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())" 2> /dev/null || echo 0)
if [ "${GPUS:-0}" -ge 2 ]; then
    step nccl 120 "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_nccl_check.py
else
    echo "== nccl: SKIPPED, $GPUS GPU(s): a 2-process NCCL check needs 2 GPUs" | tee -a "$SUMMARY"
fi

# the projected full-study wall time on this GPU (issue 19's target: <= 2 h on one H100/H200)
step study 330 "$PY" -m cxraug.cli bench study --params params.yaml ${STUDY_ARGS:-} --out "$OUT/study-cuda.md"

# torch.compile vs eager per loop on CUDA (kept in a stage only where a row says "faster")
step compile 150 "$PY" -m cxraug.cli bench compile --params params.yaml ${COMPILE_ARGS:-}

step tests 150 "$PY" -m pytest -q -x -p no:cacheprovider tests/core/test_runtime.py tests/core/test_distributed.py \
    tests/benchmarks/test_bench.py -k "cuda or precision or pinned or shards or batchnorm or memory_maps"

echo "done: $OUT" | tee -a "$SUMMARY"
