#!/usr/bin/env bash
# bench/gpu_precision.sh [OUTDIR]: bf16 against fp32 on the GPU at GPT-2-small
# shapes (L 12, C 768, NH 12, d_ff 3072; README, "Precision"). Each kind
# (dense; MoT E 256, G 32, f 384, tau 0.1; token choice top-1, E 32, f 3072)
# trains twice from the same seed, once per precision, STEPS steps at B x T
# tokens, and validates every STEPS/4 steps on the same held-out tokens. The
# last lines are a table: validation loss at each point for both precisions,
# the difference at the end, and the median step time, tokens/s and MFU of
# each run (MFU against the device's fp32 or bf16 peak, as train_mot prints it).
#
#   make train_mot prepare NVCC=nvcc && bench/gpu_precision.sh
#
# Settings (environment): STEPS (200), B (32; MoT needs a multiple of 32), T
# (256), LR (6e-4), TEXT (tinyshakespeare.txt in data/ or $MOT_DATA, else
# README.md, which holds too few tokens to validate at B 32 x T 256),
# VOCAB (4096), DEVICE (cuda; cpu tries the script on a small SHAPE), SHAPE
# (the model's options, GPT-2 small's). Without a GPU train_mot stops at
# --device cuda.
# Exit status: 0 every run finished; 1 a run failed (its log in OUTDIR).
set -u
cd "$(dirname "$0")/.."
OUT=${1:-build/gpu_precision}
STEPS=${STEPS:-200} B=${B:-32} T=${T:-256} LR=${LR:-6e-4} VOCAB=${VOCAB:-4096} DEVICE=${DEVICE:-cuda}
SHAPE=${SHAPE:-"--layers 12 --d-model 768 --heads 12 --d-ff 3072"}
TEXT=${TEXT:-data/tinyshakespeare.txt}
[ -f "$TEXT" ] || TEXT=${MOT_DATA:-data}/tinyshakespeare.txt
[ -f "$TEXT" ] || TEXT=README.md  # too short to validate B 32 x T 256: give TEXT, or smaller B and T
VAL_EVERY=$((STEPS / 4))
[ "$VAL_EVERY" -ge 1 ] || { echo "gpu_precision: STEPS=$STEPS: give at least 4" >&2; exit 2; }
mkdir -p "$OUT" || { echo "gpu_precision: cannot create $OUT" >&2; exit 2; }

./prepare --out "$OUT/data" --vocab "$VOCAB" "$TEXT" > "$OUT/prepare.log" 2>&1 ||
    { echo "gpu_precision: prepare failed (see $OUT/prepare.log)" >&2; exit 1; }
COMMON=(--data "$OUT/data/*_train_*.bin" --val-data "$OUT/data/*_val_*.bin" --tokenizer "$OUT/data/tokenizer.bin"
        --device "$DEVICE" $SHAPE --batch "$B" --seq "$T" --lr "$LR"
        --steps "$STEPS" --val-every "$VAL_EVERY" --sample-every 0 --seed 1337)
declare -A KIND=(
    [dense]="--ffn dense"
    [mot]="--ffn mot --experts 256 --group 32 --expert-size $(( $(sed -E 's/.*--d-ff ([0-9]+).*/\1/' <<< "$SHAPE") / 8 )) --temperature 0.1"
    [token-choice]="--ffn token-choice --experts 32 --topk 1"
)

# field NAME LINE: the value of "NAME": in one JSON line of the log
field() { sed -nE "s/.*\"$1\": ([^,}]*).*/\1/p" <<< "$2"; }

failed=0
for kind in dense mot token-choice; do
    for p in fp32 bf16; do
        log="$OUT/${kind}_$p.jsonl"
        rm -f "$log"
        echo "gpu_precision: $kind $p"
        # shellcheck disable=SC2086
        if ! ./train_mot "${COMMON[@]}" ${KIND[$kind]} --precision "$p" --log "$log" > "$OUT/${kind}_$p.out" 2>&1; then
            echo "gpu_precision: $kind $p failed:" >&2
            tail -n 5 "$OUT/${kind}_$p.out" >&2
            failed=1
        fi
    done
done

# the table, from the logs
echo
echo "bf16 against fp32 on $DEVICE, $SHAPE, $STEPS steps of $B x $T tokens, lr $LR, text $TEXT (vocab $VOCAB)"
printf '| kind | val loss, step: fp32 / bf16 | bf16 - fp32 at the end | median ms fp32 / bf16 | tokens/s fp32 / bf16 | MFU fp32 / bf16 |\n|---|---|---|---|---|---|\n'
for kind in dense mot token-choice; do
    last_f="" last_b="" ms="" tps="" mfu=""
    declare -A at=()  # step -> "fp32 / bf16"
    for p in fp32 bf16; do
        log="$OUT/${kind}_$p.jsonl"
        [ -f "$log" ] || continue
        mapfile -t rows < <(grep '"val_loss"' "$log")
        for row in "${rows[@]}"; do
            step=$(field step "$row") v=$(printf '%.4f' "$(field val_loss "$row")")
            if [ "$p" = fp32 ]; then last_f=$v; at[$step]=$v; else last_b=$v; at[$step]="${at[$step]:-?} / $v"; fi
        done
        steps=$(grep '"ms"' "$log" | grep -v '"params"')
        med=$(field ms "$steps" | tail -n +3 | sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]}')
        ms+="${med:-?} / "
        tps+="$(field tok_per_s "$steps" | tail -n +3 | sort -g | awk '{a[NR]=$1} END {if (NR) printf "%.0f", a[int((NR+1)/2)]}') / "
        mfu+="$(field mfu "$steps" | tail -n +3 | sort -g | awk '{a[NR]=$1} END {if (NR) printf "%.3f", a[int((NR+1)/2)]}') / "
    done
    vals=""
    for step in $(printf '%s\n' "${!at[@]}" | sort -n); do vals+="$step: ${at[$step]}; "; done
    unset at
    diff=$(awk -v a="$last_b" -v b="$last_f" 'BEGIN { if (a != "" && b != "") printf "%+.4f", a - b; else print "?" }')
    echo "| $kind | ${vals%; } | $diff | ${ms% / } | ${tps% / } | ${mfu% / } |"
done
exit $failed
