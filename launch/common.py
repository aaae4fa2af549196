"""Start-up shared by every binary: flags, the workdir lock, device logging and one-line errors.

Every failure a user can cause ends as one line `error: <where>: <what>` on stderr and exit
status 1 (130 on Ctrl-C): flag and config-file errors before anything is imported or started,
then `UserInputError`s and OS errors (a missing file, a full disk) from the binary itself.
Other exceptions are bugs: they too end as one line, asking for `--traceback` (or
LATENTCRS_TRACEBACK=1), which prints the full Python traceback instead.
"""

import atexit
import importlib.util
import os
import pathlib
import shutil
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from latentcrs_jax.errors import UserInputError

_TRACEBACK = flags.DEFINE_bool(
    "traceback", False, "Print the Python traceback of an error (also: LATENTCRS_TRACEBACK=1)."
)
_COMPILATION_CACHE = flags.DEFINE_bool(
    "compilation_cache",
    True,
    "Keep compiled XLA programs in <workdir>/xla_cache, so that later EM seeds and phases, "
    "reruns and resumed runs load them instead of compiling again (the same programs: results "
    "are bit for bit those without it). JAX_COMPILATION_CACHE_DIR, when set, is used instead.",
)
XLA_CACHE_DIR = "xla_cache"  # Under the workdir.
_LOCKS = []  # Held for the life of the process; the kernel releases them at exit.


def _tracebacks_wanted(argv=None) -> bool:
    if os.environ.get("LATENTCRS_TRACEBACK", "") not in ("", "0"):
        return True
    if argv is not None:
        return any(a in ("--traceback", "-traceback") for a in argv)
    return bool(flags.FLAGS.is_parsed() and _TRACEBACK.value)


def fail(message: str, argv=None, status: int = 1):
    """Exits with `error: <message>` (the current traceback too when tracebacks are wanted)."""
    if _tracebacks_wanted(argv) and sys.exc_info()[0] is not None:
        traceback.print_exc()
    sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
    sys.stderr.flush()
    sys.exit(status)


# ------------------------------------------------------------------------------------ flags
def _config_args(argv) -> list[str]:
    """The values of every `--config=...` argument."""
    values = []
    for i, arg in enumerate(argv):
        if arg.startswith(("--config=", "-config=")):
            values.append(arg.split("=", 1)[1])
        elif arg in ("--config", "-config") and i + 1 < len(argv):
            values.append(argv[i + 1])
    return values


