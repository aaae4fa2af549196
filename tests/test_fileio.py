"""Atomic writes: the outputs get the modes the process's umask gives any new file."""

import os
import stat

import pytest

from latentcrs_jax import fileio


@pytest.fixture(params=[0o022, 0o002, 0o077])
def mask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_umask_is_read_without_changing_it(mask):
    assert fileio.umask() == mask
    assert fileio.umask() == mask and os.umask(mask) == mask


def test_written_files_and_directories_follow_the_umask(tmp_path, mask):
    fileio.write_json(tmp_path / "sub" / "manifest.json", {"a": 1})
    with fileio.atomic_directory(tmp_path / "data") as d:
        (d / "x.txt").write_text("x")
    plain = tmp_path / "plain.txt"
    plain.write_text("as open() makes it")
    assert _mode(tmp_path / "sub" / "manifest.json") == 0o666 & ~mask == _mode(plain)
    assert _mode(tmp_path / "data") == 0o777 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "plain.txt", "sub"]
