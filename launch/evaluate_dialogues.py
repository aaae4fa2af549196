r"""Evaluate every trained system on human dialogues (ReDial's schema or the generic format).

  python -m launch.evaluate_dialogues --workdir=workdirs/mls --dialogues=train_data.jsonl \
      [--movies=movies_with_mentions.csv] [--format=redial|generic] [--config=configs/...]

No training: the workdir must be trained (python -m launch.run); without --config it takes the
config recorded in it. Prints the coverage and the tables; writes
`<workdir>/eval/dialogues/<name>.{md,json}` (name: the file's, or --name).
The library (`latentcrs_jax/dialogues/`) documents the formats and the protocol.
"""

from absl import flags

from latentcrs_jax.dialogues import readers
from latentcrs_jax.dialogues import stage as dialogues_stage
from launch import common

_CONFIG, _WORKDIR = common.define_config_and_workdir(config_required=False)
_DIALOGUES = flags.DEFINE_string("dialogues", None, "JSON-lines file, one conversation a line.")
_MOVIES = flags.DEFINE_string("movies", None, "ReDial movies CSV: movieId,movieName,nbMentions.")
_FORMAT = flags.DEFINE_enum("format", "redial", readers.FORMATS, "Format of --dialogues.")
_NAME = flags.DEFINE_string("name", None, "Report name (default: the file name).")
_SKIP = flags.DEFINE_bool("skip_bad_lines", False, "Skip (and count) malformed lines.")
_BATCH = flags.DEFINE_integer("batch_size", 256, "Contexts per scoring call.")
flags.mark_flag_as_required("dialogues")


def main(argv):
    del argv
    config = common.config_for_reading(_CONFIG.value, _WORKDIR.value)
    common.log_devices()
    md, _ = dialogues_stage.run(
        config,
        _WORKDIR.value,
        _DIALOGUES.value,
        fmt=_FORMAT.value,
        movies=_MOVIES.value,
        name=_NAME.value,
        skip_bad_lines=_SKIP.value,
        batch_size=_BATCH.value,
    )
    print(md)


if __name__ == "__main__":
    common.run(main, writes_workdir=False)  # Its outputs: eval/dialogues and cache shards.
