"""Generates text from an exported model with the PyTorch twin.

    python3 python/generate.py MODEL.safetensors [--tokenizer TOK] [--num 2] [--length 50] [--temperature 0.8]

Every sequence starts from the end-of-text token (the last id), as the
engine's sample does. A model with MoT layers continues --num sequences
together, a multiple of the group size G: its layers mix the G tokens of
each position across the sequences. The tokens are decoded with --tokenizer,
else the tokenizer the metadata names, else read as bytes (ids 0..255; the
end-of-text token prints as a newline).
"""
import argparse
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mot  # noqa: E402


def read_tokenizer(path):
    """tokenizer/bpe.h's file (int32: magic 20261129, version 1, vocab, n merges,
    then the merges (a, b), merge i making token 256 + i): each token's bytes."""
    with open(path, "rb") as fp:
        blob = fp.read()
    magic, version, vocab, n = struct.unpack("<4i", blob[:16])
    if magic != 20261129 or version != 1 or vocab != 256 + n + 1 or len(blob) != 16 + 8 * n:
        raise ValueError(f"{path}: not a version 1 tokenizer file")
    pieces = [bytes([i]) for i in range(256)]
    for i in range(n):
        a, b = struct.unpack_from("<2i", blob, 16 + 8 * i)
        pieces.append(pieces[a] + pieces[b])
    return pieces + [b"<|endoftext|>"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--tokenizer", help="the tokenizer file the model was trained with (tokenizer/bpe.h)")
    ap.add_argument("--num", type=int, default=0, help="sequences (default: G for MoT models, else 1)")
    ap.add_argument("--length", type=int, default=50, help="new tokens per sequence")
    ap.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    model = mot.load(args.model, torch.float32)
    cfg = model.cfg
    num = args.num or (cfg.G if mot.MOT in cfg.kinds else 1)
    if mot.MOT in cfg.kinds and num % cfg.G:
        sys.exit(f"generate.py: --num {num} is not a multiple of the group size {cfg.G}: MoT mixes G sequences")
    tok = args.tokenizer or model.meta.get("tokenizer", "")
    if tok and not os.path.exists(tok):
        print(f"generate.py: the model's tokenizer {tok} is not here; printing bytes", file=sys.stderr)
        tok = ""
    pieces = read_tokenizer(tok) if tok else [bytes([i]) for i in range(256)] + [b"\n"]
    prompt = torch.full((num, 1), cfg.V - 1, dtype=torch.long)
    g = torch.Generator().manual_seed(args.seed)
    out = mot.generate(model, prompt, args.length, args.temperature, g)
    for row in out.tolist():
        text = b"".join(pieces[t] if t < len(pieces) else b"?" for t in row)
        print(text.decode("utf-8", errors="replace"))
        print("---")


if __name__ == "__main__":
    main()
