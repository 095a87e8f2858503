"""A small reader of TensorFlow's checkpoint format (tensor bundle V2), so that importing VFlow's
weights needs no TensorFlow.

A checkpoint ``PREFIX`` is ``PREFIX.index``, an SSTable (LevelDB's table format) mapping each
tensor name to a ``BundleEntryProto`` (dtype, shape, shard, offset, size; tensorflow/core/protobuf/
tensor_bundle.proto; the empty key holds a ``BundleHeaderProto``), and ``PREFIX.data-SSSSS-of-NNNNN``,
the shards holding the raw little-endian bytes. TensorFlow writes the index without compression;
a file this reader cannot follow (compressed blocks, partitioned variables, a big-endian bundle)
raises :class:`UnsupportedCheckpoint` and the caller may fall back to TensorFlow itself.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

MAGIC = 0xDB4775248B80FB57
# tensorflow/core/framework/types.proto -> numpy
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 9: np.int64,
          10: np.bool_, 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64}


class CheckpointFormatError(ValueError):
    """Not a TensorFlow checkpoint (or a damaged one)."""


class UnsupportedCheckpoint(CheckpointFormatError):
    """A valid checkpoint using a feature this reader does not implement."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointFormatError("truncated varint")
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, pos
        shift += 7
        if shift > 63:
            raise CheckpointFormatError("varint too long")


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """A protobuf message as (field number, value): varints as ints, length-delimited as bytes."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, pos = _varint(buf, pos)
        elif wire == 2:
            n, pos = _varint(buf, pos)
            v, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            v, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        elif wire == 1:
            v, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        else:
            raise CheckpointFormatError(f"protobuf wire type {wire}")
        out.append((num, v))
    return out


def _block(data: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    """The (key, value) entries of one table block (prefix-compressed keys, restart array)."""
    if offset + size + 5 > len(data):
        raise CheckpointFormatError("a block runs past the end of the index file")
    if data[offset + size] != 0:
        raise UnsupportedCheckpoint("compressed index blocks")
    block = data[offset:offset + size]
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * restarts
    entries, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        vlen, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        entries.append((key, block[pos:pos + vlen]))
        pos += vlen
    return entries


def _handle(buf: bytes, pos: int = 0) -> tuple[int, int, int]:
    off, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return off, size, pos


class BundleReader:
    """Names, shapes and tensors of a TensorFlow V2 checkpoint ``prefix``."""

    def __init__(self, prefix: str | Path):
        self.prefix = str(prefix)
        try:
            data = Path(self.prefix + ".index").read_bytes()
        except OSError as e:
            raise CheckpointFormatError(f"cannot read {self.prefix}.index: {e.strerror or e}") from None
        if len(data) < 48 or int.from_bytes(data[-8:], "little") != MAGIC:
            raise CheckpointFormatError(f"{self.prefix}.index is not a TensorFlow checkpoint index")
        footer = data[-48:]
        _, _, pos = _handle(footer)  # metaindex (unused)
        ioff, isize, _ = _handle(footer, pos)
        self._entries: dict[str, tuple] = {}
        shards = 1
        for _, handle in _block(data, ioff, isize):
            off, size, _ = _handle(handle)
            for key, value in _block(data, off, size):
                if key == b"":
                    shards = self._header(value)
                    continue
                self._entries[key.decode("utf-8")] = self._entry(value)
        self.shards = shards

    @staticmethod
    def _header(value: bytes) -> int:
        f = dict(_fields(value))
        if f.get(2, 0) != 0:
            raise UnsupportedCheckpoint("big-endian tensor bundle")
        return int(f.get(1, 1))

    @staticmethod
    def _entry(value: bytes) -> tuple:
        dtype, shape, shard, offset, size = 0, [], 0, 0, 0
        for num, v in _fields(value):
            if num == 1:
                dtype = v
            elif num == 2:
                for dn, dv in _fields(v):
                    if dn == 2:
                        shape.append(int(dict(_fields(dv)).get(1, 0)))
                    elif dn == 3 and dv:
                        raise UnsupportedCheckpoint("a tensor of unknown rank")
            elif num == 3:
                shard = v
            elif num == 4:
                offset = v
            elif num == 5:
                size = v
            elif num == 7:
                raise UnsupportedCheckpoint("partitioned (sliced) variables")
        return dtype, tuple(shape), shard, offset, size

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: e[1] for k, e in self._entries.items()}

    def read(self, name: str) -> np.ndarray:
        dtype, shape, shard, offset, size = self._entries[name]
        if dtype not in DTYPES:
            raise UnsupportedCheckpoint(f"{name}: TensorFlow dtype {dtype}")
        path = f"{self.prefix}.data-{shard:05d}-of-{self.shards:05d}"
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                raw = f.read(size)
        except OSError as e:
            raise CheckpointFormatError(f"cannot read {path}: {e.strerror or e}") from None
        dt = np.dtype(DTYPES[dtype]).newbyteorder("<")
        if len(raw) != size or size != int(np.prod(shape, dtype=np.int64)) * dt.itemsize:
            raise CheckpointFormatError(f"{path}: {name} is truncated or of the wrong size")
        return np.frombuffer(raw, dtype=dt).reshape(shape).astype(DTYPES[dtype])
