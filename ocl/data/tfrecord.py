"""TFRecord files of ``tf.train.Example`` protos, read without TensorFlow.

A TFRecord file is a sequence of records, each framed as::

    uint64 length (little endian) | uint32 masked CRC32C of the length bytes
    data (length bytes)           | uint32 masked CRC32C of the data

Files may be GZIP-compressed as a whole (TF's ``compression_type="GZIP"``, e.g. DeepMind's
multi_object_datasets); :func:`iter_records` detects this (or is told), and then reports
offsets in the uncompressed stream. The length CRC is always verified (it is 8 bytes: cheap in
pure Python, and it keeps a corrupt length from sending the reader gigabytes off). The data
CRC is verified when the optional C package ``google_crc32c`` is installed, or on request
(``verify_data=True``, pure Python: slow, about a few MB/s). A truncated or corrupt record (or
GZIP stream) raises :class:`~ocl.data.errors.DataError` naming the file and the byte offset of
the record.

``tf.train.Example`` is decoded from the protobuf wire format directly::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }       // entries: key = 1, value = 2
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1; }              // packed or not
    Int64List { repeated int64 value = 1; }              // packed or not

Only the features asked for are decoded, so large ones (e.g. MOVi's optical flow as millions
of int64 values) cost nothing. :func:`parse_byte_arrays` reads raw arrays stored as bytes lists
(TF's ``FixedLenFeature(shape, tf.string)`` + ``decode_raw``: one value per byte) with numpy
instead of a Python loop. :func:`write_records` and :func:`encode_example` are the inverse,
used to write test fixtures in the exact published format.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ocl.data.errors import DataError

FeatureValue = list[bytes] | np.ndarray
"""A decoded feature: ``list[bytes]`` (bytes_list), float32 ``[N]`` (float_list) or int64 ``[N]`` (int64_list)."""

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_HEADER = 12  # uint64 length + uint32 length CRC
_FOOTER = 4  # uint32 data CRC
_GZIP_MAGIC = b"\x1f\x8b"
COMPRESSIONS = ("auto", "none", "gzip")


def _crc32c_table() -> tuple[int, ...]:
    """Lookup table of the reflected Castagnoli polynomial 0x82F63B78."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc32c_table()


def crc32c_python(data: bytes) -> int:
    """CRC32C (Castagnoli) of ``data`` in pure Python (slow: for short inputs and tests)."""
    crc = _U32
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _U32


def _fast_crc32c() -> Callable[[bytes], int] | None:
    """``google_crc32c.value`` when its C implementation is installed, else None."""
    try:
        import google_crc32c
    except ImportError:
        return None
    return google_crc32c.value if getattr(google_crc32c, "implementation", "c") == "c" else None


_FAST_CRC32C = _fast_crc32c()


def crc32c(data: bytes) -> int:
    """CRC32C of ``data``: the C package when installed, pure Python otherwise."""
    return _FAST_CRC32C(bytes(data)) if _FAST_CRC32C is not None else crc32c_python(data)


def masked_crc32c(data: bytes) -> int:
    """The CRC TFRecord stores: CRC32C rotated right by 15 bits plus a constant (mod 2^32)."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


@dataclass(frozen=True)
class Record:
    """One record's payload and where it came from (for error messages)."""

    path: Path
    offset: int
    data: bytes
    compressed: bool = False
    """The file is GZIP-compressed: ``offset`` is in the uncompressed stream."""

    @property
    def where(self) -> str:
        return f"{self.path} (record at {_position(self.offset, self.compressed)})"


def _position(offset: int, compressed: bool) -> str:
    return f"uncompressed byte {offset}" if compressed else f"byte {offset}"


def _is_gzip(start: bytes) -> bool:
    """Whether a file starting with ``start`` (its first bytes) is GZIP-compressed.

    A valid record header (length and its CRC) means uncompressed, even if it happens to begin
    like a GZIP stream (a record length can); otherwise the GZIP magic bytes decide.
    """
    if len(start) >= _HEADER and masked_crc32c(start[:8]) == struct.unpack("<I", start[8:_HEADER])[0]:
        return False
    return start.startswith(_GZIP_MAGIC)


