#!/usr/bin/env bash
set -uo pipefail
. "$(dirname "$0")/common.sh"
TMX=$TM
sw() {  # tag options: the switch alone (loss at the switch on the 4 validation batches)
    local tag=$1; shift
    $TMX $DATA $S --load s_mot.ckpt --transition token-choice "$@" --steps 0 --val-every 1 --val-batches 4 --save ${tag}_sw.ckpt > ${tag}_sw.out 2>&1
    echo "== $tag"; grep "transition: loss" ${tag}_sw.out
}
ft() {  # tag lr options: 32 more steps
    local tag=$1 lr=$2; shift 2
    $TMX $DATA $S --load s_mot.ckpt --transition token-choice "$@" --steps 32 --warmup 4 --lr $lr --val-every 1 --val-batches 4 --log ${tag}.jsonl --save ${tag}.ckpt > ${tag}.out 2>&1
    echo "== $tag fine-tuned at $lr"; grep "val loss" ${tag}.out | awk '{print $2, $6}' | tr '\n' ' '; echo
}
sw S_threshold --router threshold
ft S_threshold_lr0.0006 0.0006 --router threshold --router-balance 0
sw S_softmax --router softmax --topk 1
sw S_threshold-one --router threshold-one
OMP_NUM_THREADS=1 $TMX eval --load S_threshold_sw.ckpt --data "$D/corpus_val_*.bin" --batch 32 --seq 128 --batches 4 --decode --device cpu
ft S_threshold_lr0.006 0.006 --router threshold --router-balance 0
ft S_softmax_lr0.006 0.006 --router softmax --topk 1
