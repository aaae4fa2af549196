"""Shared pytest fixtures and paths.

Tests that read `../shared` (ML-1M, fixtures) skip cleanly when it is absent, so the suite
passes on a clean machine without it.

On a GPU the tests' closed-form tolerances (1e-5 and tighter) and bit-exact resume need full
float32 matmuls and deterministic reductions: JAX's default there is TF32 matmuls (relative
error ~1e-3) and atomics-based scatter-adds (run-to-run differences in the last bits); an H100
run of the suite without these settings failed 14 tests on exactly that. Both are no-ops on the
CPU. Set before jax is imported by any test module.
"""

import os
import pathlib

import pytest

os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
os.environ["XLA_FLAGS"] = " ".join(
    filter(None, [os.environ.get("XLA_FLAGS", ""), "--xla_gpu_deterministic_ops=true"])
)

pytest_plugins = ("fake_chat_server",)  # the `serve` fixture (a local OpenAI-protocol server)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("LATENTCRS_SHARED", REPO_ROOT.parent / "shared"))


def worker_env(**extra: str) -> dict[str, str]:
    """This environment without JAX's variables, XLA_FLAGS or any cluster's start-up variables
    (a worker subprocess starts as one plain process unless `extra` says otherwise)."""
    prefixes = ("JAX_", "SLURM_", "OMPI_", "TPU_", "LATENTCRS_DISTRIBUTED")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.pop("XLA_FLAGS", None)
    env.update(extra)
    return env


def shared_path(*parts: str) -> pathlib.Path:
    """Returns a path under ../shared, skipping the calling test when it does not exist."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not available on this machine")
    return path


@pytest.fixture(scope="session")
def tiny_encoded_workdir(tmp_path_factory):
    """A workdir with the tiny config prepared, simulated and encoded (built once per worker)."""
    from configs import tiny
    from latentcrs_jax import pipeline

    workdir = tmp_path_factory.mktemp("tiny_encoded")
    pipeline.run(tiny.get_config(), workdir, until="encode")
    return workdir


@pytest.fixture(scope="session")
def tiny_trained_workdir(tiny_encoded_workdir, tmp_path_factory):
    """A copy of `tiny_encoded_workdir` with the backbone and every EM plan trained (one seed)."""
    import shutil

    from configs import tiny
    from latentcrs_jax import pipeline

    workdir = tmp_path_factory.mktemp("tiny_trained") / "w"
    shutil.copytree(tiny_encoded_workdir, workdir)
    pipeline.run(tiny.get_config(), workdir, until="train")
    return workdir
