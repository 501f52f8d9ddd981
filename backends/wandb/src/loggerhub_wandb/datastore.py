"""Reads ``.wandb`` files: the transaction log that wandb-core writes for every run.

wandb 0.31 writes these files from its Go service and no longer ships the Python reader that
older releases had (``wandb.sdk.internal.datastore``). The format is small and stable:

* a 7-byte header: ``:W&B``, the magic ``0xBEE1`` (little-endian uint16), the version ``0``;
* then LevelDB-log framing: 32 KiB blocks of chunks, each with a 7-byte header (checksum uint32,
  length uint16, type uint8: FULL, FIRST, MIDDLE or LAST) and its payload; fewer than 7 bytes
  left in a block are zero padding. The checksum is CRC-32 (IEEE, as ``zlib.crc32``) of the
  payload, seeded with the CRC-32 of the type byte;
* each whole record is one ``wandb.proto.wandb_internal_pb2.Record``, decoded with wandb's own
  protobuf classes.

The reader treats the file as untrusted: a bad checksum, a broken chunk sequence, an oversized
record or an undecodable payload is skipped and reported, and reading resumes at the next block
(where LevelDB framing realigns). Only one 32 KiB block is held in memory. A torn tail, as a
killed writer leaves it, ends the scan.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

HEADER = struct.pack("<4sHB", b":W&B", 0xBEE1, 0)
BLOCK = 32 * 1024
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
#: A record larger than this is skipped: wandb-core writes media as files, not into records.
MAX_RECORD_BYTES = 64 * 1024 * 1024

_TYPE_CRC = {kind: zlib.crc32(bytes([kind])) for kind in (FULL, FIRST, MIDDLE, LAST)}


class NotAWandbFile(ValueError):
    """The file does not start with the ``.wandb`` header."""


@dataclass
class Scan:
    """What a scan found: the decoded records, and what it had to skip, by reason."""

    records: list[Any] = field(default_factory=list)
    problems: dict[str, int] = field(default_factory=dict)

    def problem(self, reason: str) -> None:
        self.problems[reason] = self.problems.get(reason, 0) + 1


def payloads(stream: BinaryIO, scan: Scan) -> Iterator[bytes]:
    """The record payloads of a ``.wandb`` stream, one block in memory at a time; problems are
    noted in ``scan``."""
    block = stream.read(BLOCK)
    if block[: len(HEADER)] != HEADER:
        raise NotAWandbFile("not a .wandb file (its header is not ':W&B', 0xBEE1, version 0)")
    position = len(HEADER)
    pending: bytearray | None = None
    while block:
        while len(block) - position >= CHUNK_HEADER:
            checksum, length, kind = struct.unpack_from("<IHB", block, position)
            start = position + CHUNK_HEADER
            end = start + length
            if kind == 0 and length == 0 and checksum == 0:
                break  # zero padding to the end of the block
            if kind not in _TYPE_CRC or end > BLOCK:
                scan.problem("malformed chunk header")
                pending = None
                break
            if end > len(block):
                scan.problem("torn tail (a writer stopped mid-record)")
                return
            payload = block[start:end]
            position = end
            if zlib.crc32(payload, _TYPE_CRC[kind]) != checksum:
                scan.problem("checksum mismatch")
                pending = None
                continue
            if kind == FULL:
                if pending is not None:
                    scan.problem("record without its last chunk")
                pending = None
                yield payload
            elif kind == FIRST:
                if pending is not None:
                    scan.problem("record without its last chunk")
                pending = bytearray(payload)
            elif pending is None:
                scan.problem("chunk without its first chunk")
            else:
                pending += payload
                if len(pending) > MAX_RECORD_BYTES:
                    scan.problem(f"record over {MAX_RECORD_BYTES} bytes")
                    pending = None
                elif kind == LAST:
                    yield bytes(pending)
                    pending = None
        if len(block) < BLOCK:
            if len(block) > position and any(block[position:]):
                scan.problem("torn tail (a writer stopped mid-record)")
            break
        block = stream.read(BLOCK)
        position = 0
    if pending is not None:
        scan.problem("torn tail (a writer stopped mid-record)")


def iter_records(path: str | Path, scan: Scan, *, max_bytes: int | None = None) -> Iterator[Any]:
    """The records of a ``.wandb`` file as ``wandb_internal_pb2.Record`` messages, one at a time.

    :param scan: collects what had to be skipped, by reason.
    :param max_bytes: refuse a larger file (``ValueError``) before reading any of it.
    """
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    path = Path(path)
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise ValueError(f"{path.name}: {size} bytes, over the limit of {max_bytes}")
    with path.open("rb") as stream:
        for payload in payloads(stream, scan):
            record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]
            try:
                record.ParseFromString(payload)
            except DecodeError:
                scan.problem("undecodable record")
                continue
            yield record


def read_records(path: str | Path, *, max_bytes: int | None = None) -> Scan:
    """Every record of a ``.wandb`` file, and the problems met (see :func:`iter_records`)."""
    scan = Scan()
    scan.records.extend(iter_records(path, scan, max_bytes=max_bytes))
    return scan


class Tail:
    """Follows a ``.wandb`` file that wandb-core is appending to: each :meth:`poll` returns the
    records completed since the last one, reading only the new bytes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._position = 0
        self._pending: bytearray | None = None

    def poll(self) -> list[Any]:
        from wandb.proto import wandb_internal_pb2

        try:
            with self.path.open("rb") as stream:
                stream.seek(self._position)
                data = stream.read()
        except FileNotFoundError:
            return []
        offset = 0
        if self._position == 0:
            if len(data) < len(HEADER):
                return []
            if data[: len(HEADER)] != HEADER:
                raise NotAWandbFile(f"{self.path}: not a .wandb file")
            offset = len(HEADER)
        found = []
        while True:
            left_in_block = BLOCK - (self._position + offset) % BLOCK
            if left_in_block < CHUNK_HEADER:
                if len(data) - offset < left_in_block:
                    break
                offset += left_in_block
                continue
            if len(data) - offset < CHUNK_HEADER:
                break
            checksum, length, kind = struct.unpack_from("<IHB", data, offset)
            end = offset + CHUNK_HEADER + length
            if kind not in _TYPE_CRC or end > len(data):
                break  # not written yet
            payload = data[offset + CHUNK_HEADER:end]
            offset = end
            if zlib.crc32(payload, _TYPE_CRC[kind]) != checksum:
                self._pending = None
                continue
            if kind == FULL:
                whole: bytes | None = payload
            elif kind == FIRST:
                self._pending, whole = bytearray(payload), None
            elif self._pending is not None:
                self._pending += payload
                whole = bytes(self._pending) if kind == LAST else None
                if kind == LAST:
                    self._pending = None
            else:
                whole = None
            if whole is not None:
                record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]
                record.ParseFromString(whole)
                found.append(record)
        self._position += offset
        return found
