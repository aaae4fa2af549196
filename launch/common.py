"""Start-up shared by every binary: flags, device logging and one-line user errors."""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from latentcrs_jax.errors import UserInputError


def run(main) -> None:
    """`app.run(main)`, printing UserInputError as 'error: ...' (exit 1), no traceback."""

    def wrapped(argv):
        from latentcrs_jax.training import distributed

        distributed.maybe_initialize()
        try:
            return main(argv)
        except UserInputError as e:
            logging.error("%s", e)
            sys.exit(f"error: {e}")

    app.run(wrapped)


def log_devices() -> None:
    """Logs the JAX process and device counts (imports jax lazily)."""
    import jax

    logging.info(
        "JAX process %d/%d, %d local / %d global devices: %s",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        jax.devices()[0].device_kind,
    )


def define_config_and_workdir():
    """Defines the `--config` (with `--config.x=...` overrides) and `--workdir` flags."""
    config = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
    workdir = flags.DEFINE_string("workdir", None, "Directory for this experiment's outputs.")
    flags.mark_flags_as_required(["config", "workdir"])
    return config, workdir


def run_pipeline_until(config, workdir: str, until: str | None) -> None:
    """Runs the pipeline's stages up to `until` (all when None), printing each summary."""
    from latentcrs_jax import pipeline

    log_devices()
    pipeline.run(config, workdir, emit=print, until=until)
