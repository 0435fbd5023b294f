"""CMRFoundationLib.files: atomic writes and JSON in and out with errors that name the file."""

import math
import os

import pytest

from CMRFoundationLib.files import atomic_write, read_json, write_json


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")

    def half_then_fail(temp):
        temp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.json"]


def test_a_private_temporary_file_becomes_readable(tmp_path):
    path = tmp_path / "weights.bin"

    def private(temp):
        temp.write_bytes(b"x")
        os.chmod(temp, 0o600)  # as safetensors writes

    old = os.umask(0o022)
    try:
        atomic_write(path, private)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_json_round_trip_and_nan_refused(tmp_path):
    path = write_json(tmp_path / "a.json", {"x": [1, 2.5], "name": "é"})
    assert read_json(path, "test file") == {"x": [1, 2.5], "name": "é"}
    with pytest.raises(ValueError, match=r"b\.json: cannot be written as JSON"):
        write_json(tmp_path / "b.json", {"x": math.nan})
    assert not (tmp_path / "b.json").exists()


class _Custom(ValueError):
    pass


def test_unreadable_json_names_the_file(tmp_path):
    with pytest.raises(_Custom, match=r"missing\.json: cannot read the test file \(No such file"):
        read_json(tmp_path / "missing.json", "test file", _Custom)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON"):
        read_json(tmp_path / "bad.json", "test file")
    (tmp_path / "latin.json").write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(ValueError, match=r"latin\.json: not valid JSON"):
        read_json(tmp_path / "latin.json", "test file")
