#!/usr/bin/env bash
# balance.sh SIZE MOT_CKPT "ETAS" "LRS" [STEPS]: the transition to the threshold
# router with its biases held at the calibrated firing rate (--router-balance
# ETA) instead of trained, 32 steps (10%) at each rate, validated every 4
# steps; then each final model decoding every sequence alone.
set -uo pipefail
. "$(dirname "$0")/common.sh"
size=$1 ckpt=$2 etas=$3 lrs=$4 steps=${5:-32}
shape_var=$size; shape=${!shape_var}
for lr in $lrs; do
    for eta in $etas; do
        tag="${size}_threshold_bal${eta}_lr${lr}"
        echo "== $tag"
        if [[ ! -f ${tag}.ckpt ]]; then
            $TM $DATA $shape --load "$ckpt" --transition token-choice --router threshold --router-balance $eta \
                --steps $steps --warmup 4 --lr $lr --val-every 4 --val-batches 4 --log ${tag}.jsonl \
                --save ${tag}.ckpt > ${tag}.out 2>&1 || { tail -3 ${tag}.out; continue; }
        fi
        grep "val loss" ${tag}.out | awk '{print $2, $6}' | tr '\n' ' '; echo
        OMP_NUM_THREADS=1 $TM eval --load ${tag}.ckpt --data "$D/corpus_val_*.bin" --batch 32 --seq 128 --batches 4 \
            --decode --device cpu > ${tag}_decode.out 2>&1
        cat ${tag}_decode.out
    done
done
