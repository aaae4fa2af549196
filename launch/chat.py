r"""Chat with a trained workdir: pick a user or liked titles, then ask for recommendations.

  python -m launch.chat --workdir=workdirs/mls   # the config recorded in the workdir
  printf '/like Alien; Heat (1995)\nsomething tense from the 90s, no horror\nnot these\n' \
      | python -m launch.chat --config=configs/tiny.py --workdir=/tmp/tiny

Reads lines from stdin (a terminal or a pipe) until /quit or end of input; /help lists the
commands. It takes no workdir lock. The library (`latentcrs_jax/conversation/chat.py`)
does the work.
"""

import io
import sys

from latentcrs_jax.conversation import chat
from launch import common

_CONFIG, _WORKDIR = common.define_config_and_workdir(config_required=False)


def main(argv):
    del argv
    config = common.config_for_reading(_CONFIG.value, _WORKDIR.value)
    common.log_devices()
    session = chat.ChatSession.from_workdir(config, _WORKDIR.value)
    interactive = sys.stdin.isatty()
    # Bytes that are not UTF-8 read as U+FFFD (which the chat ignores), never as an error.
    lines = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
    chat.run_chat(session, lines, sys.stdout.write, prompt="> " if interactive else "")
    sys.stdout.flush()


if __name__ == "__main__":
    common.run(main, writes_workdir=False)
