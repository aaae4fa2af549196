"""Every failure a user can cause ends a binary as one `error: ...` line and exit status 1.

Flags and config files are checked before anything starts; commands that read a trained
workdir refuse one that does not exist and take the config recorded in it.
"""

import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from configs import tiny
from latentcrs_jax import workdir_config


def _launch(module, *args):
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def _one_line_error(proc) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and proc.stderr.strip().splitlines()[-1] == errors[0]
    return errors[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--config=configs/tiny.py", "--config.em.nonexistent=1"],
            r"^error: --config\.em\.nonexistent=1: config\.em has no field 'nonexistent' "
            r"\(its fields: batch_size, ",
        ),
        (["--config=configs/tiny.py", "--config.nosuch.x=1"], r"config has no field 'nosuch'"),
        (["--config=configs/nope.py"], r"^error: --config=configs/nope\.py: no such file"),
        (["--config=configs/tiny.py:bogus"], r"tiny\.py:bogus: ValueError: unknown variant"),
        (["--config=configs/tiny.py", "--config.em.batch_size=abc"], r"batch_size=abc: invalid"),
        ([], r"^error: Flag --config must have a value"),
        (["--config.em.batch_size=3"], r"batch_size=3: an override needs --config="),
        (["--config=configs/tiny.py", "--config.em.batch_size=0"], r"batch_size=0 must be >= 1"),
    ],
)
def test_flag_and_config_errors(tmp_path, args, message):
    proc = _launch("launch.run", *args, f"--workdir={tmp_path / 'w'}")
    assert __import__("re").search(message, _one_line_error(proc))
    assert not (tmp_path / "w").exists()  # Nothing started, or the new workdir is removed.


def test_a_broken_config_file_names_its_line(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n    pass\n")
    proc = _launch("launch.prepare", f"--config={broken}", f"--workdir={tmp_path / 'w'}")
    assert _one_line_error(proc) == f"error: {broken}:1: invalid syntax (in the config file)"


def test_tracebacks_on_request(tmp_path):
    args = ["--config=configs/tiny.py", "--config.em.nonexistent=1", f"--workdir={tmp_path}"]
    proc = _launch("launch.run", *args, "--traceback")
    assert proc.returncode == 1 and "Traceback (most recent call last)" in proc.stderr


@pytest.mark.parametrize("module", ["launch.report", "launch.chat", "launch.evaluate"])
def test_reading_commands_refuse_a_missing_workdir(tmp_path, module):
    proc = _launch(module, "--config=configs/tiny.py", f"--workdir={tmp_path / 'typo'}")
    assert "no such workdir" in _one_line_error(proc)
    assert not (tmp_path / "typo").exists()


def test_reading_commands_take_the_recorded_config(tmp_path):
    proc = _launch("launch.report", f"--workdir={tmp_path}")
    assert "no recorded config here; pass --config" in _one_line_error(proc)
    workdir_config.record(tiny.get_config(), tmp_path)
    proc = _launch("launch.report", f"--workdir={tmp_path}")
    assert proc.returncode == 0, proc.stderr


def test_bad_data_is_one_line_naming_file_and_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "interactions.csv").write_bytes(b"user_id,item_id\nu1,i1\nu1,caf\xe9\n")
    (data / "items.csv").write_bytes(b"item_id,title\n")
    args = [
        "--config=configs/tiny.py",
        "--config.data.reader=generic",
        f"--config.data.data_dir={data}",
        f"--workdir={tmp_path / 'w'}",
    ]
    proc = _launch("launch.prepare", *args)
    assert _one_line_error(proc) == (
        f"error: {data / 'interactions.csv'}:3: not valid UTF-8 (byte 0xe9 at byte 7 of the "
        "line); save the file as UTF-8"
    )


def test_recorded_config_round_trips(tmp_path):
    from configs import ml1m

    for config in (tiny.get_config(), ml1m.get_config("ce,faithful")):
        workdir_config.record(config, tmp_path)
        loaded = workdir_config.load(tmp_path)
        assert loaded == config and isinstance(loaded.em_seeds, tuple)
