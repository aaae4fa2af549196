r"""Scaling benchmark: time and peak memory of each stage against users and items (not a test).

  python -m launch.benchmark_scale --config=configs/ml_latest_small.py \
      --sizes=10000x10000,30000x10000,10000x30000 --out_dir=/tmp/scale_bench

For each USERSxITEMS size it synthesizes a dataset, then runs every stage of
latentcrs_jax/scale_benchmark.py in a child process of its own (this command with --stage)
under --stage_timeout seconds, recording the child's figures and its peak RSS (the text
encoder's cost per item does not depend on the sizes: it runs for the first size only). Writes
OUT_DIR/scale.json (sizes, stages, fitted exponents, CPU, commit), OUT_DIR/scale.md (the table)
and OUT_DIR/scale.png (log-log time against users and against items).

  python -m launch.benchmark_scale --merge=a/scale.json,b/scale.json --out_dir=/tmp/scale_all

writes the same three files for the sizes of several finished runs together (one fit over
all of them), running nothing.
"""

import contextlib
import json
import os
import pathlib
import platform
import signal
import subprocess
import sys
import time

from absl import flags, logging
from ml_collections import config_flags

from latentcrs_jax import fileio, scale_benchmark
from latentcrs_jax.errors import UserInputError
from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config (model sizes).")
_SIZES = flags.DEFINE_list("sizes", ["10000x10000"], "USERSxITEMS sizes to run.")
_STAGES = flags.DEFINE_list("stages", list(scale_benchmark.STAGES), "Stages to run.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output folder (data, workdirs, JSON, plot).")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps per training pass (extrapolated).")
_MEAN_LENGTH = flags.DEFINE_float("mean_length", 20.0, "Mean interactions per user.")
_TIMEOUT = flags.DEFINE_integer("stage_timeout", 300, "Seconds before a stage is killed.")
_STAGE = flags.DEFINE_string("stage", None, "Internal: run this one stage and write --result.")
_USERS = flags.DEFINE_integer("users", 0, "Internal: the stage's users.")
_ITEMS = flags.DEFINE_integer("items", 0, "Internal: the stage's items.")
_RESULT = flags.DEFINE_string("result", None, "Internal: the stage's JSON result file.")
_MERGE = flags.DEFINE_list("merge", [], "scale.json files of finished runs to report together.")
flags.mark_flags_as_required(["out_dir"])


def _parse_size(text: str) -> tuple[int, int]:
    try:
        users, items = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise UserInputError(f"--sizes: {text!r} is not USERSxITEMS, e.g. 10000x10000") from e
    return users, items


def _paths(users: int, items: int) -> tuple[pathlib.Path, pathlib.Path]:
    root = pathlib.Path(_OUT_DIR.value) / f"{users}x{items}"
    return root / "csv", root / "work"


def _run_child(stage: str, users: int, items: int) -> dict:
    """Runs one stage in a child process; its result plus peak RSS (from wait4) and status."""
    data_dir, workdir = _paths(users, items)
    result = workdir.parent / f"{stage}.json"
    result.unlink(missing_ok=True)
    argv = [a for a in sys.argv[1:] if a.lstrip("-").startswith("config")]
    cmd = [sys.executable, "-m", "launch.benchmark_scale", *argv, f"--out_dir={_OUT_DIR.value}",
           f"--stage={stage}", f"--users={users}", f"--items={items}", f"--result={result}",
           f"--steps={_STEPS.value}", f"--mean_length={_MEAN_LENGTH.value}"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, start_new_session=True)
    deadline = t0 + _TIMEOUT.value
    status = "ok"
    try:
        while True:
            pid, code, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                status = f"killed after {_TIMEOUT.value} s"
                pid, code, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
    except BaseException:  # Ctrl-C or an error here: the child (own session) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise
    proc.returncode = os.waitstatus_to_exitcode(code)
    out = json.loads(result.read_text()) if result.is_file() else {}
    if status == "ok" and proc.returncode:
        status = f"failed (exit {proc.returncode})"
    out.update(
        status=status,
        process_s=time.perf_counter() - t0,
        peak_rss_gib=usage.ru_maxrss / 2**20,  # KiB on Linux
    )
    logging.info("%dx%d %s: %s", users, items, stage, out)
    return out


def _machine() -> dict:
    def run(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
        except OSError:
            return ""

    model = [
        ln.split(":", 1)[1].strip() for ln in run(["lscpu"]).splitlines() if "Model name" in ln
    ]
    return {
        "cpu": model[0] if model else platform.processor(),
        "cores": os.cpu_count(),
        "commit": run(["git", "rev-parse", "HEAD"]).strip(),
    }


def main(argv):
    del argv
    if _STAGE.value:  # a child: one stage of one size
        data_dir, workdir = _paths(_USERS.value, _ITEMS.value)
        kwargs = {"mean_length": _MEAN_LENGTH.value} if _STAGE.value == "synthesize" else {}
        size = (_USERS.value, _ITEMS.value, _STEPS.value)
        out = scale_benchmark.run_stage(
            _STAGE.value, _CONFIG.value, data_dir, workdir, *size, **kwargs
        )
        fileio.write_text(_RESULT.value, json.dumps(out) + "\n")
        return
    out_dir = pathlib.Path(_OUT_DIR.value)
    if _MERGE.value:
        reports = []
        for path in _MERGE.value:
            try:
                reports.append(json.loads(pathlib.Path(path).read_text()))
            except (OSError, ValueError) as e:
                raise UserInputError(f"--merge: {path}: {e}") from e
        rows = [row for report in reports for row in report["sizes"]]
        machine, command = reports[0]["machine"], [r["command"] for r in reports]
        _write_report(out_dir, rows, machine, command, final=True)
        return
    if _CONFIG.value is None:
        raise UserInputError("--config is required (or --merge)")
    unknown = set(_STAGES.value) - set(scale_benchmark.STAGES)
    if unknown:
        raise UserInputError(f"--stages: unknown {sorted(unknown)}; use {scale_benchmark.STAGES}")
    rows = []
    command = " ".join(["python -m launch.benchmark_scale", *sys.argv[1:]])
    for i, size in enumerate(_SIZES.value):
        users, items = _parse_size(size)
        row = {"users": users, "items": items, "stages": {}}
        rows.append(row)
        for stage in scale_benchmark.STAGES:
            if stage in _STAGES.value and (stage != "encode" or len(rows) == 1):
                row["stages"][stage] = _run_child(stage, users, items)
        _write_report(out_dir, rows, _machine(), command, final=i == len(_SIZES.value) - 1)


def _write_report(out_dir: pathlib.Path, rows: list[dict], machine, command, *, final: bool):
    """scale.json after every size; the table and the plot at the end."""
    exponents = {
        name: scale_benchmark.fit_exponents(pts)
        for name, pts in scale_benchmark.figures(rows).items()
    }
    report = {"machine": machine, "command": command, "sizes": rows, "exponents": exponents}
    fileio.write_text(out_dir / "scale.json", json.dumps(report, indent=1) + "\n")
    if not final:
        return
    fileio.write_text(out_dir / "scale.md", scale_benchmark.markdown(rows, exponents))
    scale_benchmark.plot(rows, out_dir / "scale.png")
    print(json.dumps(exponents, indent=1))
    print(f"written: {out_dir}/scale.json, scale.md (table), scale.png (plot)")


if __name__ == "__main__":
    common.run(main, writes_workdir=False)
