"""Model-definition zips: deterministic folder zips, checked zip files, clear errors."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

import pytest

from dlaas_jupyter.packaging.archive import ArchiveError, read_zip_or_folder, zip_folder


def make_model(root: Path) -> Path:
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "train.py").write_text("print('hi')\n")
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "sub" / "data.bin").write_bytes(bytes(range(256)) * 10)
    (root / "run.sh").write_text("#!/bin/sh\necho run\n")
    (root / "run.sh").chmod(0o755)
    (root / "empty").mkdir()
    for skipped in ("__pycache__", ".git", ".ipynb_checkpoints", ".venv"):
        (root / skipped).mkdir()
        (root / skipped / "junk.txt").write_text("skip me")
    (root / "pkg" / "__pycache__").mkdir()
    (root / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    return root


def entries(data: bytes) -> dict[str, zipfile.ZipInfo]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        return {info.filename: info for info in archive.infolist()}


def test_zip_folder_contents_and_order(tmp_path):
    data = zip_folder(make_model(tmp_path / "model"))
    infos = entries(data)
    assert list(infos) == [
        "empty/",
        "pkg/",
        "pkg/__init__.py",
        "pkg/sub/",
        "pkg/sub/data.bin",
        "run.sh",
        "train.py",
    ]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.read("train.py") == b"print('hi')\n"
        assert archive.read("pkg/sub/data.bin") == bytes(range(256)) * 10


def test_zip_folder_keeps_exec_bits(tmp_path):
    infos = entries(zip_folder(make_model(tmp_path / "model")))
    assert stat.S_IMODE(infos["run.sh"].external_attr >> 16) == 0o755
    assert stat.S_IMODE(infos["train.py"].external_attr >> 16) == 0o644
    assert stat.S_ISDIR(infos["pkg/"].external_attr >> 16)


def test_zip_folder_is_deterministic(tmp_path):
    first = zip_folder(make_model(tmp_path / "a"))
    second_root = make_model(tmp_path / "b")
    # Different times and a different non-exec mode must not change the bytes.
    os.utime(second_root / "train.py", (1_000_000_000, 1_000_000_000))
    (second_root / "train.py").chmod(0o600)
    assert zip_folder(second_root) == first
    assert zip_folder(tmp_path / "a") == first
    assert {info.date_time for info in entries(first).values()} == {(1980, 1, 1, 0, 0, 0)}


def test_zip_folder_follows_symlinks_but_not_loops(tmp_path):
    root = tmp_path / "model"
    (root / "real").mkdir(parents=True)
    (root / "real" / "a.txt").write_text("a")
    (root / "alias").symlink_to(root / "real")
    (root / "real" / "loop").symlink_to(root)
    names = list(entries(zip_folder(root)))
    assert names == ["alias/", "alias/a.txt", "real/", "real/a.txt"]


def test_zip_folder_missing_or_empty_names_the_folder(tmp_path):
    with pytest.raises(ArchiveError, match=f"model folder not found: {tmp_path / 'nope'}"):
        zip_folder(tmp_path / "nope")
    empty = tmp_path / "empty"
    (empty / "__pycache__").mkdir(parents=True)
    (empty / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (empty / "subdir").mkdir()
    with pytest.raises(ArchiveError, match=f"model folder {empty} has no files to send"):
        zip_folder(empty)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ArchiveError, match=f"not a folder: {a_file}"):
        zip_folder(a_file)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_zip_folder_unreadable_file_is_named(tmp_path):
    root = tmp_path / "model"
    root.mkdir()
    secret = root / "secret.py"
    secret.write_text("x")
    secret.chmod(0)
    with pytest.raises(ArchiveError, match=f"cannot read {secret}"):
        zip_folder(root)


def test_read_zip_or_folder_zips_a_folder(tmp_path):
    root = make_model(tmp_path / "model")
    assert read_zip_or_folder(root) == zip_folder(root)


def test_read_zip_or_folder_returns_a_zip_as_is(tmp_path):
    path = tmp_path / "model.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("train.py", "print(1)\n")
    assert read_zip_or_folder(path) == path.read_bytes()


def test_read_zip_or_folder_refuses_what_is_not_a_zip(tmp_path):
    text = tmp_path / "model.zip"
    text.write_text("not a zip at all")
    with pytest.raises(ArchiveError, match=f"{text} is not a valid zip file"):
        read_zip_or_folder(text)

    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(damaged, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("train.py", "print('a long enough line')\n")
    data = bytearray(damaged.read_bytes())
    offset = data.index(b"print('a long")
    data[offset] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match=f"{damaged} is a damaged zip file: entry train.py"):
        read_zip_or_folder(damaged)

    empty = tmp_path / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    with pytest.raises(ArchiveError, match=f"{empty} is an empty zip file"):
        read_zip_or_folder(empty)

    with pytest.raises(ArchiveError, match=r"model definition not found: .*missing\.zip"):
        read_zip_or_folder(tmp_path / "missing.zip")