def _read(stream: BinaryIO, size: int, path: Path, offset: int, compressed: bool) -> bytes:
    """Up to ``size`` bytes of ``stream``; DataError naming ``path`` for broken GZIP data."""
    try:
        return stream.read(size)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(
            f"{path}: corrupt or truncated GZIP data after {_position(offset, compressed)} ({error}); "
            "re-download this file"
        ) from error


def iter_records(path: str | Path, verify_data: bool | None = None, compression: str = "auto") -> Iterator[Record]:
    """The records of the TFRecord file ``path``, in order.

    Args:
        path: a TFRecord file, uncompressed or GZIP-compressed as a whole.
        verify_data: check each record's data CRC; ``None`` = only when ``google_crc32c`` (C) is installed.
        compression: ``auto`` (detected from the first bytes), ``none`` or ``gzip``.
    """
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown compression {compression!r}; known: {list(COMPRESSIONS)}")
    path = Path(path)
    verify = _FAST_CRC32C is not None if verify_data is None else verify_data
    if compression == "auto":
        with path.open("rb") as stream:
            compression = "gzip" if _is_gzip(stream.read(_HEADER)) else "none"
    compressed = compression == "gzip"
    with gzip.open(path, "rb") if compressed else path.open("rb") as stream:
        offset = 0
        while header := _read(stream, _HEADER, path, offset, compressed):
            where = _position(offset, compressed)
            if len(header) < _HEADER:
                raise DataError(f"{path}: truncated record header at {where}; re-download this file")
            length_bytes, length_crc = header[:8], struct.unpack("<I", header[8:])[0]
            if masked_crc32c(length_bytes) != length_crc:
                raise DataError(f"{path}: corrupt record length at {where} (CRC mismatch); re-download this file")
            (length,) = struct.unpack("<Q", length_bytes)
            body = _read(stream, length + _FOOTER, path, offset, compressed)
            if len(body) < length + _FOOTER:
                raise DataError(
                    f"{path}: truncated record at {where} ({length} bytes announced, "
                    f"{max(0, len(body) - _FOOTER)} present); re-download this file"
                )
            data = body[:length]
            if verify and masked_crc32c(data) != struct.unpack("<I", body[length:])[0]:
                raise DataError(f"{path}: corrupt record data at {where} (CRC mismatch); re-download this file")
            yield Record(path, offset, data, compressed)
            offset += _HEADER + length + _FOOTER


# --------------------------------------------------------------------------- protobuf wire format

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class _WireError(ValueError):
    """Malformed protobuf bytes (turned into a DataError naming the record)."""


def _read_varint(buffer: memoryview, position: int) -> tuple[int, int]:
    """The unsigned varint at ``position`` and the position after it."""
    result = shift = 0
    while True:
        if position >= len(buffer):
            raise _WireError("varint runs past the end of the message")
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift >= 70:
            raise _WireError("varint longer than 10 bytes")


def _fields(buffer: memoryview) -> Iterator[tuple[int, int, memoryview | int]]:
    """``(field number, wire type, value)`` of each field; the value of a LEN field is its bytes."""
    position = 0
    while position < len(buffer):
        tag, position = _read_varint(buffer, position)
        number, wire = tag >> 3, tag & 7
        if wire == _VARINT:
            value, position = _read_varint(buffer, position)
        elif wire in (_I64, _I32, _LEN):
            if wire == _LEN:
                size, position = _read_varint(buffer, position)
            else:
                size = 8 if wire == _I64 else 4
            if position + size > len(buffer):
                raise _WireError(f"field {number} runs past the end of the message")
            value, position = buffer[position : position + size], position + size
        else:
            raise _WireError(f"unsupported wire type {wire} (field {number})")
        yield number, wire, value


