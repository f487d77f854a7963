"""Writes TFRecord files of ``tf.train.Example`` protos, the inverse of :mod:`ocl.data.tfrecord`:
the test fixtures of MOVi and CLEVR in the exact published format."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from ocl.data.tfrecord import FeatureValue, masked_crc32c

_LEN = 2
"""Protobuf wire type of length-delimited fields."""


def frame_record(data: bytes) -> bytes:
    """``data`` framed as one TFRecord record (length, length CRC, data, data CRC)."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


def write_records(path: str | Path, records: Iterable[bytes], compression: str = "none") -> None:
    """Write ``records`` to the TFRecord file ``path``, uncompressed (``none``) or as one GZIP stream (``gzip``)."""
    if compression not in ("none", "gzip"):
        raise ValueError(f"cannot write compression {compression!r}; known: ['none', 'gzip']")
    # The fastest level: any level reads the same (TF writes zlib's default, 6).
    with gzip.open(path, "wb", compresslevel=1) if compression == "gzip" else Path(path).open("wb") as stream:
        stream.writelines(frame_record(data) for data in records)


def _tag(number: int, wire: int) -> bytes:
    return _varint((number << 3) | wire)


def _varint(value: int) -> bytes:
    """``value`` (int64; negatives as 10-byte two's complement) as a varint."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _tag(number, _LEN) + _varint(len(payload)) + payload


def _fixed_width_values(array: np.ndarray) -> bytes:
    """A ``BytesList`` payload of one value per element of a bytes array of dtype ``S<n>``, each
    exactly ``n`` bytes (numpy's trailing zeros kept), built with numpy."""
    width = array.dtype.itemsize
    prefix = np.frombuffer(_tag(1, _LEN) + _varint(width), np.uint8)
    values = np.empty((array.size, len(prefix) + width), np.uint8)
    values[:, : len(prefix)] = prefix
    values[:, len(prefix) :] = np.frombuffer(np.ascontiguousarray(array).tobytes(), np.uint8).reshape(-1, width)
    return values.tobytes()


def encode_example(features: Mapping[str, FeatureValue | list[int] | list[float]]) -> bytes:
    """A serialized ``tf.train.Example``: ``list[bytes]`` -> bytes_list, float arrays ->
    float_list, int arrays -> int64_list (lists of numbers are typed by numpy), packed as TF writes them.

    A bytes array of dtype ``S<n>`` becomes a bytes_list of one ``n``-byte value per element: e.g.
    ``image.view("S1")`` (uint8 ``image``) is a raw array as TF's ``FixedLenFeature(shape,
    tf.string)`` + ``decode_raw`` datasets store it, one value per byte.
    """
    entries = []
    for key, value in features.items():
        if isinstance(value, list) and all(isinstance(item, bytes) for item in value) and value:
            payload = b"".join(_length_delimited(1, item) for item in value)
            feature = _length_delimited(1, payload)
        elif isinstance(value, np.ndarray) and value.dtype.kind == "S":
            feature = _length_delimited(1, _fixed_width_values(value))
        else:
            array = np.asarray(value)
            if array.dtype.kind == "f":
                feature = _length_delimited(2, _length_delimited(1, array.astype("<f4").tobytes()))
            elif array.dtype.kind in "iub":
                packed = b"".join(_varint(int(item)) for item in array.reshape(-1))
                feature = _length_delimited(3, _length_delimited(1, packed))
            else:
                raise TypeError(f"feature {key!r}: cannot encode values of dtype {array.dtype}")
        entries.append(_length_delimited(1, _length_delimited(1, key.encode("utf-8")) + _length_delimited(2, feature)))
    return _length_delimited(1, b"".join(entries))
