"""Model-definition zips: a folder zipped the same way every time, or a zip checked as given.

Zipping deterministically (sorted names, one fixed timestamp, normalised modes)
makes the same code give the same bytes, so a resubmitted job is recognisably
the same model definition.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

__all__ = ["SKIPPED_FOLDERS", "ArchiveError", "read_zip_or_folder", "write_file", "zip_folder"]

SKIPPED_FOLDERS = frozenset({"__pycache__", ".git", ".ipynb_checkpoints", ".venv"})
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold


class ArchiveError(ValueError):
    """A model definition that cannot be sent: missing, empty or not a zip."""


def zip_folder(folder: Path) -> bytes:
    """Zip the files under ``folder`` (paths relative to it), skipping SKIPPED_FOLDERS.

    Executable files stay executable (mode 0755, others 0644) so a learner can run
    a shell script from the model definition directly.
    """
    folder = Path(folder)
    if not folder.exists():
        raise ArchiveError(f"model folder not found: {folder}")
    if not folder.is_dir():
        raise ArchiveError(f"not a folder: {folder}")
    buffer = io.BytesIO()
    files = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, is_dir in _entries(folder):
            name = path.relative_to(folder).as_posix()
            if is_dir:
                info = zipfile.ZipInfo(name + "/", _EPOCH)
                info.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10  # 0x10: MS-DOS dir
                archive.writestr(info, b"")
                continue
            try:
                data = path.read_bytes()
                executable = os.stat(path).st_mode & 0o111
            except OSError as exc:
                raise ArchiveError(f"cannot read {path}: {exc.strerror or exc}") from exc
            write_file(archive, name, data, executable=bool(executable))
            files += 1
    if files == 0:
        skipped = ", ".join(sorted(SKIPPED_FOLDERS))
        raise ArchiveError(f"model folder {folder} has no files to send (skipping {skipped})")
    return buffer.getvalue()


def write_file(archive: zipfile.ZipFile, name: str, data: bytes, *, executable: bool) -> None:
    """Add one file entry as every model-definition zip holds it: deflated, with
    the fixed timestamp, and mode 0755 if ``executable`` else 0644."""
    info = zipfile.ZipInfo(name, _EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
    archive.writestr(info, data)


def _entries(folder: Path) -> list[tuple[Path, bool]]:
    """Every folder and file below ``folder`` in sorted order.

    Symlinks are followed, except one pointing back to a folder being walked (a loop).
    """
    entries: list[tuple[Path, bool]] = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        here = os.path.realpath(root)
        kept = []
        for name in sorted(dirs):
            real = os.path.realpath(os.path.join(root, name))
            loops = here == real or here.startswith(real + os.sep)
            if name not in SKIPPED_FOLDERS and not loops:
                kept.append(name)
        dirs[:] = kept
        entries.extend((Path(root, name), True) for name in kept)
        entries.extend((Path(root, name), False) for name in names)
    entries.sort(key=lambda entry: entry[0].relative_to(folder).as_posix())
    return entries


def read_zip_or_folder(path: Path) -> bytes:
    """The model-definition zip for ``path``: a folder zipped, or a zip file checked, as is."""
    path = Path(path)
    if path.is_dir():
        return zip_folder(path)
    if not path.exists():
        raise ArchiveError(f"model definition not found: {path} (expected a folder or a .zip file)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArchiveError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            broken = archive.testzip()
            empty = not archive.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise ArchiveError(f"{path} is not a valid zip file ({exc})") from exc
    if broken is not None:
        raise ArchiveError(f"{path} is a damaged zip file: entry {broken} fails its CRC check")
    if empty:
        raise ArchiveError(f"{path} is an empty zip file")
    return data