def _signed64(value: int) -> int:
    """A varint read as two's complement int64."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _decode_feature(buffer: memoryview) -> FeatureValue:
    """One ``tf.train.Feature``: bytes list, float32 array or int64 array."""
    result: FeatureValue = []
    for kind, wire, payload in _fields(buffer):
        if wire != _LEN or kind not in (1, 2, 3):
            continue  # unknown field: ignored, as protobuf does
        if kind == 1:
            result = [bytes(v) for number, w, v in _fields(payload) if number == 1 and w == _LEN]
        elif kind == 2:
            result = _float_values(payload)
        else:
            result = np.array(list(_int64_values(payload)), dtype=np.int64)
    return result


def _float_values(payload: memoryview) -> np.ndarray:
    """The values of a ``FloatList``, packed or unpacked: float32 ``[N]``."""
    parts = []
    for number, wire, value in _fields(payload):
        if number == 1 and wire in (_LEN, _I32):
            if len(value) % 4:
                raise _WireError("packed float list length is not a multiple of 4")
            parts.append(bytes(value))
    return np.frombuffer(b"".join(parts), "<f4").astype(np.float32)


def _int64_values(payload: memoryview) -> Iterator[int]:
    """The values of an ``Int64List``, packed or unpacked."""
    for number, wire, value in _fields(payload):
        if number != 1:
            continue
        if wire == _VARINT:
            yield _signed64(value)
        elif wire == _LEN:
            position = 0
            while position < len(value):
                item, position = _read_varint(value, position)
                yield _signed64(item)


def _byte_array(buffer: memoryview) -> np.ndarray:
    """The values of a ``tf.train.Feature``'s bytes list concatenated: uint8 ``[total bytes]``.

    One-byte values (TF's layout of raw arrays: ``tag, length 1, byte`` repeated) are read with
    numpy; other layouts value by value.
    """
    payload = None
    for kind, wire, value in _fields(buffer):
        if wire == _LEN and kind in (2, 3):
            raise _WireError("a float or int64 list where a bytes list was expected")
        if wire == _LEN and kind == 1:
            payload = value
    if payload is None:
        return np.zeros(0, np.uint8)
    data = np.frombuffer(payload, np.uint8)
    if len(data) % 3 == 0 and (data[0::3] == (1 << 3) | _LEN).all() and (data[1::3] == 1).all():
        return data[2::3].copy()
    return np.frombuffer(b"".join(bytes(v) for n, w, v in _fields(payload) if n == 1 and w == _LEN), np.uint8)


def _feature_buffers(record: Record, keys: Collection[str] | None) -> Iterator[tuple[str, memoryview | None]]:
    """``(key, undecoded tf.train.Feature)`` of each feature of the Example in ``record`` (only ``keys`` when given)."""
    for number, wire, features_bytes in _fields(memoryview(record.data)):
        if number != 1 or wire != _LEN:
            continue
        for entry_number, entry_wire, entry in _fields(features_bytes):
            if entry_number != 1 or entry_wire != _LEN:
                continue
            key, value = None, None
            for part_number, part_wire, part in _fields(entry):
                if part_number == 1 and part_wire == _LEN:
                    key = bytes(part).decode("utf-8")
                elif part_number == 2 and part_wire == _LEN:
                    value = part
            if key is not None and (keys is None or key in keys):
                yield key, value


def parse_example(record: Record, keys: Collection[str] | None = None) -> dict[str, FeatureValue]:
    """The features of the ``tf.train.Example`` in ``record`` (only ``keys`` when given).

    Raises DataError naming the record if the bytes are not a valid Example.
    """
    try:
        return {
            key: _decode_feature(value) if value is not None else [] for key, value in _feature_buffers(record, keys)
        }
    except (_WireError, UnicodeDecodeError) as error:
        raise DataError(f"{record.where}: not a valid tf.train.Example ({error}); re-download this file") from error


def parse_byte_arrays(record: Record, keys: Collection[str]) -> dict[str, np.ndarray]:
    """The bytes-list features ``keys`` of the Example in ``record``, each as its values
    concatenated, uint8 ``[total bytes]`` (what TF's ``decode_raw`` gives for a raw array stored
    one byte per value, or as one value); features absent from the record are absent here.

    Raises DataError naming the record if the bytes are not a valid Example or a feature is no bytes list.
    """
    try:
        return {
            key: _byte_array(value) if value is not None else np.zeros(0, np.uint8)
            for key, value in _feature_buffers(record, keys)
        }
    except (_WireError, UnicodeDecodeError) as error:
        raise DataError(f"{record.where}: not a valid tf.train.Example ({error}); re-download this file") from error
