"""unpack_model against real malicious zips: nothing may land outside dest."""

from __future__ import annotations

import os
import stat
import struct
import warnings
import zipfile
from pathlib import Path

import pytest

from dlaas_jupyter.trainer.unzip import UnsafeZipError, ZipLimits, unpack_model

DEFAULT_LIMITS = ZipLimits()


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """A folder holding only the zip and dest, so anything written beside dest shows up."""
    folder = tmp_path / "box"
    folder.mkdir()
    return folder


def make_zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


def unix_entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def all_files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def assert_rejected(
    box: Path, zip_path: Path, message: str, limits: ZipLimits = DEFAULT_LIMITS
) -> Path:
    dest = box / "dest"
    with pytest.raises(UnsafeZipError) as caught:
        unpack_model(zip_path, dest, limits)
    assert str(caught.value) == message
    outside = {p.name for p in box.iterdir()} - {"dest", zip_path.name}
    assert outside == set(), f"written outside dest: {outside}"
    return dest


def test_unpacks_files_and_folders(box: Path) -> None:
    zip_path = make_zip(
        box / "m.zip",
        [
            ("train.py", b"print('hi')\n"),
            ("pkg/", b""),
            ("pkg/util.py", b"X = 1\n"),
            ("./data/config.yaml", b"a: 1\n"),
        ],
    )
    names = unpack_model(zip_path, box / "dest")
    assert names == ["train.py", "pkg/util.py", "data/config.yaml"]
    assert (box / "dest/train.py").read_bytes() == b"print('hi')\n"
    assert (box / "dest/pkg/util.py").read_bytes() == b"X = 1\n"
    assert (box / "dest/data/config.yaml").read_bytes() == b"a: 1\n"


def test_keeps_executable_bit_but_not_setuid(box: Path) -> None:
    zip_path = make_zip(
        box / "m.zip",
        [
            (unix_entry("run.sh", stat.S_IFREG | 0o4755), b"#!/bin/sh\necho ok\n"),
            (unix_entry("plain.txt", stat.S_IFREG | 0o644), b"text"),
        ],
    )
    unpack_model(zip_path, box / "dest")
    run = (box / "dest/run.sh").stat().st_mode
    plain = (box / "dest/plain.txt").stat().st_mode
    assert run & stat.S_IXUSR and not run & stat.S_ISUID
    assert not plain & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../evil.py", "path leaves the model folder"),
        ("pkg/../../evil.py", "path leaves the model folder"),
        ("..\\evil.py", "path leaves the model folder"),
        ("C:/evil.py", "drive letters are not allowed"),
        ("c:evil.py", "drive letters are not allowed"),
    ],
)
def test_rejects_paths_leaving_dest(box: Path, name: str, reason: str) -> None:
    zip_path = make_zip(box / "m.zip", [("ok.py", b"fine"), (name, b"evil")])
    dest = assert_rejected(box, zip_path, f"zip entry {name!r}: {reason}")
    assert not dest.exists() or all_files(dest) == set(), "validation must precede writing"


def test_rejects_absolute_path(box: Path, tmp_path: Path) -> None:
    target = tmp_path / "evil_absolute.py"
    zip_path = make_zip(box / "m.zip", [(str(target), b"evil")])
    assert_rejected(box, zip_path, f"zip entry {str(target)!r}: absolute paths are not allowed")
    assert not target.exists()


def test_rejects_symlink_entry(box: Path) -> None:
    zip_path = make_zip(box / "m.zip", [(unix_entry("link", stat.S_IFLNK | 0o777), b"/etc/passwd")])
    dest = assert_rejected(box, zip_path, "zip entry 'link': symbolic links are not allowed")
    assert not (dest / "link").exists() and not (dest / "link").is_symlink()


def test_rejects_other_special_files(box: Path) -> None:
    zip_path = make_zip(box / "m.zip", [(unix_entry("pipe", stat.S_IFIFO | 0o644), b"")])
    assert_rejected(box, zip_path, "zip entry 'pipe': only regular files and folders are allowed")


