"""Read a local W&B run (``<run folder>/wandb/offline-run-*/run-*.wandb``) without W&B's servers.

A ``.wandb`` file is W&B's transaction log: a 7-byte file header (``:W&B``, a 2-byte magic, a
version byte) followed by 32 KiB blocks of chunks, each with a 7-byte header (CRC-32 of the type
byte and the data, little-endian data length, type: full, first, middle or last piece of a
record). Records are ``wandb.proto.wandb_internal_pb2.Record`` protobuf messages. A run that was
killed may end in a torn chunk: reading stops at the first chunk that is incomplete or fails its
checksum.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FILE_MAGIC = b":W&B"
FILE_HEADER_SIZE = 7
BLOCK_SIZE = 32 * 1024
CHUNK_HEADER = struct.Struct("<IHB")  # crc32, data length, chunk type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class LocalWandbRun:
    """What a local W&B run holds for comparisons.

    Attributes:
        name, group, tags: the run's display name, group and tags.
        config: top-level config key -> value (``wandb.init`` config and later updates).
        summary: top-level summary key -> last logged value (nested values are left out).
    """

    name: str
    group: str
    tags: list[str]
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def read_records(path: Path) -> Iterator[bytes]:
    """The serialised records of the transaction log at ``path``, in order."""
    data = path.read_bytes()
    if not data.startswith(FILE_MAGIC):
        raise ValueError(f"{path} is not a W&B run log (it does not start with {FILE_MAGIC!r})")
    position, pieces = FILE_HEADER_SIZE, []
    while position + CHUNK_HEADER.size <= len(data):
        room = BLOCK_SIZE - position % BLOCK_SIZE
        if room < CHUNK_HEADER.size:  # block trailer: padding
            position += room
            continue
        checksum, length, kind = CHUNK_HEADER.unpack_from(data, position)
        chunk = data[position + CHUNK_HEADER.size : position + CHUNK_HEADER.size + length]
        if kind not in (FULL, FIRST, MIDDLE, LAST) or len(chunk) < length:
            return
        if zlib.crc32(bytes([kind]) + chunk) != checksum:
            return
        position += CHUNK_HEADER.size + length
        if kind in (FULL, FIRST):
            pieces = [chunk]
        else:
            pieces.append(chunk)
        if kind in (FULL, LAST):
            yield b"".join(pieces)
            pieces = []


def _top_level_key(item: Any) -> str | None:
    """The key of a config/summary item, ``None`` for a nested one (e.g. a media file's fields)."""
    if item.key:
        return item.key
    return item.nested_key[0] if len(item.nested_key) == 1 else None


def read_local_run(log_file: Path) -> LocalWandbRun:
    """Name, group, tags, config and summary of the run logged in ``log_file`` (a ``run-*.wandb`` file)."""
    from wandb.proto import wandb_internal_pb2

    run = LocalWandbRun(name="", group="", tags=[])
    for serialised in read_records(log_file):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(serialised)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.name, run.group, run.tags = record.run.display_name, record.run.run_group, list(record.run.tags)
            items, target = record.run.config.update, run.config
        elif kind == "config":
            items, target = record.config.update, run.config
        elif kind == "summary":
            items, target = record.summary.update, run.summary
        else:
            continue
        for item in items:
            key = _top_level_key(item)
            if key is not None:
                target[key] = json.loads(item.value_json)
    return run


def latest_local_run_log(run_folder: Path) -> Path | None:
    """The ``.wandb`` log of the newest W&B run under ``run_folder/wandb`` (offline or synced), if any."""
    logs = sorted(run_folder.glob("wandb/*run-*/run-*.wandb"), key=lambda p: p.parent.name.split("run-", 1)[1])
    return logs[-1] if logs else None
