"""Streaming a job's results as a zip, with memory independent of their size.

The zip is written by a thread into a bounded queue of chunks that the RPC
sends as they come; entries are stored, not deflated, because trained models
rarely compress and throughput matters more on loopback.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

CHUNK_SIZE = 1 << 20
_END = object()


class _Cancelled(Exception):
    pass


class _ChunkWriter:
    """A write-only, unseekable file that hands out fixed-size chunks."""

    def __init__(self, out: queue.Queue, cancelled: threading.Event) -> None:
        self._out = out
        self._cancelled = cancelled
        self._buffer = bytearray()
        self._written = 0

    def write(self, data: bytes) -> int:
        self._buffer += data
        self._written += len(data)
        while len(self._buffer) >= CHUNK_SIZE:
            self._put(bytes(self._buffer[:CHUNK_SIZE]))
            del self._buffer[:CHUNK_SIZE]
        return len(data)

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._buffer:
            self._put(bytes(self._buffer))
            self._buffer.clear()

    def _put(self, chunk: object) -> None:
        while True:
            if self._cancelled.is_set():
                raise _Cancelled
            try:
                self._out.put(chunk, timeout=0.5)
                return
            except queue.Full:
                continue


def results_entries(result_dir: Path, live_logs: dict[str, Path]) -> Iterator[tuple[Path, str]]:
    """(file, name in zip) for the results, plus logs not yet stored in them."""
    if result_dir.is_dir():
        for path in sorted(result_dir.rglob("*")):
            if path.is_file() and not path.is_symlink():
                yield path, path.relative_to(result_dir).as_posix()
    for folder_name, folder in sorted(live_logs.items()):
        if (result_dir / folder_name).exists() or not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                yield path, f"{folder_name}/{path.relative_to(folder).as_posix()}"


def _write_zip(entries: Iterator[tuple[Path, str]], writer: _ChunkWriter) -> None:
    with zipfile.ZipFile(writer, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for path, name in entries:
            try:
                size = path.stat().st_size
                info = zipfile.ZipInfo.from_file(path, name)
            except FileNotFoundError:  # removed by the job while we zip
                continue
            info.compress_type = zipfile.ZIP_STORED
            with open(path, "rb") as source, archive.open(info, "w", force_zip64=size > 2**31) as dest:
                while block := source.read(CHUNK_SIZE):
                    dest.write(block)
    writer.close()


async def stream_zip(entries: Iterator[tuple[Path, str]]) -> AsyncIterator[bytes]:
    """Yield the zip of ``entries`` chunk by chunk; stops its thread if abandoned."""
    chunks: queue.Queue = queue.Queue(maxsize=4)
    cancelled = threading.Event()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            _write_zip(entries, _ChunkWriter(chunks, cancelled))
        except _Cancelled:
            return
        except BaseException as exc:
            failure.append(exc)
        _ChunkWriter(chunks, cancelled)._put(_END)

    thread = threading.Thread(target=produce, name="zip-results", daemon=True)
    thread.start()
    try:
        while True:
            chunk = await asyncio.to_thread(chunks.get)
            if chunk is _END:
                break
            yield chunk
        if failure:
            raise failure[0]
    finally:
        cancelled.set()


async def stream_file(path: Path) -> AsyncIterator[bytes]:
    """Yield a file in chunks without holding it in memory."""
    with open(path, "rb") as source:
        while block := await asyncio.to_thread(source.read, CHUNK_SIZE):
            yield block

