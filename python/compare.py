"""Compares the PyTorch twin (mot.py) with the engine on one batch.

    python3 python/compare.py MODEL.safetensors DUMP.safetensors [--tol 1e-5]

DUMP is what `train_mot eval --load MODEL --dump DUMP` writes for its first
batch: tokens (B,T) and targets (B,T) int32, the engine's logits (B,T,V) and
per-token losses (B,T) float32, its mean loss in the metadata ("loss"). The
twin runs the same tokens from the same file in float64, so what it
measures is the engine's float32 arithmetic (and nothing else when both
make the same routing decisions).

The measure, for logits and for per-token losses alike, is relative to the
tensor's scale:
    max_i |twin_i - engine_i| / max_i |engine_i|   over the whole batch
(one number per tensor; an element near zero in a tensor of large values is
held to the tensor's scale, not its own: tests/close.h's scaled_tol). The mean loss: |twin - engine| /
|engine|. Exits 1 when any of them exceeds --tol, 2 on bad input.
--mot-discrete: MoT mixes with one-hot weights, as eval --mot-discrete; the
dump's metadata mot_discrete ("1" or "0") says how the engine mixed and
decides when the flag is not given (the flag contradicting it is an error).
--decode-loss also checks the twin in decoding mode (what generate() runs:
token choice drops nothing) against `eval --decode` on the same batch.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mot  # noqa: E402
from safetensors_io import read  # noqa: E402


def relative(a, b):
    """max |a - b| / max |b|"""
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / scale if scale > 0 else (a - b).abs().max().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="an exported model (train_mot export)")
    ap.add_argument("dump", help="the engine's first eval batch (train_mot eval --dump)")
    ap.add_argument("--tol", type=float, default=1e-5, help="largest relative difference accepted (default 1e-5)")
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="the twin's arithmetic")
    ap.add_argument("--mot-discrete", action="store_true", help="MoT mixes with one-hot weights (eval --mot-discrete)")
    ap.add_argument("--decode-loss", type=float, help="also check the twin's loss in decoding mode (token choice "
                    "drops nothing) against this one, what `eval --decode --batches 1` printed for the same batch")
    args = ap.parse_args()
    try:
        model = mot.load(args.model, getattr(torch, args.dtype))
        dump, meta = read(args.dump)
        for name in ("tokens", "targets", "logits", "losses"):
            if name not in dump:
                raise ValueError(f"{args.dump}: no tensor {name!r}")
        tokens, targets = dump["tokens"].long(), dump["targets"].long()
        engine_logits = dump["logits"][..., :model.cfg.V].double()
        engine_losses = dump["losses"].double()
        if tuple(engine_logits.shape) != tuple(tokens.shape) + (model.cfg.V,):
            raise ValueError(f"{args.dump}: logits of shape {list(dump['logits'].shape)} for tokens "
                             f"{list(tokens.shape)} and a vocabulary of {model.cfg.V}")
        # eval --dump records whether MoT mixed discretely; --mot-discrete may
        # only agree with it (a dump without the field: the flag decides)
        recorded = meta.get("mot_discrete")
        if recorded not in (None, "0", "1"):
            raise ValueError(f"{args.dump}: metadata mot_discrete {recorded!r} (must be \"0\" or \"1\")")
        if recorded == "0" and args.mot_discrete:
            raise ValueError(f"--mot-discrete: {args.dump} was written by eval without --mot-discrete "
                             "(metadata mot_discrete \"0\")")
        discrete = args.mot_discrete or recorded == "1"
    except (OSError, ValueError, KeyError) as e:
        print(f"compare.py: {e}", file=sys.stderr)
        return 2

    with torch.no_grad():
        logits, loss = model(tokens, targets, discrete=discrete)
        logits = logits.double()
        losses = -logits.log_softmax(dim=-1).gather(2, targets[..., None]).squeeze(2)
    engine_loss = float(meta["loss"]) if "loss" in meta else engine_losses.mean().item()
    B, T = tokens.shape
    kinds = ",".join(model.cfg.kinds)
    rl, rt = relative(logits, engine_logits), relative(losses, engine_losses)
    rm = abs(loss.item() - engine_loss) / abs(engine_loss)
    print(f"model {args.model}: {kinds}, batch {B}x{T}, twin in {args.dtype}")
    print(f"logits  max|twin - engine| / max|engine| = {rl:.3e}")
    print(f"losses  max|twin - engine| / max|engine| = {rt:.3e}")
    print(f"loss    twin {loss.item():.8f} engine {engine_loss:.8f} relative {rm:.3e}")
    ok = all(r <= args.tol for r in (rl, rt, rm))  # NaN fails
    if args.decode_loss is not None:
        # eval prints 4 decimals: held to half a unit of the last, plus the tolerance
        with torch.no_grad():
            _, dloss = model(tokens, targets, decoding=True)
        dd = abs(dloss.item() - args.decode_loss)
        dok = dd <= 5e-5 + args.tol * abs(args.decode_loss)
        print(f"decoding loss  twin {dloss.item():.8f} engine {args.decode_loss:.4f} "
              f"{'agree' if dok else 'DIFFER'} (|difference| {dd:.2e})")
        ok = ok and dok
    worst = float("nan") if any(r != r for r in (rl, rt, rm)) else max(rl, rt, rm)
    print(f"{'agree' if ok else 'DIFFER'}: largest relative difference {worst:.3e}, tolerance {args.tol:.1e}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
