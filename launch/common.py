"""Start-up shared by every binary: flags, device logging and one-line user errors."""

import sys

from absl import app, logging

from latentcrs_jax.errors import UserInputError


def run(main) -> None:
    """`app.run(main)`, printing UserInputError as 'error: ...' (exit 1), no traceback."""

    def wrapped(argv):
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
