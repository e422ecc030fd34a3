#!/usr/bin/env bash
# make reproduce [QUICK=1] [TEXT=path] [OUT=dir]: the MoT-against-dense study
# (README, "Does MoT beat dense here?") from raw text to results.json,
# results.md and loss.png in OUT (default runs/reproduce, or
# runs/reproduce-quick with QUICK=1).
#
# The protocol, after the paper (Antoniak et al., NeurIPS 2024) and its
# authors' configurations, at every model size in SIZES:
#   1. learning rate, per family (dense; MoT E 32 and E 256 at tau 0.1; token
#      choice top-1 and top-2), at the main runs' length: the grid LR_GRID,
#      widened by 2x at an edge until the best rate lies inside it (at most
#      LR_WIDEN times); each family then trains at its best rate;
#   2. the runs, all on the same tokens in the same order with the same
#      schedule: dense; MoT E = G = 32, f = d_ff ("/32E") and E 256, G 32,
#      f = d_ff/8 ("/32E/8"), each in every layer and in the second half of
#      the blocks only, at every temperature in TAUS; token choice with 32
#      experts, top-1 of width d_ff and top-2 of width d_ff/2 (the expert
#      FLOPs of dense and of MoT /32E), load-balancing loss on (a run the
#      grid already made is taken from it);
#   3. transition tuning: the MoT run with the lowest final validation loss
#      turned into token choice (same tensors) and trained 10% more steps,
#      with each router (threshold, the default; threshold with gate 1;
#      softmax top-1; and the threshold router learning from the MoT model's
#      probabilities too, --distill), at the rate the MoT run ended at (a
#      tenth of its peak); each routed model then decodes every validation
#      sequence alone (NAME.decode); then dense, the best MoT, both token
#      choices and the threshold transition again at every other seed of
#      SEEDS;
#   4. the long runs, at LONG_SIZE for LONG_STEPS steps: dense and the best MoT
#      setting each at three rates (LONG_LRS_DENSE, LONG_LRS_MOT: the short
#      runs' best, then half and twice it: a rate right for a short run may
#      not be right for a long one), widened as in 1 until the best rate lies
#      inside; token choice top-1 at LONG_LR_TC; then dense and the MoT at
#      their best long rates again at every other seed of LONG_SEEDS;
#   5. each setting's step time measured alone (TIME_STEPS steps with every
#      core), the table's wall-clock.
# Every run validates every steps/20 steps on the same held-out tokens
# (VAL_BATCHES batches of the corpus's held-out files) and checkpoints every
# steps/5.
#
# Settings (environment or make variables): SIZES (XS, S, M; QUICK: S, M),
# STEPS_XS, STEPS_S, STEPS_M, WARMUP, VAL_BATCHES, VOCAB, LR_GRID, LR_WIDEN,
# TAUS, SEED, SEEDS, DEVICE (auto, cpu, cuda), PHASES (any of "short long time": the
# protocol's steps 1-3, 4 and 5), LONG_SIZE, LONG_STEPS, LONG_LRS_DENSE, LONG_LRS_MOT,
# LONG_LR_TC, LONG_SEEDS, STORE, TIME_STEPS, TIME_STORE. Part of the study, e.g. the long runs alone:
#   make reproduce PHASES=long
#
# Resumable: a finished run leaves NAME.done and is not run again; a stopped
# run continues from its newest checkpoint. Ctrl-C stops it (the run saves a
# checkpoint first); the same command continues. The tokens are prepared
# once per OUT; OUT's runs on other tokens make a new corpus an error.
# The full study keeps every finished run's log and description in STORE
# (docs/study/runs, committed): a run found there with the same description
# is not trained again, so the study survives the loss of OUT.
set -euo pipefail
# TEXT, OUT and MOT_DATA as the caller wrote them, from the caller's folder
TEXT_GIVEN=${TEXT:-}  # for messages: the path as the caller wrote it
[[ -n ${TEXT:-} && $TEXT != /* ]] && TEXT="$PWD/$TEXT"
[[ -n ${MOT_DATA:-} && $MOT_DATA != /* ]] && MOT_DATA="$PWD/$MOT_DATA"
[[ -n ${OUT:-} && $OUT != /* ]] && OUT="$PWD/$OUT"
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
[[ $QUICK == 0 || $QUICK == 1 ]] || { echo "reproduce: QUICK=$QUICK: give 0 or 1" >&2; exit 2; }
DEVICE=${DEVICE:-auto}
if [[ $QUICK == 1 ]]; then
    OUT=${OUT:-runs/reproduce-quick}
    # minutes on two cores: the whole protocol, at toy sizes and lengths
    SIZES=${SIZES:-"S M"}
    SHAPE_S="--layers 2 --d-model 32 --heads 2 --d-ff 128"
    SHAPE_M="--layers 2 --d-model 64 --heads 2 --d-ff 256"
    STEPS_S=${STEPS_S:-80} STEPS_M=${STEPS_M:-80}
    SEQ=32 BATCH=32 VOCAB=${VOCAB:-1024} VAL_BATCHES=4 WARMUP=8
    LR_WIDEN=${LR_WIDEN:-1} SEEDS=${SEEDS:-"1337 1338"}
else
    OUT=${OUT:-runs/reproduce}
    SIZES=${SIZES:-"XS S"}
    # on 2 cores a step of XS takes about 0.3 s, of S 0.5 s, of M 1.2 s: a
    # 320-step run of S about 3 minutes, a 2500-step one about 25
    SHAPE_XS="--layers 4 --d-model 64 --heads 4 --d-ff 256"
    SHAPE_S="--layers 4 --d-model 128 --heads 4 --d-ff 512"
    SHAPE_M="--layers 4 --d-model 256 --heads 4 --d-ff 1024"
    STEPS_XS=${STEPS_XS:-320} STEPS_S=${STEPS_S:-320} STEPS_M=${STEPS_M:-320}
    SEQ=128 BATCH=32 VOCAB=${VOCAB:-4096} VAL_BATCHES=${VAL_BATCHES:-4} WARMUP=${WARMUP:-16}
fi
LR_GRID=${LR_GRID:-"0.0015 0.003 0.006"}
LR_WIDEN=${LR_WIDEN:-4}
SEEDS=${SEEDS:-"1337 1338 1339"}
TAUS=${TAUS:-"1 0.3 0.1"}
SEED=${SEED:-1337}
PHASES=${PHASES:-"short long time"}
TIME_STEPS=${TIME_STEPS:-12}
LONG_SIZE=${LONG_SIZE:-S}
if [[ $QUICK == 1 ]]; then LONG_STEPS=${LONG_STEPS:-160}; else LONG_STEPS=${LONG_STEPS:-2500}; fi
LONG_LRS_DENSE=${LONG_LRS_DENSE:-"0.0015 0.00075 0.003"}
LONG_LRS_MOT=${LONG_LRS_MOT:-"0.006 0.003 0.012"}
LONG_LR_TC=${LONG_LR_TC:-0.006}
LONG_SEEDS=${LONG_SEEDS:-"$SEED 1338"}
if [[ $QUICK == 1 ]]; then STORE=${STORE:-}; else STORE=${STORE:-docs/study/runs}; fi
if [[ $QUICK == 1 ]]; then TIME_STORE=${TIME_STORE:-}; else TIME_STORE=${TIME_STORE:-docs/study/times}; fi
# every setting checked before any work (the slow prepare included)
bad() { echo "reproduce: $*" >&2; exit 2; }
need_int() {  # NAME VALUE MIN
    [[ $2 =~ ^[0-9]+$ ]] && (( 10#$2 >= $3 )) || bad "$1=$2: give a whole number of at least $3"
}
need_pos() {  # NAME VALUE
    [[ $2 =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$ ]] && awk "BEGIN{exit !($2 > 0)}" ||
        bad "$1=$2: give positive numbers"
}
known_size() { local v=SHAPE_$1; [[ $1 =~ ^[A-Z]+$ && -n ${!v:-} ]]; }
[[ -n $SIZES ]] || bad "SIZES is empty"
for size in $SIZES; do
    known_size "$size" || bad "SIZES: unknown size '$size' (QUICK=$QUICK has: $(compgen -v SHAPE_ | sed 's/SHAPE_//' | tr '\n' ' '))"
    steps_var=STEPS_$size
    need_int "$steps_var" "${!steps_var:-}" 10
done
known_size "$LONG_SIZE" || bad "LONG_SIZE: unknown size '$LONG_SIZE'"
need_int WARMUP "$WARMUP" 0
need_int VAL_BATCHES "$VAL_BATCHES" 1
need_int LONG_STEPS "$LONG_STEPS" 10
need_int LR_WIDEN "$LR_WIDEN" 0
need_int VOCAB "$VOCAB" 257
need_int SEED "$SEED" 0
for x in $SEEDS; do need_int SEEDS "$x" 0; done
for x in $LONG_SEEDS; do need_int LONG_SEEDS "$x" 0; done
for x in $LR_GRID; do need_pos LR_GRID "$x"; done
for x in $TAUS; do need_pos TAUS "$x"; done
for x in $LONG_LRS_DENSE; do need_pos LONG_LRS_DENSE "$x"; done
for x in $LONG_LRS_MOT; do need_pos LONG_LRS_MOT "$x"; done
need_pos LONG_LR_TC "$LONG_LR_TC"
[[ -n $LR_GRID && -n $TAUS && -n $SEEDS && -n $LONG_LRS_DENSE && -n $LONG_LRS_MOT ]] ||
    bad "LR_GRID, TAUS, SEEDS, LONG_LRS_DENSE and LONG_LRS_MOT need at least one value each"
[[ -n $PHASES ]] || bad "PHASES is empty"
for x in $PHASES; do [[ $x == short || $x == long || $x == time ]] || bad "PHASES: unknown phase '$x' (short, long, time)"; done
need_int TIME_STEPS "$TIME_STEPS" 4
[[ $DEVICE == auto || $DEVICE == cpu || $DEVICE == cuda ]] || bad "DEVICE=$DEVICE: give auto, cpu or cuda"

# the programs (a CMake build puts them elsewhere)
TRAIN_MOT=${MOT_TRAIN_MOT:-./train_mot} PREPARE=${MOT_PREPARE:-./prepare} STUDY=${MOT_STUDY:-build/study}

# the corpus: the novels when present, else tinyshakespeare, from the data
# folders of common/data_path.h (MOT_DATA when set, else data/ then ../shared/data)
if [[ -z ${TEXT:-} ]]; then
    if [[ -n ${MOT_DATA:-} ]]; then DATA_DIRS=("${MOT_DATA%/}"); else DATA_DIRS=(data ../shared/data); fi
    for want in novels tinyshakespeare.txt; do
        for dir in "${DATA_DIRS[@]}"; do
            if [[ -z ${TEXT:-} && -e $dir/$want ]]; then TEXT=$dir/$want; fi
        done
    done
    TEXT=${TEXT:-${DATA_DIRS[0]}/tinyshakespeare.txt}
fi
if [[ -d $TEXT ]]; then
    shopt -s nullglob
    FILES=("$TEXT"/*.txt)
    shopt -u nullglob
    [[ ${#FILES[@]} -gt 0 ]] || { echo "reproduce: TEXT=$TEXT: a folder without .txt files" >&2; exit 2; }
elif [[ -f $TEXT ]]; then FILES=("$TEXT")
else echo "reproduce: TEXT=${TEXT_GIVEN:-$TEXT}: no such file or folder" >&2; exit 2; fi

mkdir -p "$OUT/runs" "$OUT/ckpt"
echo "reproduce: ${#FILES[@]} text file(s) from $TEXT into $OUT (QUICK=$QUICK, sizes $SIZES, device $DEVICE)"
# the tokens, once: a rerun reuses them when the text and vocabulary are the same
stamp="vocab $VOCAB text $TEXT files ${#FILES[@]} md5 $(cat "${FILES[@]}" | md5sum | cut -d' ' -f1)"
stamp_old=$(cat "$OUT/data/prepared" 2> /dev/null || true)
if [[ $stamp_old != "$stamp" ]]; then
    if compgen -G "$OUT/runs/*.jsonl" > /dev/null; then
        echo "reproduce: $OUT/runs holds runs on other tokens (${stamp_old:-unknown}); give another OUT or remove $OUT" >&2
        exit 2
    fi
    rm -rf "$OUT/data"
    "$PREPARE" --vocab "$VOCAB" --val-fraction 0.05 --out "$OUT/data" --name corpus "${FILES[@]}"
    echo "$stamp" > "$OUT/data/prepared"
fi
DATA=(--data "$OUT/data/corpus_train_*.bin" --val-data "$OUT/data/corpus_val_*.bin" --tokenizer "$OUT/data/tokenizer.bin")

# run NAME SIZE FAMILY PHASE STEPS OPTIONS...: one training run, skipped when
# done, resumed when stopped. NAME.meta records what the table needs beyond
# the log (the log's first row holds the shape and the schedule).
run() {
    local name=$1 size=$2 family=$3 phase=$4 steps=$5
    shift 5
    local dir="$OUT/ckpt/$name" log="$OUT/runs/$name.jsonl"
    local meta
    meta=$(printf 'size %s\nfamily %s\nphase %s\nsteps %s\ncommand %s\nseed %s\nseq %s\nbatch %s\nwarmup %s\nval_batches %s\n' \
        "$size" "$family" "$phase" "$steps" "$*" "$SEED" "$SEQ" "$BATCH" "$WARMUP" "$VAL_BATCHES"
        if [[ -n ${FROM:-} ]]; then echo "from $FROM"; fi)
    # a run of this name, finished or stopped, with other settings is never taken for this one
    if [[ -f $OUT/runs/$name.meta && ( -f $OUT/runs/$name.done || -d $dir ) ]] &&
        [[ $(cat "$OUT/runs/$name.meta") != "$meta" ]]; then
        bad "$OUT/runs/$name ran with other settings ($OUT/runs/$name.meta); give another OUT or remove that run"
    fi
    [[ -f $OUT/runs/$name.done ]] && return 0
    # a run the store holds with the same description: taken from there
    if [[ -n $STORE && -z ${RETRAIN:-} && -f $STORE/$name.jsonl && -f $STORE/$name.meta ]] &&
        [[ $(cat "$STORE/$name.meta") == "$meta" ]]; then
        cp "$STORE/$name.jsonl" "$STORE/$name.meta" "$OUT/runs/"
        touch "$OUT/runs/$name.done"
        return 0
    fi
    echo "$meta" > "$OUT/runs/$name.meta"
    local resume=() args=()
    if compgen -G "$dir/step_*.state" > /dev/null; then
        # the checkpoint holds the model: a transition resumes without --load and --transition
        resume=(--resume)
        while [[ $# -gt 0 ]]; do
            case $1 in --load|--transition) shift 2 ;; *) args+=("$1"); shift ;; esac
        done
        set -- "${args[@]}"
    else
        rm -f "$log" "$OUT/runs/$name.out"  # a run stopped before its first checkpoint starts over
    fi
    # validation every 5% of the steps; a checkpoint every 20% (the MoT
    # models' optimizer state is large)
    local every=$(( steps / 20 > 0 ? steps / 20 : 1 )) ckpt_every=$(( steps / 5 > 0 ? steps / 5 : 1 ))
    echo "reproduce: $name (${resume[*]:-new}): $*"
    local rc=0
    "$TRAIN_MOT" "${DATA[@]}" --device "$DEVICE" --seq "$SEQ" --batch "$BATCH" --steps "$steps" --seed "$SEED" \
        --warmup "$WARMUP" --val-every "$every" --val-batches "$VAL_BATCHES" --sample-every 0 \
        --checkpoint-dir "$dir" --checkpoint-every "$ckpt_every" --keep-checkpoints 1 \
        --log "$log" --save "$OUT/runs/$name.ckpt" "${resume[@]}" "$@" >> "$OUT/runs/$name.out" 2>&1 || rc=$?
    if [[ $rc != 0 ]]; then
        echo "reproduce: $name stopped (exit status $rc); its output: $OUT/runs/$name.out" >&2
        tail -n 5 "$OUT/runs/$name.out" >&2
        exit "$rc"
    fi
    rm -rf "$dir"
    touch "$OUT/runs/$name.done"
    if [[ -n $STORE ]]; then
        mkdir -p "$STORE"
        cp "$log" "$OUT/runs/$name.meta" "$STORE/"
    fi
}

# needs_checkpoint NAME: NAME.ckpt for a transition; a run taken from the
# store has none, so it is trained again (the same log: training is
# deterministic) without touching the stored one
needs_checkpoint() {
    local name=$1
    [[ -f $OUT/runs/$name.ckpt ]] && return 0
    local size family phase command
    size=$(sed -n 's/^size //p' "$OUT/runs/$name.meta")
    family=$(sed -n 's/^family //p' "$OUT/runs/$name.meta")
    phase=$(sed -n 's/^phase //p' "$OUT/runs/$name.meta")
    command=$(sed -n 's/^command //p' "$OUT/runs/$name.meta")
    local steps
    steps=$(sed -n 's/^steps //p' "$OUT/runs/$name.meta")
    rm -f "$OUT/runs/$name.done"
    # shellcheck disable=SC2086
    RETRAIN=1 STORE="" run "$name" "$size" "$family" "$phase" "$steps" $command
}

# promote NAME FROM: the main run NAME is the grid run FROM, the same command
# at the same length: its log (and model) under the main run's name
promote() {
    local name=$1 from=$2
    [[ -f $OUT/runs/$name.done ]] && return 0
    cp "$OUT/runs/$from.jsonl" "$OUT/runs/$name.jsonl"
    if [[ -f $OUT/runs/$from.ckpt ]]; then cp "$OUT/runs/$from.ckpt" "$OUT/runs/$name.ckpt"; fi
    sed 's/^phase grid$/phase main/' "$OUT/runs/$from.meta" > "$OUT/runs/$name.meta"
    touch "$OUT/runs/$name.done"
    if [[ -n $STORE ]]; then cp "$OUT/runs/$name.jsonl" "$OUT/runs/$name.meta" "$STORE/"; fi
}

# decode_loss NAME: NAME.decode, the validation loss of NAME's model decoding
# every sequence alone with the KV cache (on the CPU); kept in the store
decode_loss() {
    local name=$1
    [[ -f $OUT/runs/$name.decode ]] && return 0
    # the store's, when it holds this very run
    if [[ -n $STORE && -f $STORE/$name.decode ]] && cmp -s "$STORE/$name.jsonl" "$OUT/runs/$name.jsonl"; then
        cp "$STORE/$name.decode" "$OUT/runs/"
        return 0
    fi
    [[ -f $OUT/runs/$name.ckpt ]] || return 0  # taken from the store without its model
    "$TRAIN_MOT" eval --load "$OUT/runs/$name.ckpt" --data "$OUT/data/corpus_val_*.bin" --batch "$BATCH" --seq "$SEQ" \
        --batches "$VAL_BATCHES" --decode > "$OUT/runs/$name.decode.out"
    sed -n 's/.*: loss \([0-9.]*\) over.*/\1/p' "$OUT/runs/$name.decode.out" > "$OUT/runs/$name.decode"
    [[ -n $STORE ]] && cp "$OUT/runs/$name.decode" "$STORE/"
    return 0
}

# options of each family at a size with dense width d_ff (flop-matched: MoT's
# f = d_ff * G / E is the default expert width)
family_options() {
    local family=$1 dff=$2
    case $family in
        dense) echo "--ffn dense" ;;
        mot32) echo "--ffn mot --experts 32 --group 32" ;;
        mot256) echo "--ffn mot --experts 256 --group 32" ;;
        tc32) echo "--ffn token-choice --experts 32 --expert-size $dff --topk 1" ;;
        tc32k2) echo "--ffn token-choice --experts 32 --expert-size $(( dff / 2 )) --topk 2" ;;
    esac
}

