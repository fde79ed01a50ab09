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
  warnings.filterwarnings('ignore', message="Couldn't find ffmpeg or avconv",
                          category=RuntimeWarning)
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
    # e.g. --config.no_such_key=1 (ml_collections raises a KeyError naming only the key)
    _fail(f'bad command-line flag: {_describe_override_error(e, argv)}')
  return []


def _describe_override_error(error: Exception, argv: list[str]) -> str:
  key = error.args[0] if isinstance(error, (AttributeError, KeyError)) and error.args else None
  if isinstance(key, KeyError) and key.args:  # ml_collections wraps the KeyError
    key = key.args[0]
  key = key.strip("'\"") if isinstance(key, str) else None
  for arg in argv[1:]:
    name = arg.split('=', 1)[0]
    if key and name.startswith('--config.') and name.rsplit('.', 1)[-1] == key:
      return f'{name}: the config has no setting {key!r} (see its config file)'
  return str(error)


def run(main: Callable[[list[str]], None], *, configure_process: bool = True) -> None:
  """absl's app.run after runtime.configure_process() (unless configure_process is False: then
  main calls it itself, e.g. after checking its inputs, since it imports jax); a UserError or a
  bad flag ends with one line and exit status 1."""

  def wrapped(argv: list[str]) -> None:
    if len(argv) > 1:
      _fail(f'unexpected arguments: {" ".join(argv[1:])}')
    if configure_process:
      runtime.configure_process()
    quiet_third_party_output()
    try:
      main(argv)
    except UserError as e:
      _fail(str(e))

  app.run(wrapped, flags_parser=_parse_flags)
