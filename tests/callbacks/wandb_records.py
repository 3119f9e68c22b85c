"""Reads the records of an offline W&B run file (``run-*.wandb``) back, for tests.

The file is a 7-byte header (``:W&B``, a 2-byte magic, a version byte) followed by 32 KiB blocks of
chunks, each with a 7-byte header (CRC32C, little-endian length, type: 1 full, 2 first, 3 middle,
4 last) holding serialized ``wandb_internal_pb2.Record`` messages.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

BLOCK = 32768
HEADER = 7


def iter_records(path: Path) -> Iterator[object]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:  # the block's tail is padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:
            pos += room
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 1:
            pending = chunk
        elif kind == 2:
            pending = chunk
            continue
        elif kind == 3:
            pending += chunk
            continue
        elif kind == 4:
            pending += chunk
        record = pb.Record()
        record.ParseFromString(pending)
        pending = b""
        yield record
