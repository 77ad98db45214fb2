"""Streaming a job's results as a zip, with memory independent of their size.

The zip is produced one block at a time as the RPC sends it, so only a chunk
or two is ever in memory; entries are stored, not deflated, because trained
models rarely compress and throughput matters more on loopback.
"""

from __future__ import annotations

import asyncio
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

CHUNK_SIZE = 1 << 20


class _Chunks:
    """A write-only, unseekable file whose writes are collected for yielding."""

    def __init__(self) -> None:
        self.pending: list[bytes] = []
        self._small = bytearray()
        self._written = 0

    def write(self, data: bytes) -> int:
        self._written += len(data)
        if len(data) >= CHUNK_SIZE:
            # File contents arrive in whole blocks: pass them on uncopied.
            self.flush()
            self.pending.append(bytes(data))
        else:
            self._small += data
            if len(self._small) >= CHUNK_SIZE:
                self.flush()
        return len(data)

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        if self._small:
            self.pending.append(bytes(self._small))
            self._small.clear()

    def take(self) -> list[bytes]:
        taken, self.pending = self.pending, []
        return taken


def results_entries(result_dir: Path, logs_root: Path) -> Iterator[tuple[Path, str]]:
    """(file, name in zip) for the results, plus learner logs under ``logs_root``
    not yet stored in them."""
    if result_dir.is_dir():
        for path in sorted(result_dir.rglob("*")):
            if path.is_file() and not path.is_symlink():
                yield path, path.relative_to(result_dir).as_posix()
    for folder in sorted(logs_root.glob("learner-*")):
        if (result_dir / folder.name).exists() or not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                yield path, f"{folder.name}/{path.relative_to(folder).as_posix()}"


def zip_chunks(entries: Iterator[tuple[Path, str]]) -> Iterator[bytes]:
    """The zip of ``entries`` as chunks, produced as they are read.

    Each step reads and checksums one block (about a millisecond per MiB), so
    the caller may run it on the event loop without a thread per download.
    """
    out = _Chunks()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for path, name in entries:
            try:
                size = path.stat().st_size
                info = zipfile.ZipInfo.from_file(path, name)
                source = open(path, "rb")
            except FileNotFoundError:  # removed by the job while we zip
                continue
            info.compress_type = zipfile.ZIP_STORED
            with source, archive.open(info, "w", force_zip64=size > 2**31) as dest:
                while block := source.read(CHUNK_SIZE):
                    dest.write(block)
                    yield from out.take()
    out.flush()
    yield from out.take()


async def stream_zip(entries: Iterator[tuple[Path, str]]) -> AsyncIterator[bytes]:
    """Yield the zip of ``entries`` chunk by chunk, letting other calls run between."""
    for chunk in zip_chunks(entries):
        yield chunk


async def stream_file(path: Path) -> AsyncIterator[bytes]:
    """Yield a file in chunks without holding it in memory."""
    with open(path, "rb") as source:
        while block := await asyncio.to_thread(source.read, CHUNK_SIZE):
            yield block

