#!/usr/bin/env bash
# tests/gpu_check.sh: everything that needs a GPU, in one go, from the repo root.
#   bash tests/gpu_check.sh            (build dir: build/gpu_check, override with BUILD=...)
# Builds the GPU test and benchmark with nvcc, runs all GPU tests, runs
# compute-sanitizer memcheck on the GPU tests (all but the 10-step training
# case), runs the benchmark, and prints a summary table last. Exits non-zero
# when any stage fails. Sized to finish well under 8 minutes on an H200.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/gpu_check}
mkdir -p "$BUILD"
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
SANITIZER=${SANITIZER:-$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)}

if "$NVCC" --help 2>/dev/null | grep -q -- "-arch=native"; then ARCH="-arch=native"; else ARCH="-arch=sm_90"; fi
FLAGS="-std=c++17 -O2 $ARCH -Xcompiler -fopenmp -I."

declare -a NAMES STATUS SECS NOTES
fails=0
# stage NAME TIMEOUT_S COMMAND...: runs COMMAND with a time limit, logs to $BUILD/NAME.log
stage() {
    local name=$1 limit=$2
    shift 2
    echo "=== $name: $*"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$BUILD/$name.log"
    local rc=${PIPESTATUS[0]}
    local dt=$((SECONDS - t0))
    NAMES+=("$name")
    SECS+=("$dt")
    if [ $rc -eq 0 ]; then STATUS+=("PASS"); else STATUS+=("FAIL(rc=$rc)"); fails=$((fails + 1)); fi
    return $rc
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi not found"

# the three builds in parallel (time limits of all stages add up to 8 minutes)
BUILD_CMD="$NVCC $FLAGS tests/test_gpu.cu -o $BUILD/test_gpu -lcublas & p=\$!;
           $NVCC $FLAGS mot.cu -o $BUILD/train_mot -lcublas & q=\$!;
           $NVCC $FLAGS bench/bench_gpu.cu -o $BUILD/bench_gpu -lcublas && wait \$p && wait \$q &&
           g++ -std=c++17 -O2 -fopenmp -I. data/prepare.cpp -o $BUILD/prepare &&
           $BUILD/prepare --out $BUILD/data --vocab 512 README.md"
if stage build 100 bash -c "$BUILD_CMD"; then
    NOTES+=("nvcc $ARCH")
    stage tests 90 "$BUILD/test_gpu"
    NOTES+=("$(grep -E '^\[doctest\] test cases' "$BUILD/tests.log" | sed 's/\[doctest\] //' | tail -1)")
    # on this machine a skipped GPU test means no GPU was found: that is a failure here
    if grep -qE '\| [1-9][0-9]* skipped' "$BUILD/tests.log"; then
        STATUS[${#STATUS[@]}-1]="FAIL(skipped)"
        fails=$((fails + 1))
    fi

    if [ -x "$SANITIZER" ]; then
        stage memcheck 100 "$SANITIZER" --tool memcheck --error-exitcode 1 \
            "$BUILD/test_gpu" --test-case-exclude="*10 AdamW*"
        NOTES+=("$(grep -E 'ERROR SUMMARY' "$BUILD/memcheck.log" | tail -1)")
        # a short training run of the real program: dense + MoT layers, train, validate, sample
        stage memcheck_train 60 "$SANITIZER" --tool memcheck --error-exitcode 1 \
            "$BUILD/train_mot" --data "$BUILD/data/*_train_*.bin" --val-data "$BUILD/data/*_val_*.bin" \
            --tokenizer "$BUILD/data/tokenizer.bin" --device cuda --steps 3 --layers 2 --mot-layers 1 --d-model 64 --batch 8 \
            --seq 32 --val-every 2 --val-batches 2 --sample-every 3 --sample-len 8
        NOTES+=("$(grep -E 'ERROR SUMMARY' "$BUILD/memcheck_train.log" | tail -1)")
    else
        NAMES+=("memcheck"); STATUS+=("FAIL(missing)"); SECS+=(0); NOTES+=("compute-sanitizer not found")
        fails=$((fails + 1))
    fi

    stage bench 120 "$BUILD/bench_gpu"
    NOTES+=("see summary below")
else
    NOTES+=("nvcc $ARCH: build failed, nothing else run")
fi

echo
echo "==================== gpu_check summary ===================="
printf "%-10s %-14s %6s  %s\n" stage status secs note
for i in "${!NAMES[@]}"; do
    printf "%-10s %-14s %6s  %s\n" "${NAMES[$i]}" "${STATUS[$i]}" "${SECS[$i]}" "${NOTES[$i]:-}"
done
if [ -f "$BUILD/bench.log" ]; then
    echo
    echo "benchmark (MFU vs H200 fp32 67 / TF32 494 TFLOP/s):"
    sed -n '/^summary/,$p' "$BUILD/bench.log" | tail -n +2
fi
echo "total ${SECONDS}s, $fails failed stage(s)"
[ $fails -eq 0 ]
