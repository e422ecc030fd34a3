#!/usr/bin/env bash
# transition.sh SIZE MOT_CKPT LR: the transition variants of a trained MoT model
set -uo pipefail
. "$(dirname "$0")/common.sh"
size=$1 ckpt=$2 lr=$3 steps=${4:-32}
shape_var=$size; shape=${!shape_var}
TMX=$TM
variant() {
    local name=$1; shift
    local tag="${size}_$name"
    if [[ ! -f ${tag}_sw.ckpt ]]; then
        $TMX $DATA $shape --load "$ckpt" --transition token-choice "$@" --steps 0 --val-every 1 --val-batches 4 --save ${tag}_sw.ckpt > ${tag}_sw.out 2>&1
    fi
    grep "transition:" ${tag}_sw.out
    OMP_NUM_THREADS=1 $TMX eval --load ${tag}_sw.ckpt --data "$D/corpus_val_*.bin" --batch 32 --seq 128 --batches 4 --decode --device cpu > ${tag}_sw_decode.out 2>&1
    cat ${tag}_sw_decode.out
    $TMX $DATA $shape --load "$ckpt" --transition token-choice "$@" --steps $steps --warmup 4 --lr $lr --val-every 1 --val-batches 4 --log ${tag}.jsonl --save ${tag}.ckpt > ${tag}.out 2>&1
    grep "val loss" ${tag}.out | awk '{print $2, $6}' | tr '\n' ' '; echo
    OMP_NUM_THREADS=1 $TMX eval --load ${tag}.ckpt --data "$D/corpus_val_*.bin" --batch 32 --seq 128 --batches 4 --decode --device cpu > ${tag}_decode.out 2>&1
    cat ${tag}_decode.out
}
for v in ${VARIANTS:-threshold threshold-one softmax}; do
    echo "== $v"
    case $v in
        threshold) variant threshold --router threshold --router-balance 0 ;;  # as logged, before the controller
        threshold-one) variant threshold-one --router threshold-one ;;
        softmax) variant softmax --router softmax --topk 1 ;;
        threshold-cf2) variant threshold-cf2 --router threshold --router-balance 0 --capacity-factor 2 ;;
        threshold-k8) variant threshold-k8 --router threshold --router-balance 0 --topk 8 ;;
        threshold-t1) variant threshold-t1 --router threshold --router-balance 0 --router-temperature 1 ;;
    esac
done
