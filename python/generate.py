"""Generates text from an exported model with the PyTorch twin.

    python3 python/generate.py MODEL.safetensors [--tokenizer TOK] [--num 2] [--length 50] [--temperature 0.8]

Every sequence starts from the end-of-text token (the tokenizer's, else the
last id), as the engine's sample does. A model with MoT layers continues --num sequences
together, a multiple of the group size G: its layers mix the G tokens of
each position across the sequences. The tokens are decoded with --tokenizer,
else the tokenizer the metadata names, else read as bytes (ids 0..255; the
end-of-text token prints as a newline). A tokenizer is this program's file
(tokenizer/bpe.h) or llm.c's GPT-2 tokenizer file, which decodes only.
"""
import argparse
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mot  # noqa: E402


EOT_TEXT = b"<|endoftext|>"


def read_tokenizer(path):
    """A tokenizer file as each token's bytes and the end-of-text token's id.
    Reads tokenizer/bpe.h's two formats (raises ValueError, naming the file,
    on anything else):
      this program's: int32 magic 20261129, version 1, vocab, n merges, then
        the merges (a, b), merge i making token 256 + i; eot the last id
      llm.c's: uint32 header[256] (magic 20240328, version 1 or 2, vocab, and
        in version 2 the eot id), then per token a uint8 length and its bytes;
        in version 1 eot is the last id. It holds no merges: decoding only,
        which is all generate.py does."""
    with open(path, "rb") as fp:
        blob = fp.read()
    if len(blob) < 4:
        raise ValueError(f"{path}: not a tokenizer file ({len(blob)} bytes)")
    (magic,) = struct.unpack_from("<I", blob)
    if magic == 20240328:
        if len(blob) < 1024:
            raise ValueError(f"{path}: truncated llm.c tokenizer file: {len(blob)} bytes, shorter than the "
                             "1024-byte header")
        _, version, vocab, eot = struct.unpack_from("<4I", blob)
        if version not in (1, 2):
            raise ValueError(f"{path}: llm.c tokenizer version {version}, this reads versions 1 and 2")
        if not 2 <= vocab <= 1 << 24:
            raise ValueError(f"{path}: vocabulary size {vocab} in the llm.c tokenizer header (must be 2..{1 << 24})")
        if version == 1:
            eot = vocab - 1
        elif eot >= vocab:
            raise ValueError(f"{path}: end-of-text token {eot} in the llm.c tokenizer header is outside the "
                             f"vocabulary 0..{vocab - 1}")
        pieces, at = [], 1024
        for i in range(vocab):
            if at >= len(blob) or at + 1 + blob[at] > len(blob):
                raise ValueError(f"{path}: truncated llm.c tokenizer file: it ends within token {i} of {vocab}")
            n = blob[at]
            pieces.append(EOT_TEXT if i == eot else blob[at + 1:at + 1 + n])
            at += 1 + n
        if at != len(blob):
            raise ValueError(f"{path}: {len(blob) - at} bytes of trailing data after the {vocab} tokens of the "
                             "llm.c tokenizer file")
        return pieces, eot
    if len(blob) < 16:
        raise ValueError(f"{path}: not a tokenizer file ({len(blob)} bytes, magic {magic})")
    magic, version, vocab, n = struct.unpack_from("<4i", blob)
    if magic != 20261129:
        raise ValueError(f"{path}: not a tokenizer file (magic {magic}; this program's is 20261129, "
                         "llm.c's 20240328)")
    if version != 1 or n < 0 or vocab != 256 + n + 1 or len(blob) != 16 + 8 * n:
        raise ValueError(f"{path}: not a version 1 tokenizer file (version {version}, vocab {vocab}, {n} merges, "
                         f"{len(blob)} bytes)")
    pieces = [bytes([i]) for i in range(256)]
    for i in range(n):
        a, b = struct.unpack_from("<2i", blob, 16 + 8 * i)
        if not (0 <= a < 256 + i and 0 <= b < 256 + i):
            raise ValueError(f"{path}: merge {i} names token {a} or {b}, not made before it")
        pieces.append(pieces[a] + pieces[b])
    return pieces + [EOT_TEXT], vocab - 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--tokenizer", help="the tokenizer file the model was trained with (tokenizer/bpe.h, or llm.c's)")
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
    pieces, eot = [bytes([i]) for i in range(256)] + [b"\n"], cfg.V - 1
    if tok:
        try:
            pieces, eot = read_tokenizer(tok)
        except (OSError, ValueError) as e:
            sys.exit(f"generate.py: {e}")
        if len(pieces) != cfg.V:
            sys.exit(f"generate.py: the tokenizer {tok} has {len(pieces)} tokens, the model's vocabulary {cfg.V}")
    prompt = torch.full((num, 1), eot, dtype=torch.long)
    g = torch.Generator().manual_seed(args.seed)
    out = mot.generate(model, prompt, args.length, args.temperature, g)
    for row in out.tolist():
        text = b"".join(pieces[t] if t < len(pieces) else b"?" for t in row)
        print(text.decode("utf-8", errors="replace"))
        print("---")


if __name__ == "__main__":
    main()
