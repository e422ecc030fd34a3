#!/usr/bin/env bash
# tests/gpu_check.sh: everything that needs a GPU, in one go, from any folder.
#
#   tests/gpu_check.sh [--build-only] [-j N] [OUTDIR]
#   tests/gpu_check.sh --print-commands [OUTDIR]
#
# --print-commands lists the prepare and train_mot command lines the stages
# run, in order, one argument a line and an empty line after each command,
# and runs nothing: tests/test_cli.cpp runs each of them on the CPU for one
# step, so a change of train_mot's defaults cannot break this check unseen.
#
# Stages, each ending in PASS, FAIL or SKIP with its reason:
#   build           train_mot (CUDA), the GPU test suite, the GPU benchmark and
#                   prepare, through the Makefile with -j N (default: all cores)
#   data            a small BPE vocabulary and shards made from README.md
#   train_sync      the first model run: a short training run of train_mot on
#                   the GPU with MOT_CUDA_SYNC=1, so a faulting kernel is named
#                   with its file and line; in bf16, whose passes run every
#                   fp32 kernel too, plus the rounding and the bf16 tensor-core products
#   tests_layers    the GPU layer suite: every layer against the CPU reference
#   tests_model     the GPU model suite: the whole model, training, resume and
#                   reproducibility against the CPU reference
#   tests_expert_parallel  the expert-parallel GPU layers as threads on one GPU
#   memcheck_layers compute-sanitizer memcheck over the layer suite, and
#   memcheck_expert_parallel over the expert-parallel one
#   memcheck_model  the same over the model suite (its heaviest cases left out,
#                   and the out-of-memory case, whose failed cudaMalloc is the point)
#   memcheck_train  compute-sanitizer memcheck over a 3-step run of train_mot
#   bench           bench/bench_gpu.cu at GPT-2-small shape
# The last lines are one table of the stages. A stage that ran zero test cases
# is SKIP, never PASS. Every log goes to OUTDIR (default build/gpu_check); the
# binaries are the Makefile's (./train_mot, build/test_gpu_*, build/bench_gpu).
# Exit status: 0 all ran and passed, 1 a stage failed, 2 nothing failed but
# the GPU stages were skipped (no usable GPU).
#
# On a GPU node without the Debian packages (CLI11, doctest), run
# `make offline-kit` on a machine that has them first: the kit folder
# (build/offline-kit) travels with the tree and the build uses it.
#
# The whole run is held to 8 minutes (BUDGET_S=480): each stage's time limit
# is cut to what is left, and a stage that runs out is killed with every
# process it started (the parallel nvcc jobs too).
set -u
cd "$(dirname "$0")/.."

build_only=0
print_commands=0
jobs=$(nproc 2>/dev/null || echo 4)
OUTDIR=build/gpu_check
while [ $# -gt 0 ]; do
    case "$1" in
        --build-only) build_only=1 ;;
        --print-commands) print_commands=1 ;;
        -j) jobs=$2; shift ;;
        -j*) jobs=${1#-j} ;;
        -h|--help) sed -n '2,/^set -u/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) OUTDIR=$1 ;;
    esac
    shift
done

# ---- the program's command lines (--print-commands lists them) ----------------
# A tiny model: 2 layers, one MoT layer with 8 experts mixing groups of 4 (the
# default group of 32 would not divide the batch of 8).
DATA=$OUTDIR/data
PREPARE_CMD=(./prepare --out "$DATA" --vocab 512 README.md)
TINY=(--data "$DATA/*_train_*.bin" --val-data "$DATA/*_val_*.bin" --tokenizer "$DATA/tokenizer.bin"
      --device cuda --layers 2 --ffn-layers 1 --d-model 64 --heads 2 --batch 8 --seq 32
      --experts 8 --group 4 --val-batches 2 --sample-len 8)
TRAIN_SYNC_CMD=(./train_mot "${TINY[@]}" --precision bf16 --steps 20 --val-every 10 --sample-every 20
                --save "$OUTDIR/sync.ckpt")
MEMCHECK_TRAIN_CMD=(./train_mot "${TINY[@]}" --steps 3 --val-every 2 --sample-every 3)
if [ $print_commands -eq 1 ]; then
    printf '%s\n' "${PREPARE_CMD[@]}" "" "${TRAIN_SYNC_CMD[@]}" "" "${MEMCHECK_TRAIN_CMD[@]}" ""
    exit 0
