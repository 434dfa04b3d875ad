#!/usr/bin/env bash
# The GPU path in one command (< 8 minutes on one H200): the ~1B bench (full and LoRA fine-tuning, with and
# without gradient checkpointing, torch.compile; tokens/s, TFLOP/s, MFU), a QLoRA step (bitsandbytes 4-bit
# on the GPU), a DeepSpeed ZeRO-3 step over NCCL on every GPU, and generation (greedy and 5 beams) with a
# model sharded by device_map="auto". Prints one table, a row per check: ok / FAILED and its key number.
#
#   bash scripts/gpu_check.sh                 # results in $OUT (the device tool's folder), else /tmp/lmm-gpu-check/results/
#
# Wheels in .whl/ (scripts/gpu_wheels.sh makes them) are installed first into /tmp/site, for a machine
# without network that lacks hydra, omegaconf, deepspeed, bitsandbytes, submitit (never torch/transformers:
# the machine's own are used). Exit codes: 0 all ok, 1 a check failed, 77 no GPU here (nothing checked).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
NO_GPU=77
WORK=${GPU_CHECK_WORK:-/tmp/lmm-gpu-check}
RESULTS=${OUT:-$WORK/results}
BUDGET_S=${GPU_CHECK_BUDGET_S:-450}  # every check within it; the summary follows (< 8 min in all)
mkdir -p "$RESULTS"
STATUS=$RESULTS/status.tsv
: > "$STATUS"

# GPU_CHECK_FORCE_CPU=1 runs the checks anyway (the script's plumbing, tested on a CPU with GPU_CHECK_BENCH_ARGS
# shrinking the bench and GPU_CHECK_WHEELS=0); the GPU-only checks then fail, as they should.
if [ "${GPU_CHECK_FORCE_CPU:-0}" != 1 ] && \
   ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.device_count() > 0 else 1)' >/dev/null 2>&1; then
  msg="gpu_check: no GPU here ($PY sees no CUDA device, or has no torch): nothing was checked; run this on a GPU machine (exit $NO_GPU)"
  echo "$msg" >&2
  echo "$msg" > "$RESULTS/summary.txt"
  exit $NO_GPU
fi

exec > >(tee -a "$RESULTS/gpu_check.log") 2>&1
START=$(date +%s)
mkdir -p "$WORK"
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export LMM_ROOT=$WORK LMM_CACHE_DIR=$WORK/cache TORCH_EXTENSIONS_DIR=$WORK/torch_extensions DS_BUILD_OPS=0
unset LMM_DATA_DIR

# check NAME TIMEOUT_S JSON COMMAND...: run it under its time limit, cut to what is left of the script's budget
# (a check that cannot start in time is skipped: exit code 125), so the summary always comes before the device
# tool's own limit; one status line (name, exit code, json, seconds).
check() {
  local name=$1 limit=$2 json=$3; shift 3
  local t0=$SECONDS rc
  local left=$((BUDGET_S - ($(date +%s) - START)))
  if [ "$left" -lt 15 ]; then
    echo "=== $name: skipped, the ${BUDGET_S}s budget is spent"
    printf '%s\t%s\t%s\t%s\n' "$name" 125 "$json" 0 >> "$STATUS"
    return 125
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== $name (limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$json" "$((SECONDS - t0))" >> "$STATUS"
  return $rc
}

# Unpacking is all a pure-Python wheel install does: the fallback where the machine's Python has no pip.
unpack_wheels() {
  "$PY" -c 'import sys, zipfile
for wheel in sys.argv[2:]:
    zipfile.ZipFile(wheel).extractall(sys.argv[1])' /tmp/site .whl/*.whl
}
install_wheels() {
  if "$PY" -m pip --version > /dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  else
    echo "no pip for $PY: unpacking the wheels into /tmp/site"; unpack_wheels
  fi
}
if [ "${GPU_CHECK_WHEELS:-1}" = 1 ] && compgen -G ".whl/*.whl" > /dev/null; then
  export -f install_wheels unpack_wheels && export PY
  check "install carried wheels" 120 "" bash -c install_wheels
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi

NGPU=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
check "environment" 120 "$RESULTS/env.json" "$PY" -m bench.gpu_check env --json "$RESULTS/env.json"

# The bench on one GPU (Trainer would wrap a multi-GPU process in DataParallel), one process per variant:
# a failure or a time-out stays in its row. The 1B model is assembled once (cached under $WORK).
bench() {
  local variant=$1 limit=$2
  check "bench $variant" "$limit" "$RESULTS/bench-$variant.json" env CUDA_VISIBLE_DEVICES=0 \
    "$PY" -m bench.throughput --gpu --variants "$variant" --root "$WORK/bench" --json "$WORK/bench-$variant.raw.json" \
    ${GPU_CHECK_BENCH_ARGS:-} \
    && "$PY" -m bench.gpu_check bench-row --bench-json "$WORK/bench-$variant.raw.json" --json "$RESULTS/bench-$variant.json"
}
# In order of importance, so that a slow machine loses the least of it to the budget.
bench full 180
bench lora 75
bench qlora 90
check "deepspeed zero3 (nccl)" 150 "$RESULTS/zero3.json" \
  "$PY" -m torch.distributed.run --standalone --nproc_per_node "$(( NGPU > 0 ? NGPU : 1 ))" -m bench.gpu_check zero3 \
  --root "$WORK/zero3" --json "$RESULTS/zero3.json"
check "eval sharded generation" 90 "$RESULTS/eval.json" \
  "$PY" -m bench.gpu_check eval --root "$WORK/eval" --json "$RESULTS/eval.json"
bench full-gc 75
bench lora-gc 75
bench full-compile "$BUDGET_S"  # last: whatever is left of the budget (compilation takes a minute or more)

echo
echo "=== summary ($(($(date +%s) - START)) s)"
"$PY" -m bench.gpu_check summary --status "$STATUS" --out "$RESULTS/summary.txt"