def _field_error(argv, error: BaseException) -> str | None:
    """Names the `--config.x.y=v` override that points at no field of the config, if any."""
    overrides = [a for a in argv if a.lstrip("-").startswith("config.")]
    paths = _config_args(argv)
    if not overrides or not paths:
        return None
    path, *arg = paths[-1].split(":", 1)
    try:
        spec = importlib.util.spec_from_file_location("latentcrs_config_check", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.get_config(*arg)
    except Exception:  # noqa: BLE001 - the file's own error is reported elsewhere.
        return None
    for arg in overrides:
        name = arg.lstrip("-").split("=", 1)[0]
        node, where = config, "config"
        for part in name.split(".")[1:]:
            keys = list(node.keys()) if hasattr(node, "keys") else None
            if keys is None:
                return f"{arg}: {where} is a {type(node).__name__}, not a section"
            if part not in keys:
                return f"{arg}: {where} has no field {part!r} (its fields: {', '.join(keys)})"
            node, where = node[part], f"{where}.{part}"
    return None


def _config_file_error(text: str) -> str:
    """The last line of the traceback config_flags puts into its message."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else text


def parse_flags(argv):
    """absl's flag parsing with one-line errors (missing or broken config files included)."""
    for value in _config_args(argv):
        path = pathlib.Path(value.split(":", 1)[0])
        if not path.is_file():
            fail(f"--config={value}: no such file {str(path)!r}", argv)
    try:
        rest = flags.FLAGS(argv)
    except SyntaxError as e:
        fail(f"{e.filename}:{e.lineno}: {e.msg} (in the config file)", argv)
    except flags.Error as e:
        text = str(e)
        if "Error whilst parsing config file" in text:
            fail(f"--config={_config_args(argv)[-1]}: {_config_file_error(text)}", argv)
        if text.startswith("Unknown command line flag 'config.") and not _config_args(argv):
            override = next(a for a in argv if a.lstrip("-").startswith("config."))
            fail(f"{override}: an override needs --config=configs/<name>.py as well", argv)
        fail(_field_error(argv, e) or text.replace("flag --config=None: ", ""), argv)
    except Exception as e:  # noqa: BLE001 - an override of a field the config lacks.
        message = _field_error(argv, e)
        if message is None and _config_args(argv):
            message = f"--config={_config_args(argv)[-1]}: {type(e).__name__}: {e}"
        fail(message or f"{type(e).__name__}: {e}", argv)
    if "config" in flags.FLAGS:
        try:
            value = flags.FLAGS["config"].value
            if value is not None:
                value.get("data")  # A load error config_flags holds back is raised now.
        except OSError as e:
            fail(f"--config: {_config_file_error(str(e))}", argv)
    return rest


# ---------------------------------------------------------------------------------- workdir
def _workdir_flag() -> pathlib.Path | None:
    """`--workdir` when the binary defines it and it is set."""
    if "workdir" not in flags.FLAGS or not flags.FLAGS.workdir:
        return None
    return pathlib.Path(flags.FLAGS.workdir)


def _lock_workdir(create: bool) -> None:
    """Takes the `--workdir` lock (see latentcrs_jax/workdir_lock.py) when the binary has one."""
    from latentcrs_jax import workdir_lock

    workdir = _workdir_flag()
    if workdir is None:
        return
    new = not workdir.exists()
    lock = workdir_lock.acquire(workdir, create=create)
    _LOCKS.append(lock)

    def release():
        try:  # A new workdir of a run that failed its checks is removed again.
            left = {p.name for p in workdir.iterdir()}
            if new and left <= {workdir_lock.LOCK_FILE, XLA_CACHE_DIR}:
                shutil.rmtree(workdir / XLA_CACHE_DIR, ignore_errors=True)
                lock.path.unlink()
                workdir.rmdir()
        except OSError:
            pass
        lock.release()  # Clears the holder's details; a kill leaves them, harmlessly.

    atexit.register(release)


def _use_compilation_cache() -> None:
    """Points JAX's persistent compilation cache at `<workdir>/xla_cache` (see the flag)."""
    if not _COMPILATION_CACHE.value or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    workdir = _workdir_flag()
    if workdir is None:
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", str(workdir / XLA_CACHE_DIR))
    # Every program, not only those over JAX's default 1 s: an EM phase's are mostly shorter,
    # and those are what the later seeds reuse.
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def run(main, writes_workdir: bool = True, creates_workdir: bool = True) -> None:
    """`app.run(main)` with one-line errors and, for binaries that write one, the workdir lock.

    Args:
      main: the binary's `main(argv)`.
      writes_workdir: take `--workdir`'s lock first (read-only commands pass False).
      creates_workdir: a missing workdir is created (False: it is an error; commands that
        work on a trained workdir).
    """

    def wrapped(argv):
        try:
            # With one process the lock comes before JAX starts; with several, process 0 (the
            # one that writes) takes it once the processes know their ranks.
            from latentcrs_jax.training import cluster_env

            try:
                distributed_run = cluster_env.plan(os.environ) is not None
            except ValueError as e:
                raise UserInputError(f"environment: {e}") from e
            if writes_workdir and not distributed_run:
                _lock_workdir(creates_workdir)
            if distributed_run:
                import jax

                from latentcrs_jax.training import distributed

                try:
                    distributed.maybe_initialize()
                except ValueError as e:
                    raise UserInputError(f"environment: {e}") from e
                if writes_workdir and jax.process_index() == 0:
                    _lock_workdir(creates_workdir)
            if writes_workdir:
                _use_compilation_cache()
            return main(argv)
        except UserInputError as e:
            fail(str(e))
        except app.UsageError as e:
            fail(f"usage: {e} (--help lists the flags)")
        except KeyboardInterrupt:
            fail("interrupted", status=130)
        except OSError as e:
            where = e.filename if getattr(e, "filename", None) else type(e).__name__
            fail(f"{where}: {e.strerror or e}")
        except Exception as e:  # noqa: BLE001 - a bug: one line, the traceback on request.
            fail(f"internal error ({type(e).__name__}: {e}); rerun with --traceback and report it")

    app.run(wrapped, flags_parser=parse_flags)


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


def define_config_and_workdir(config_required: bool = True):
    """Defines `--config` (with `--config.x=...` overrides) and `--workdir`.

    Args:
      config_required: False for commands that read a trained workdir: without `--config`
        they take the config recorded in it (`config_for_reading`).
    """
    help_text = "Experiment config file."
    if not config_required:
        help_text += " Default: the config recorded in --workdir."
    config = config_flags.DEFINE_config_file("config", None, help_text)
    workdir = flags.DEFINE_string("workdir", None, "Directory for this experiment's outputs.")
    flags.mark_flags_as_required(["config", "workdir"] if config_required else ["workdir"])
    return config, workdir


def config_for_reading(config, workdir: str):
    """The config of a command that reads `workdir`: `--config` if given, else the recorded one.

    Raises:
      UserInputError: the workdir does not exist, or has no recorded config and none was given.
    """
    from latentcrs_jax import workdir_config

    return workdir_config.config_for_reading(config, workdir)


def run_pipeline_until(config, workdir: str, until: str | None) -> None:
    """Runs the pipeline's stages up to `until` (all when None), printing each summary.

    The LLM endpoints are tested first, before JAX starts, so that an unreachable one is
    reported within seconds.
    """
    from latentcrs_jax import preflight

    preflight.check_endpoints(config, preflight.stage_names(until))
    from latentcrs_jax import pipeline

    log_devices()
    pipeline.run(config, workdir, emit=print, until=until, check_endpoints=False)
