D=${D:-runs/reproduce/data}  # the study's prepared novels (make reproduce)
TM=${TM:-./train_mot}
DATA="--data $D/corpus_train_*.bin --val-data $D/corpus_val_*.bin --tokenizer $D/tokenizer.bin --device cpu --seq 128 --batch 32 --seed 1337 --sample-every 0"
XS="--layers 4 --d-model 64 --heads 4 --d-ff 256"
S="--layers 4 --d-model 128 --heads 4 --d-ff 512"
