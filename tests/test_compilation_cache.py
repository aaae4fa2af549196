"""The binaries' persistent compilation cache: `<workdir>/xla_cache` unless switched off or the
caller set JAX_COMPILATION_CACHE_DIR."""

import subprocess
import sys

from conftest import REPO_ROOT, worker_env

# A binary in miniature: the launch start-up around one jitted function whose result it writes
# into the workdir (a new workdir left with nothing but the lock and the cache is removed).
_BINARY = """
import pathlib
import jax, jax.numpy as jnp
from absl import flags
from launch import common

common.define_config_and_workdir(config_required=False)

hits = []
jax.monitoring.register_event_listener(
    lambda event, **kw: hits.append(event) if event.endswith("/cache_hits") else None
)

def main(argv):
    out = jax.jit(lambda x: x * 2 + 1)(jnp.arange(3)).tolist()
    (pathlib.Path(flags.FLAGS.workdir) / "out.txt").write_text(str(out))
    print("cache hits:", len(hits))

common.run(main)
"""


def _run(tmp_path, *args, binary=_BINARY, **env):
    return subprocess.run(
        [sys.executable, "-c", binary, f"--workdir={tmp_path / 'w'}", *args],
        cwd=REPO_ROOT,
        env=worker_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _entries(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _ok(proc, tmp_path) -> int:
    """Checks the run and returns how many programs it loaded from a persistent cache."""
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "w" / "out.txt").read_text() == "[1, 3, 5]"
    return int(proc.stdout.split("cache hits:")[1])


def test_compiled_programs_are_kept_in_the_workdir(tmp_path):
    assert _ok(_run(tmp_path), tmp_path) == 0
    entries = _entries(tmp_path / "w" / "xla_cache")
    assert any(name.startswith("jit_") for name in entries), entries
    assert _ok(_run(tmp_path), tmp_path) >= 1  # A second run loads the program
    assert _entries(tmp_path / "w" / "xla_cache") == entries  # and writes nothing new.


def test_the_flag_switches_it_off(tmp_path):
    for _ in range(2):
        assert _ok(_run(tmp_path, "--nocompilation_cache"), tmp_path) == 0
    assert not (tmp_path / "w" / "xla_cache").exists()


def test_the_callers_cache_directory_wins(tmp_path):
    own = {"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "own")}
    _ok(_run(tmp_path, **own, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0"), tmp_path)
    assert not (tmp_path / "w" / "xla_cache").exists()
    assert any(name.startswith("jit_") for name in _entries(tmp_path / "own"))


def test_a_new_workdir_of_a_failed_run_is_removed_with_its_cache(tmp_path):
    failing = _BINARY.replace(
        '(pathlib.Path(flags.FLAGS.workdir) / "out.txt").write_text(str(out))',
        'raise common.UserInputError(f"bad input after computing {out}")',
    )
    proc = _run(tmp_path, binary=failing)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == "error: bad input after computing [1, 3, 5]"
    assert not (tmp_path / "w").exists()
