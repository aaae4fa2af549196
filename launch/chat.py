r"""Chat with a trained workdir: pick a user or liked titles, then ask for recommendations.

  python -m launch.chat --config=configs/ml_latest_small.py --workdir=workdirs/mls
  printf '/like Alien; Heat (1995)\nsomething tense from the 90s, no horror\nnot these\n' \
      | python -m launch.chat --config=configs/tiny.py --workdir=/tmp/tiny

Reads lines from stdin (a terminal or a pipe) until /quit or end of input; /help lists the
commands. The library (`latentcrs_jax/conversation/chat.py`) does the work.
"""

import sys

from latentcrs_jax.conversation import chat
from launch import common

_CONFIG, _WORKDIR = common.define_config_and_workdir()


def main(argv):
    del argv
    common.log_devices()
    session = chat.ChatSession.from_workdir(_CONFIG.value, _WORKDIR.value)
    interactive = sys.stdin.isatty()
    chat.run_chat(session, sys.stdin, sys.stdout.write, prompt="> " if interactive else "")
    sys.stdout.flush()


if __name__ == "__main__":
    common.run(main)
