"""What every entry point shares: the process set-up, quiet third-party output, and user mistakes
that end in one line on stderr with exit status 1.

Entry points import the heavy libraries (jax, flax, the models) inside main(), so that --help and
flag errors answer at once.
"""

from __future__ import annotations

import logging
import sys
from typing import Callable
import warnings

from absl import app
from absl import flags

from common import runtime
from common.errors import UserError


def quiet_third_party_output() -> None:
  """Silences messages a user cannot act on: pydub's missing-ffmpeg warning (note_seq imports
  pydub; WAV rendering here never uses ffmpeg) and jax's note that it found no TPU."""
  warnings.filterwarnings('ignore', message="Couldn't find ffmpeg or avconv", category=RuntimeWarning)
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)


def _fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(1)


def _parse_flags(argv: list[str]) -> list[str]:
  # Config files are loaded while flags are parsed, so their errors must be caught here too.
  try:
    return flags.FLAGS(argv)
  except UserError as e:
    _fail(str(e))
  except flags.Error as e:
    _fail(f'{e}\nTry --helpfull for the list of flags.')
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # e.g. --config.no_such_key=1 or --config.batch_size=abc
    _fail(f'bad command-line flag: {e}')
  return []


def run(main: Callable[[list[str]], None]) -> None:
  """absl's app.run after configure_process(); a UserError or a bad flag ends with one line and
  exit status 1."""

  def wrapped(argv: list[str]) -> None:
    if len(argv) > 1:
      _fail(f'unexpected arguments: {" ".join(argv[1:])}')
    runtime.configure_process()
    quiet_third_party_output()
    try:
      main(argv)
    except UserError as e:
      _fail(str(e))

  app.run(wrapped, flags_parser=_parse_flags)
