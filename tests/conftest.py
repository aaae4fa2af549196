"""Shared pytest fixtures and paths.

Tests that read `../shared` (ML-1M, fixtures) skip cleanly when it is absent, so the suite
passes on a clean machine without it.

On a GPU the tests' closed-form tolerances (1e-5 and tighter) and bit-exact resume need full
float32 matmuls and deterministic reductions: JAX's default there is TF32 matmuls (relative
error ~1e-3) and atomics-based scatter-adds (run-to-run differences in the last bits); an H100
run of the suite without these settings failed 14 tests on exactly that. Both are no-ops on the
CPU. Set before jax is imported by any test module.

Speed: one persistent XLA compilation cache per test session (a temporary folder shared by the
xdist workers and the binaries the tests start, removed at the end), so a program that several
tests build compiles once. It keeps JAX's threshold (programs that took over 1 s to compile):
caching every program cost more in writes than it saved (docs/benchmarks.md). Tests count
traces, never compilations, so the cache changes no assertion. `JAX_DISABLE_MOST_OPTIMIZATIONS`
(default 1 here; set it to 0 to test the fully optimised programs) skips XLA's LLVM
optimisation: the same HLO programs, compiled in less time and run slower, which for the suite's
small arrays cuts its CPU time by about 30%. The tiny encoded and trained
workdirs are built once per session (under a file lock, by whichever worker asks first) and each
worker gets its own copy.
"""

import os
import pathlib
import shutil
import sys
import tempfile

import pytest

os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
os.environ["XLA_FLAGS"] = " ".join(
    filter(None, [os.environ.get("XLA_FLAGS", ""), "--xla_gpu_deterministic_ops=true"])
)

pytest_plugins = ("fake_chat_server",)  # the `serve` fixture (a local OpenAI-protocol server)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("LATENTCRS_SHARED", REPO_ROOT.parent / "shared"))
_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
_CACHE_KEY = pytest.StashKey[str]()


def pytest_configure(config):
    """In the controlling process (xdist workers inherit its environment): the session's
    compilation cache, unless the caller chose one."""
    if hasattr(config, "workerinput") or os.environ.get(_CACHE_ENV):
        return
    cache = tempfile.mkdtemp(prefix="latentcrs-jax-cache-")
    os.environ[_CACHE_ENV] = cache
    config.stash[_CACHE_KEY] = cache
    if "jax" in sys.modules:  # imported by a plugin before this hook: tell it directly
        sys.modules["jax"].config.update("jax_compilation_cache_dir", cache)


def pytest_unconfigure(config):
    cache = config.stash.get(_CACHE_KEY, None)
    if cache:
        shutil.rmtree(cache, ignore_errors=True)
        os.environ.pop(_CACHE_ENV, None)


def worker_env(**extra: str) -> dict[str, str]:
    """This environment without JAX's variables (but the suite's optimisation level), XLA_FLAGS
    or any cluster's start-up variables (a worker subprocess starts as one plain process unless
    `extra` says otherwise)."""
    prefixes = ("JAX_", "SLURM_", "OMPI_", "TPU_", "LATENTCRS_DISTRIBUTED")
    kept = ("JAX_DISABLE_MOST_OPTIMIZATIONS",)
    env = {k: v for k, v in os.environ.items() if k in kept or not k.startswith(prefixes)}
    env.pop("XLA_FLAGS", None)
    env.update(extra)
    return env


def shared_path(*parts: str) -> pathlib.Path:
    """Returns a path under ../shared, skipping the calling test when it does not exist."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not available on this machine")
    return path


def _built_once(tmp_path_factory, name: str, build) -> pathlib.Path:
    """The folder `build(path)` makes, built once per test session: the first xdist worker to
    ask builds it under a file lock, the others wait and reuse it. Never write into it."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above the workers' own
    done = root / name
    with FileLock(str(root / f"{name}.lock")):
        if not done.is_dir():
            partial = root / f"{name}.partial"
            shutil.rmtree(partial, ignore_errors=True)  # a build that failed half-way
            build(partial)
            partial.rename(done)
    return done


def _own_copy(tmp_path_factory, built: pathlib.Path) -> pathlib.Path:
    workdir = tmp_path_factory.mktemp(built.name) / "w"
    shutil.copytree(built, workdir)
    return workdir


def _encoded(tmp_path_factory) -> pathlib.Path:
    from configs import tiny
    from latentcrs_jax import pipeline

    return _built_once(
        tmp_path_factory,
        "tiny_encoded",
        lambda path: pipeline.run(tiny.get_config(), path, until="encode"),
    )


def _trained(tmp_path_factory) -> pathlib.Path:
    from configs import tiny
    from latentcrs_jax import pipeline

    def build(path):
        shutil.copytree(_encoded(tmp_path_factory), path)
        pipeline.run(tiny.get_config(), path, until="train")

    return _built_once(tmp_path_factory, "tiny_trained", build)


@pytest.fixture(scope="session")
def tiny_encoded_workdir(tmp_path_factory):
    """A workdir with the tiny config prepared, simulated and encoded (this worker's copy)."""
    return _own_copy(tmp_path_factory, _encoded(tmp_path_factory))


@pytest.fixture(scope="session")
def tiny_trained_workdir(tmp_path_factory):
    """The encoded workdir with the backbone and every EM plan trained, one seed, by
    `pipeline.run(..., until="train")` (this worker's copy)."""
    return _own_copy(tmp_path_factory, _trained(tmp_path_factory))
