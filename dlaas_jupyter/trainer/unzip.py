"""Safe unpacking of a user's model-definition zip.

The zip comes from whoever can call CreateTrainingJob, so its entry names,
modes and sizes are untrusted: every entry is checked before anything is
written, and the bytes written are counted as they go.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = ["UnsafeZipError", "ZipLimits", "unpack_model"]

_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
_UNIX = 3  # ZipInfo.create_system of zips made on Unix: external_attr holds st_mode << 16


@dataclass(frozen=True)
class ZipLimits:
    """Bounds on what one model definition may unpack to."""

    max_files: int = 10_000
    max_bytes: int = 4 * 2**30  # total unpacked size


class UnsafeZipError(ValueError):
    """The zip is corrupt or would unpack to something unsafe; the message says what and why."""


def unpack_model(zip_path: Path, dest: Path, limits: ZipLimits = ZipLimits()) -> list[str]:
    """Unpack `zip_path` into `dest` and return the names of the files written.

    Every entry is validated before the first byte is written. Only the
    executable bit of an entry's mode is kept (never setuid or odd
    permissions), and a file already in `dest` is never overwritten. If
    unpacking fails part way (a corrupt entry, a size limit passed while
    writing), the files and folders this call created are removed again before
    UnsafeZipError is raised.
    """
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise UnsafeZipError(f"not a valid zip file: {zip_path}: {exc}") from exc
    with archive:
        plan = _plan(archive.infolist(), limits)
        return _extract(archive, plan, Path(dest), limits)


@dataclass(frozen=True)
class _Entry:
    info: zipfile.ZipInfo
    parts: tuple[str, ...]
    is_dir: bool
    executable: bool


def _plan(infos: list[zipfile.ZipInfo], limits: ZipLimits) -> list[_Entry]:
    """Check every entry without writing anything; return what to create."""
    if len(infos) > limits.max_files:
        raise UnsafeZipError(
            f"zip has {len(infos)} entries, more than the limit of {limits.max_files}"
        )
    declared = 0
    plan = []
    files: set[tuple[str, ...]] = set()
    for info in infos:
        entry = _check_entry(info)
        declared += info.file_size
        if declared > limits.max_bytes:
            raise _too_big(info.filename, limits)
        if entry is None:
            continue
        if not entry.is_dir:
            if entry.parts in files:
                raise _unsafe(info.filename, "appears more than once")
            files.add(entry.parts)
        plan.append(entry)
    return plan


def _check_entry(info: zipfile.ZipInfo) -> _Entry | None:
    """Validate one entry's name and type; None for an entry naming dest itself ('./')."""
    name = info.filename
    # Zips made by some Windows tools separate folders with backslashes.
    posix = name.replace("\\", "/")
    if posix.startswith("/"):
        raise _unsafe(name, "absolute paths are not allowed")
    if _DRIVE.match(posix):
        raise _unsafe(name, "drive letters are not allowed")
    raw_parts = PurePosixPath(posix).parts
    if ".." in raw_parts:
        raise _unsafe(name, "path leaves the model folder")
    parts = tuple(p for p in raw_parts if p != ".")
    if info.flag_bits & 0x1:
        raise _unsafe(name, "encrypted entries are not supported")

    mode = info.external_attr >> 16 if info.create_system == _UNIX else 0
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        raise _unsafe(name, "symbolic links are not allowed")
    if kind and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise _unsafe(name, "only regular files and folders are allowed")
    is_dir = posix.endswith("/") or stat.S_ISDIR(mode)
    if not parts:
        if not is_dir:
            raise _unsafe(name, "a file needs a name")
        return None
    return _Entry(info, parts, is_dir, executable=bool(mode & 0o111) and not is_dir)


def _extract(
    archive: zipfile.ZipFile, plan: list[_Entry], dest: Path, limits: ZipLimits
) -> list[str]:
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    created: list[Path] = []  # in creation order, so removal runs in reverse
    written_names: list[str] = []
    written = 0
    try:
        for entry in plan:
            target = root.joinpath(*entry.parts)
            _make_dirs(root, target if entry.is_dir else target.parent, created)
            if entry.is_dir:
                continue
            # The names were checked above; resolving again also catches a
            # symlink that was already inside dest.
            if not target.parent.resolve().is_relative_to(root):
                raise _unsafe(entry.info.filename, "path leaves the model folder")
            written = _write_file(archive, entry, target, created, written, limits)
            written_names.append("/".join(entry.parts))
    except BaseException:
        for path in reversed(created):
            with contextlib.suppress(OSError):  # keep the original error, not a clean-up one
                if path.is_dir() and not path.is_symlink():
                    path.rmdir()
                else:
                    path.unlink()
        raise
    return written_names


def _make_dirs(root: Path, folder: Path, created: list[Path]) -> None:
    missing = []
    while folder != root and not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except OSError as exc:
            reason = f"cannot create folder: {exc.strerror}"
            raise _unsafe(str(path.relative_to(root)), reason) from exc
        created.append(path)


def _write_file(
    archive: zipfile.ZipFile,
    entry: _Entry,
    target: Path,
    created: list[Path],
    written: int,
    limits: ZipLimits,
) -> int:
    """Write one entry, counting bytes against the total; return the new total."""
    name = entry.info.filename
    # O_EXCL: never overwrite (or follow a symlink at) something already in dest.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(target, flags, 0o777 if entry.executable else 0o666)
    except OSError as exc:
        raise _unsafe(name, f"cannot create file: {exc.strerror}") from exc
    created.append(target)
    try:
        with os.fdopen(fd, "wb") as out, archive.open(entry.info) as src:
            # zipfile stops at the declared size today; counting what is
            # actually written keeps the limit whatever the headers claim.
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                if written > limits.max_bytes:
                    raise _too_big(name, limits)
                out.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise _unsafe(name, f"corrupt data ({exc})") from exc
    except NotImplementedError as exc:
        raise _unsafe(name, str(exc)) from exc
    return written


def _unsafe(name: str, reason: str) -> UnsafeZipError:
    return UnsafeZipError(f"zip entry {name!r}: {reason}")


def _too_big(name: str, limits: ZipLimits) -> UnsafeZipError:
    return UnsafeZipError(
        f"zip entry {name!r} unpacks to more than {limits.max_bytes} bytes (limit)"
    )