fi

mkdir -p "$OUTDIR" || { echo "gpu_check: cannot create the output folder $OUTDIR" >&2; exit 2; }
BUDGET_S=${BUDGET_S:-480}
[ -d /usr/local/cuda/bin ] && export PATH="$PATH:/usr/local/cuda/bin"
NVCC=${NVCC:-$(command -v nvcc || true)}
SANITIZER=${SANITIZER:-$(command -v compute-sanitizer || true)}

declare -a NAMES STATUS SECS NOTES
fails=0
skips=0

# record NAME STATUS SECS NOTE
record() {
    NAMES+=("$1"); STATUS+=("$2"); SECS+=("$3"); NOTES+=("$4")
    case "$2" in FAIL*) fails=$((fails + 1)) ;; SKIP*) skips=$((skips + 1)) ;; esac
    echo "--- $1: $2 ($3 s) $4"
}

# run_limited LIMIT LOG CMD...: runs CMD in its own process group with output
# to LOG (and the terminal), kills the whole group after LIMIT seconds (or
# what is left of the budget). Sets RC (124 on timeout) and DT.
run_limited() {
    local limit=$1 log=$2
    shift 2
    local left=$((BUDGET_S - SECONDS))
    [ "$limit" -gt "$left" ] && limit=$left
    local t0=$SECONDS
    if [ "$limit" -le 0 ]; then
        echo "out of time budget ($BUDGET_S s)" >"$log"; RC=124; DT=0; return
    fi
    setsid bash -c '"$@"' _ "$@" >"$log" 2>&1 &
    local pid=$!
    # the watchdog: its own sleep is killed with it, and it holds no terminal or pipe
    ( trap 'kill $sp 2>/dev/null; exit 0' TERM
      sleep "$limit" & sp=$!; wait $sp
      echo "gpu_check: time limit ${limit} s reached, killing the stage" >>"$log"
      kill -TERM -- -"$pid"; sleep 3; kill -KILL -- -"$pid" ) >/dev/null 2>&1 &
    local watchdog=$!
    wait "$pid"; RC=$?
    kill "$watchdog" 2>/dev/null; wait "$watchdog" 2>/dev/null
    grep -q "time limit .* reached" "$log" && RC=124
    DT=$((SECONDS - t0))
    tail -n 25 "$log" | sed 's/^/    /'
}

# doctest_counts LOG: "passed failed skipped" from the last summary line, or empty
doctest_counts() {
    grep -E '^\[doctest\] test cases:' "$1" | tail -n 1 |
        sed -E 's/.*\| *([0-9]+) passed \| *([0-9]+) failed \| *([0-9]+) skipped.*/\1 \2 \3/'
}

# judge_doctest NAME LOG: PASS only when cases ran and none failed; all skipped is SKIP
judge_doctest() {
    local name=$1 log=$2 counts p f s
    counts=$(doctest_counts "$log")
    if [ $RC -eq 124 ]; then record "$name" "FAIL(timeout)" $DT "killed after ${DT} s; log $log"; return; fi
    if [ -z "$counts" ]; then record "$name" "FAIL(rc=$RC)" $DT "no doctest summary (crashed?); log $log"; return; fi
    read -r p f s <<<"$counts"
    if [ "$f" -gt 0 ] || [ $RC -ne 0 ]; then
        record "$name" "FAIL(rc=$RC)" $DT "$p passed, $f failed, $s skipped; log $log"
    elif [ "$p" -eq 0 ]; then
        record "$name" "SKIP" $DT "0 cases ran ($s skipped): $(grep -m1 -o 'no usable GPU.*' "$log" || echo 'see log')"
    else
        record "$name" "PASS" $DT "$p passed, 0 failed, $s skipped"
    fi
}

echo "gpu_check: output in $OUTDIR, -j $jobs, budget $BUDGET_S s"
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader 2>/dev/null ||
    echo "nvidia-smi not found or no GPU"

# ---- build ------------------------------------------------------------------
KIT=build/offline-kit/include
if [ -z "$NVCC" ]; then
    record build "FAIL" 0 "nvcc not found (PATH, /usr/local/cuda/bin)"
