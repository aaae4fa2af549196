"""The prepare binary end to end: the statistics table, the export, one-line errors."""

import subprocess
import sys

from conftest import REPO_ROOT


def _prepare(*args):
    return subprocess.run(
        [sys.executable, "-m", "launch.prepare", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_prepare_prints_table_and_exports(tmp_path):
    out = tmp_path / "seqs.tsv"
    proc = _prepare(
        "--config=configs/tiny.py", f"--workdir={tmp_path}", f"--export_sequences={out}"
    )
    assert proc.returncode == 0, proc.stderr
    assert "users                                    40" in proc.stdout
    assert "train samples (raw + augmented)" in proc.stdout
    lines = out.read_text().splitlines()
    assert len(lines) == 40 and lines[0].startswith("1\t")


def test_prepare_bad_input_is_one_clear_line(tmp_path):
    proc = _prepare(
        "--config=configs/ml1m.py",
        f"--config.data.data_dir={tmp_path / 'missing'}",
        f"--workdir={tmp_path}",
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "missing: data directory not found" in proc.stderr
    assert "Traceback" not in proc.stderr
