"""The safetensors format, read and written with the standard library and torch.

A file is: an 8-byte little-endian unsigned header length n; n bytes of JSON,
{name: {"dtype": "F32"|"BF16"|"I32", "shape": [...], "data_offsets": [b, e]},
 "__metadata__": {str: str}}; then the raw little-endian data, each tensor at
bytes [b, e) counted from the end of the header.

read() returns float tensors as torch.float32 (bf16 widened exactly) and
int32 tensors as torch.int32, with the metadata. write() is for tests.
"""
import ctypes
import json
import struct

import torch

_DTYPES = {"F32": (torch.float32, 4), "BF16": (torch.bfloat16, 2), "I32": (torch.int32, 4)}


def read(path):
    """Returns ({name: tensor}, {metadata key: str})."""
    with open(path, "rb") as fp:
        blob = fp.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: too short for a safetensors header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise ValueError(f"{path}: header length {n} runs past the end of the file ({len(blob)} bytes)")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    data = memoryview(blob)[8 + n:]
    tensors = {}
    for name, info in header.items():
        if info["dtype"] not in _DTYPES:
            raise ValueError(f"{path}: tensor {name} has dtype {info['dtype']}; only F32, BF16, I32 are read")
        dtype, size = _DTYPES[info["dtype"]]
        b, e = info["data_offsets"]
        shape = list(info["shape"])
        count = 1
        for s in shape:
            count *= s
        if not (0 <= b <= e <= len(data)) or e - b != count * size:
            raise ValueError(f"{path}: tensor {name}: offsets [{b}, {e}) do not hold shape {shape} of {info['dtype']}")
        raw = bytearray(data[b:e])  # a writable copy, so torch owns its memory
        if count == 0:
            t = torch.zeros(shape, dtype=dtype)
        elif dtype == torch.bfloat16:  # bf16 is the top half of an f32: read as int16, reinterpret
            t = torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16).reshape(shape)
        else:
            t = torch.frombuffer(raw, dtype=dtype).reshape(shape)
        tensors[name] = t.float() if dtype == torch.bfloat16 else t
    return tensors, meta


def write(path, tensors, metadata=None, dtype=torch.float32):
    """Writes {name: tensor}: int tensors as I32, float ones as F32 or, with
    dtype torch.bfloat16, BF16 (torch rounds to nearest even)."""
    header, chunks, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        if t.dtype in (torch.int32, torch.int64):
            t, code = t.to(torch.int32), "I32"
        elif dtype == torch.bfloat16:
            t, code = t.to(torch.bfloat16).view(torch.int16), "BF16"
        else:
            t, code = t.to(torch.float32), "F32"
        raw = ctypes.string_at(t.data_ptr(), t.numel() * t.element_size()) if t.numel() else b""
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as fp:
        fp.write(struct.pack("<Q", len(text)))
        fp.write(text)
        for raw in chunks:
            fp.write(raw)