def test_a_symlink_already_in_dest_is_not_followed(box: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = box / "dest"
    dest.mkdir()
    (dest / "sub").symlink_to(outside)
    zip_path = make_zip(box / "m.zip", [("sub/evil.py", b"evil")])
    with pytest.raises(UnsafeZipError, match=r"'sub/evil\.py': path leaves the model folder"):
        unpack_model(zip_path, dest)
    assert list(outside.iterdir()) == []


def test_rejects_too_many_entries(box: Path) -> None:
    zip_path = make_zip(box / "m.zip", [(f"f{i}.txt", b"") for i in range(10_001)])
    dest = assert_rejected(box, zip_path, "zip has 10001 entries, more than the limit of 10000")
    assert not dest.exists()


def test_rejects_bomb_by_declared_size_before_writing(box: Path) -> None:
    # 8 MiB of zeros deflates to a few KiB; the header tells the truth.
    zip_path = make_zip(box / "m.zip", [("small.txt", b"x"), ("big.bin", bytes(8 * 2**20))])
    assert zip_path.stat().st_size < 64 * 2**10
    limits = ZipLimits(max_bytes=2**20)
    dest = assert_rejected(
        box, zip_path, "zip entry 'big.bin' unpacks to more than 1048576 bytes (limit)", limits
    )
    assert not dest.exists()


def _set_declared_size(zip_path: Path, name: str, size: int) -> None:
    """Overwrite an entry's uncompressed size in both its local and central headers."""
    with zipfile.ZipFile(zip_path) as zf:
        info = zf.getinfo(name)
    data = bytearray(zip_path.read_bytes())
    struct.pack_into("<I", data, info.header_offset + 22, size)  # local header
    central = data.find(b"PK\x01\x02")
    while struct.unpack_from("<I", data, central + 42)[0] != info.header_offset:
        central = data.find(b"PK\x01\x02", central + 4)
        assert central > 0, f"no central header for {name}"
    struct.pack_into("<I", data, central + 24, size)
    zip_path.write_bytes(bytes(data))


def test_rejects_headers_declaring_more_than_the_default_limit(box: Path) -> None:
    zip_path = make_zip(box / "m.zip", [(f"part{i}.bin", b"tiny") for i in range(5)])
    for i in range(5):
        _set_declared_size(zip_path, f"part{i}.bin", 2**30)
    assert_rejected(
        box, zip_path, "zip entry 'part4.bin' unpacks to more than 4294967296 bytes (limit)"
    )


def test_bomb_with_lying_header_is_stopped_and_cleaned_up(box: Path) -> None:
    zip_path = make_zip(box / "m.zip", [("ok.py", b"fine"), ("bomb.bin", bytes(16 * 2**20))])
    _set_declared_size(zip_path, "bomb.bin", 1000)
    dest = box / "dest"
    with pytest.raises(UnsafeZipError, match=r"^zip entry 'bomb.bin': corrupt data"):
        unpack_model(zip_path, dest, ZipLimits(max_bytes=10_000))
    # Never more than the declared bytes were written, and the partial unpack was removed.
    assert all_files(dest) == set()


def test_rejects_corrupt_entry_data_and_removes_what_it_wrote(box: Path) -> None:
    zip_path = make_zip(box / "m.zip", [("pkg/ok.py", b"fine"), ("data.txt", b"hello " * 1000)])
    with zipfile.ZipFile(zip_path) as zf:
        info = zf.getinfo("data.txt")
    raw = bytearray(zip_path.read_bytes())
    start = info.header_offset + 30 + len(info.filename)
    raw[start : start + 8] = b"\xff" * 8
    zip_path.write_bytes(bytes(raw))
    dest = box / "dest"
    with pytest.raises(UnsafeZipError, match=r"^zip entry 'data.txt': corrupt data"):
        unpack_model(zip_path, dest)
    assert all_files(dest) == set()


def test_rejects_garbage(box: Path) -> None:
    zip_path = box / "m.zip"
    zip_path.write_bytes(os.urandom(4096))
    with pytest.raises(UnsafeZipError, match=r"^not a valid zip file: .*m\.zip"):
        unpack_model(zip_path, box / "dest")
    assert not (box / "dest").exists()


def test_rejects_truncated_zip(box: Path) -> None:
    zip_path = make_zip(box / "m.zip", [("train.py", os.urandom(10_000))])
    zip_path.write_bytes(zip_path.read_bytes()[:5000])
    with pytest.raises(UnsafeZipError, match=r"^not a valid zip file"):
        unpack_model(zip_path, box / "dest")


def test_rejects_duplicate_entries(box: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicate
        zip_path = make_zip(box / "m.zip", [("train.py", b"one"), ("train.py", b"two")])
    dest = assert_rejected(box, zip_path, "zip entry 'train.py': appears more than once")
    assert not dest.exists()


def test_never_overwrites_a_file_already_in_dest(box: Path) -> None:
    dest = box / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    zip_path = make_zip(box / "m.zip", [("new.txt", b"new"), ("keep.txt", b"theirs")])
    with pytest.raises(UnsafeZipError, match=r"'keep\.txt': cannot create file: File exists"):
        unpack_model(zip_path, dest)
    assert (dest / "keep.txt").read_text() == "mine"
    assert all_files(dest) == {"keep.txt"}  # new.txt, written first, was removed again


def test_rejects_encrypted_entry(box: Path) -> None:
    zip_path = make_zip(box / "m.zip", [("secret.py", b"x")])
    with zipfile.ZipFile(zip_path) as zf:
        info = zf.getinfo("secret.py")
    raw = bytearray(zip_path.read_bytes())
    central = raw.find(b"PK\x01\x02")
    struct.pack_into("<H", raw, central + 8, info.flag_bits | 0x1)
    zip_path.write_bytes(bytes(raw))
    assert_rejected(box, zip_path, "zip entry 'secret.py': encrypted entries are not supported")