elif [ ! -f "$KIT/CLI/CLI.hpp" ] && [ ! -f /usr/include/CLI/CLI.hpp ]; then
    record build "FAIL" 0 "CLI11 headers not found ($KIT/CLI/CLI.hpp, /usr/include/CLI/CLI.hpp): run 'make offline-kit' on a machine with libcli11-dev and doctest-dev, and bring build/offline-kit along"
elif [ ! -f "$KIT/doctest/doctest.h" ] && [ ! -f /usr/include/doctest/doctest.h ]; then
    record build "FAIL" 0 "doctest header not found ($KIT/doctest/doctest.h, /usr/include/doctest/doctest.h): run 'make offline-kit' on a machine with libcli11-dev and doctest-dev, and bring build/offline-kit along"
else
    # build for the GPU that is here, else the Makefile's default architectures
    cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')
    arch_args=()
    [ -n "$cap" ] && arch_args=("GPU_ARCH=-gencode arch=compute_$cap,code=sm_$cap")
    # a GPU node builds for its one architecture on many cores; without a GPU
    # (CI's --build-only, 2 cores) both default architectures are built
    build_limit=240
    [ -z "$cap" ] && build_limit=420
    if command -v make >/dev/null; then
        run_limited $build_limit "$OUTDIR/build.log" make -j "$jobs" NVCC="$NVCC" "${arch_args[@]}" \
            train_mot prepare build/test_gpu_layers build/test_gpu_model build/test_gpu_expert_parallel build/bench_gpu
    else
        # no make on the node: the Makefile's commands by hand, in parallel
        arch=${cap:+-gencode arch=compute_$cap,code=sm_$cap}
        arch=${arch:--gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90}
        kit_inc=$([ -f "$KIT/CLI/CLI.hpp" ] && echo "-isystem $KIT")
        nv="$NVCC -O3 -std=c++17 -I. $kit_inc $arch -Xcompiler -fopenmp,-fno-math-errno,-fno-trapping-math,-march=native -diag-suppress 20012"
        mkdir -p build
        run_limited $build_limit "$OUTDIR/build.log" bash -c "set -x; $nv mot.cu -o train_mot -lcublas & a=\$!;
            $nv tests/test_gpu_layers.cu -o build/test_gpu_layers -lcublas & b=\$!;
            $nv tests/test_gpu_model.cu -o build/test_gpu_model -lcublas & d=\$!;
            $nv tests/test_gpu_expert_parallel.cu -o build/test_gpu_expert_parallel -lcublas & e=\$!;
            $nv bench/bench_gpu.cu -o build/bench_gpu -lcublas & c=\$!;
            g++ -O3 -march=native -std=c++17 -fopenmp -fno-math-errno -fno-trapping-math -I. $kit_inc data/prepare.cpp -o prepare &&
            wait \$a && wait \$b && wait \$c && wait \$d && wait \$e"
    fi
    kit_note=$([ -f "$KIT/CLI/CLI.hpp" ] && echo "with the offline kit" || echo "system headers")
    if [ $RC -eq 0 ]; then
        record build PASS $DT "nvcc for $([ -n "$cap" ] && echo "sm_$cap" || echo "sm_80 + sm_90"), $kit_note"
    elif [ $RC -eq 124 ]; then
        record build "FAIL(timeout)" $DT "log $OUTDIR/build.log"
    else
        record build "FAIL(rc=$RC)" $DT "$(grep -m1 -E 'error' "$OUTDIR/build.log" | cut -c1-150)"
    fi
fi
built=$([ "${STATUS[0]}" = PASS ] && echo 1 || echo 0)

if [ $build_only -eq 1 ]; then
    :
elif [ $built -eq 0 ]; then
    record tests "SKIP" 0 "build failed, nothing run"