# widened_best PREFIX TRAIN RATE...: TRAIN RATE trains the run named
# PREFIX<RATE> at each rate; then the rates are widened by a factor 2 at
# whichever edge holds the lowest final validation loss until it lies
# inside (at most LR_WIDEN times). Sets WIDENED_BEST and WIDENED_RATES (in
# the order they ran).
widened_best() {
    local prefix=$1 train=$2 lr best widen
    shift 2
    WIDENED_RATES=("$@")
    local -A loss_at=()
    for (( widen = 0; ; widen++ )); do
        for lr in "${WIDENED_RATES[@]}"; do
            [[ -n ${loss_at[$lr]:-} ]] && continue
            "$train" "$lr"
            loss_at[$lr]=$("$STUDY" final "$OUT/runs/$prefix$lr.jsonl")
        done
        local sorted
        mapfile -t sorted < <(printf '%s\n' "${WIDENED_RATES[@]}" | sort -g)
        best=${sorted[0]}
        for lr in "${sorted[@]}"; do
            awk "BEGIN{exit !(${loss_at[$lr]} < ${loss_at[$best]})}" && best=$lr
        done
        (( widen < LR_WIDEN )) || break
        if [[ $best == "${sorted[0]}" ]]; then WIDENED_RATES+=("$(awk "BEGIN{printf \"%g\", $best / 2}")")
        elif [[ $best == "${sorted[-1]}" ]]; then WIDENED_RATES+=("$(awk "BEGIN{printf \"%g\", $best * 2}")")
        else break; fi
    done
    WIDENED_BEST=$best
}

for size in $SIZES; do
    [[ " $PHASES " == *" short "* ]] || break
    shape_var=SHAPE_$size steps_var=STEPS_$size
    shape=${!shape_var} steps=${!steps_var}
    dff=$(sed -E 's/.*--d-ff ([0-9]+).*/\1/' <<< "$shape")
    short=$(( steps / 4 ))

    # 1. the learning rate of each family, at the main runs' length: the grid
    # LR_GRID, widened by a factor 2 at whichever edge holds the best rate
    # until it lies inside (at most LR_WIDEN times); MoT at tau 0.1
    declare -A LR=()
    for family in dense mot32 mot256 tc32 tc32k2; do
        tau=""; [[ $family == mot* ]] && tau="--temperature 0.1"
        train_at() { run "$size-lr-$family-$1" "$size" "$family" grid "$steps" $shape $(family_options $family $dff) $tau --lr "$1"; }
        widened_best "$size-lr-$family-" train_at $LR_GRID
        best=$WIDENED_BEST rates=("${WIDENED_RATES[@]}")
        LR[$family]=$best
        echo "reproduce: $size $family: lr $best (rates tried: ${rates[*]})"
    done

    # 2. the runs; those a grid run already is (the same command) are taken from it
    promote "$size-dense" "$size-lr-dense-${LR[dense]}"
    for family in mot32 mot256; do
        for where in all second-half; do
            for tau in $TAUS; do
                if [[ $where == all && $tau == 0.1 ]]; then
                    promote "$size-$family-$where-t$tau" "$size-lr-$family-${LR[$family]}"
                    continue
                fi
                run "$size-$family-$where-t$tau" "$size" "$family" main "$steps" $shape $(family_options $family $dff) \
                    --mot-layers "$where" --temperature "$tau" --lr "${LR[$family]}"
            done
        done
    done
    promote "$size-tc32" "$size-lr-tc32-${LR[tc32]}"
    promote "$size-tc32k2" "$size-lr-tc32k2-${LR[tc32k2]}"

    # 3. transition tuning of the best MoT run, 10% more steps: the threshold router (the
    # default), the same with gate 1, and top-1 of a softmax over the experts; then each
    # routed model decoding every validation sequence alone. The routed model goes on from
    # where its MoT run ended, at the rate that run ended at (the cosine's floor, a tenth of
    # its peak): warmed up again to a peak rate with fresh moments, the tuning first undoes
    # what the switch kept (README, "Transition tuning, measured").
    best=$("$STUDY" best "$OUT/runs" "$size-mot")
    best_family=$(sed -n 's/^family //p' "$OUT/runs/$best.meta")
    tlr=$(awk -v x="${LR[$best_family]}" 'BEGIN { printf "%g", x / 10 }')
    transition() {  # NAME FROM ROUTER [OPTIONS...]
        local name=$1 from=$2 router=$3 extra=("${@:4}")
        needs_checkpoint "$from"
        [[ $router == softmax ]] && extra+=(--topk 1)
        FROM=$from run "$name" "$size" transition main $(( steps / 10 )) --load "$OUT/runs/$from.ckpt" \
            --transition token-choice --router "$router" "${extra[@]}" --lr "$tlr" --warmup $(( WARMUP / 4 ))
        decode_loss "$name"
    }
    transition "$size-transition" "$best" threshold
    transition "$size-transition-threshold-one" "$best" threshold-one
    transition "$size-transition-softmax" "$best" softmax
    transition "$size-transition-distill" "$best" threshold --distill "$OUT/runs/$best.ckpt"

    # the headline runs again at the other seeds: dense, the best MoT, token choice, the transition
    for seed in $SEEDS; do
        [[ $seed == "$SEED" ]] && continue
        for base in "$size-dense" "$best" "$size-tc32" "$size-tc32k2"; do
            read -ra cmd <<< "$(sed -n 's/^command //p' "$OUT/runs/$base.meta")"
            SEED=$seed run "$base-s$seed" "$size" "$(sed -n 's/^family //p' "$OUT/runs/$base.meta")" main "$steps" "${cmd[@]}"
        done
        SEED=$seed transition "$size-transition-s$seed" "$best-s$seed" threshold
    done
done

# 4. the long runs: dense and the best MoT setting at three rates or more, token choice
if [[ " $PHASES " == *" long "* ]]; then
    size=$LONG_SIZE shape_var=SHAPE_$LONG_SIZE
    shape=${!shape_var}
    dff=$(sed -E 's/.*--d-ff ([0-9]+).*/\1/' <<< "$shape")
    steps_var=STEPS_$LONG_SIZE
    long_warmup=$(( WARMUP * LONG_STEPS / ${!steps_var} ))  # the same share of the steps as the short runs
    # RATE [SUFFIX]: the run at that rate, named with SUFFIX (another seed's -sSEED)
    long_dense() {
        WARMUP=$long_warmup run "$size-long-dense-lr$1${2:-}" "$size" dense long "$LONG_STEPS" $shape --ffn dense --lr "$1"
    }
    long_mot() {
        WARMUP=$long_warmup run "$size-long-mot256-lr$1${2:-}" "$size" mot256 long "$LONG_STEPS" $shape \
            $(family_options mot256 $dff) --temperature 0.1 --lr "$1"
    }
    # the first rate of each list first (the comparison), then the others
    read -ra dense_lrs <<< "$LONG_LRS_DENSE"
    read -ra mot_lrs <<< "$LONG_LRS_MOT"
    long_dense "${dense_lrs[0]}"
    long_mot "${mot_lrs[0]}"
    WARMUP=$long_warmup run "$size-long-tc32-lr$LONG_LR_TC" "$size" tc32 long "$LONG_STEPS" $shape \
        $(family_options tc32 $dff) --lr "$LONG_LR_TC"
    # then the others, widened past an edge that holds the best as the grid is
    widened_best "$size-long-dense-lr" long_dense "${dense_lrs[@]}"
    echo "reproduce: $size long dense: best lr $WIDENED_BEST (rates tried: ${WIDENED_RATES[*]})"
    dense_best=$WIDENED_BEST
    widened_best "$size-long-mot256-lr" long_mot "${mot_lrs[@]}"
    echo "reproduce: $size long mot256: best lr $WIDENED_BEST (rates tried: ${WIDENED_RATES[*]})"
    mot_best=$WIDENED_BEST
    # the two at their best long rates again at the other seeds: is the end of the race more than one seed's?
    for seed in $LONG_SEEDS; do
        [[ $seed == "$SEED" ]] && continue
        SEED=$seed long_dense "$dense_best" "-s$seed"
        SEED=$seed long_mot "$mot_best" "-s$seed"
    done
fi

# 5. step times measured alone: the runs' own clocks ran beside whatever else
# the machine did, so the table's wall-clock reads these instead. Each
# setting's model (main and long runs, at their first seed) trains TIME_STEPS
# steps with every core and no validation; the report takes the median step
# after the first two. Run when nothing else is running: the study's runs are
# done by then. Kept in TIME_STORE with the machine they ran on.
# cpu_busy: the share (percent) of the machine's CPU time not idle over the
# next second (/proc/stat), before a timing starts: what else is running
cpu_busy() {
    local a b i total=0 idle
    read -ra a < /proc/stat
    sleep 1
    read -ra b < /proc/stat
    for (( i = 1; i <= 8; i++ )); do total=$(( total + b[i] - a[i] )); done
    idle=$(( b[4] + b[5] - a[4] - a[5] ))
    echo $(( total > 0 ? 100 * (total - idle) / total : 0 ))
}
if [[ " $PHASES " == *" time "* ]]; then
    mkdir -p "$OUT/times"
    machine="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(nproc) threads"
    for meta in "$OUT"/runs/*.meta; do
        name=$(basename "$meta" .meta)
        phase=$(sed -n 's/^phase //p' "$meta")
        [[ ( $phase == main || $phase == long ) && -f $OUT/runs/$name.done && ! $name =~ -s[0-9]+$ ]] || continue
        command=$(sed -n 's/^command //p' "$meta")
        tmeta=$(printf 'command %s\nseq %s\nbatch %s\nsteps %s\nmachine %s\n' "$command" "$SEQ" "$BATCH" "$TIME_STEPS" "$machine")
        [[ -f $OUT/times/$name.jsonl && $(cat "$OUT/times/$name.meta" 2> /dev/null) == "$tmeta" ]] && continue
        if [[ -n $TIME_STORE && -f $TIME_STORE/$name.jsonl && $(cat "$TIME_STORE/$name.meta" 2> /dev/null) == "$tmeta" ]]; then
            cp "$TIME_STORE/$name.jsonl" "$TIME_STORE/$name.meta" "$OUT/times/"
            continue
        fi
        read -ra args <<< "$command"
        load=$(sed -nE 's/.*--load ([^ ]+).*/\1/p' <<< "$command")
        if [[ -n $load && ! -f $load ]]; then
            echo "reproduce: $name: not timed (its model $load is not here; the run was taken from the store)"
            continue
        fi
        busy=$(cpu_busy)
        (( busy > 20 )) && echo "reproduce: the machine is busy (${busy}% of its CPU time in use in the last second):" \
            "the step times of $name will be too slow"
        echo "reproduce: timing $name alone, $TIME_STEPS steps"
        rm -f "$OUT/times/$name.jsonl.tmp"
        "$TRAIN_MOT" "${DATA[@]}" --device "$DEVICE" --seq "$SEQ" --batch "$BATCH" --steps "$TIME_STEPS" --seed "$SEED" \
            --warmup 1 --val-every 0 --sample-every 0 --threads "$(nproc)" --log "$OUT/times/$name.jsonl.tmp" \
            "${args[@]}" > "$OUT/times/$name.out" 2>&1 ||
            { echo "reproduce: timing $name failed; its output: $OUT/times/$name.out" >&2; tail -n 5 "$OUT/times/$name.out" >&2; exit 1; }
        mv "$OUT/times/$name.jsonl.tmp" "$OUT/times/$name.jsonl"
        echo "$tmeta" > "$OUT/times/$name.meta"
        if [[ -n $TIME_STORE ]]; then mkdir -p "$TIME_STORE"; cp "$OUT/times/$name.jsonl" "$OUT/times/$name.meta" "$TIME_STORE/"; fi
    done
fi

"$STUDY" report "$OUT"