else
    # ---- data: a small vocabulary from README.md --------------------------------
    run_limited 60 "$OUTDIR/data.log" "${PREPARE_CMD[@]}"
    if [ $RC -eq 0 ]; then record data PASS $DT "$DATA"; else record data "FAIL(rc=$RC)" $DT "log $OUTDIR/data.log"; fi

    # ---- the first model run, synchronised after every launch -------------------
    run_limited 90 "$OUTDIR/train_sync.log" env MOT_CUDA_SYNC=1 "${TRAIN_SYNC_CMD[@]}"
    if [ $RC -eq 0 ] && grep -q "cuda" "$OUTDIR/train_sync.log"; then
        record train_sync PASS $DT "$(grep -E '^step +20' "$OUTDIR/train_sync.log" | head -n 1 | cut -c1-80)"
    else
        record train_sync "FAIL(rc=$RC)" $DT "$(grep -m1 -iE 'error' "$OUTDIR/train_sync.log" | cut -c1-150)"
    fi

    # ---- the GPU suite -------------------------------------------------------------
    for suite in layers model expert_parallel; do
        run_limited 180 "$OUTDIR/tests_$suite.log" build/test_gpu_$suite
        judge_doctest tests_$suite "$OUTDIR/tests_$suite.log"
    done

    # ---- compute-sanitizer -----------------------------------------------------------
    memcheck() {
        local name=$1 log=$2
        shift 2
        if [ -z "$SANITIZER" ]; then record "$name" "SKIP" 0 "compute-sanitizer not found"; return; fi
        run_limited 150 "$log" "$SANITIZER" --tool memcheck --error-exitcode 99 "$@"
        local summary
        summary=$(grep -E 'ERROR SUMMARY' "$log" | tail -n 1 | sed 's/^=* *//')
        if grep -q "Device not supported" "$log"; then
            record "$name" "SKIP" $DT "compute-sanitizer: Device not supported on this machine"
        elif [ $RC -eq 124 ]; then
            record "$name" "FAIL(timeout)" $DT "killed after ${DT} s; log $log"
        elif [ $RC -eq 99 ] || ! echo "$summary" | grep -q "ERROR SUMMARY: 0 errors"; then
            record "$name" "FAIL(rc=$RC)" $DT "${summary:-no sanitizer summary}; log $log"
        elif [ "$name" != memcheck_train ]; then
            judge_doctest "$name" "$log"  # the suite's own verdict, all-skipped guard included
            NOTES[${#NOTES[@]}-1]="${NOTES[${#NOTES[@]}-1]}; $summary"
        elif [ $RC -ne 0 ]; then
            record "$name" "FAIL(rc=$RC)" $DT "$summary; log $log"
        elif ! grep -q "cuda" "$log"; then
            record "$name" "SKIP" $DT "train_mot did not run on the GPU"
        else
            record "$name" PASS $DT "$summary"
        fi
    }
    memcheck memcheck_layers "$OUTDIR/memcheck_layers.log" build/test_gpu_layers
    memcheck memcheck_expert_parallel "$OUTDIR/memcheck_expert_parallel.log" build/test_gpu_expert_parallel
    memcheck memcheck_model "$OUTDIR/memcheck_model.log" build/test_gpu_model \
        --test-case-exclude="*AdamW steps*,*GPT-2-small*,*gpu training:*,*gpu memory:*"
    memcheck memcheck_train "$OUTDIR/memcheck_train.log" "${MEMCHECK_TRAIN_CMD[@]}"

    # ---- benchmark ---------------------------------------------------------------------
    run_limited 150 "$OUTDIR/bench.log" build/bench_gpu
    if [ $RC -eq 0 ] && grep -q '^summary' "$OUTDIR/bench.log"; then
        record bench PASS $DT "table below"
    elif [ $RC -eq 0 ]; then
        record bench "SKIP" $DT "$(tail -n 1 "$OUTDIR/bench.log")"
    else
        record bench "FAIL(rc=$RC)" $DT "$(grep -m1 -iE 'error' "$OUTDIR/bench.log" | cut -c1-150); log $OUTDIR/bench.log"
    fi
fi

{
    echo
    echo "==================== gpu_check summary ===================="
    printf "%-15s %-14s %5s  %s\n" stage status secs note
    for i in "${!NAMES[@]}"; do
        printf "%-15s %-14s %5s  %s\n" "${NAMES[$i]}" "${STATUS[$i]}" "${SECS[$i]}" "${NOTES[$i]}"
    done
    if [ -f "$OUTDIR/bench.log" ] && grep -q '^summary' "$OUTDIR/bench.log"; then
        echo
        sed -n '/^summary/,$p' "$OUTDIR/bench.log"
    fi
    echo "total ${SECONDS} s, $fails failed, $skips skipped; logs in $OUTDIR"
} | tee "$OUTDIR/summary.txt"
[ $fails -gt 0 ] && exit 1
[ $build_only -eq 0 ] && [ $skips -gt 0 ] && exit 2
exit 0
