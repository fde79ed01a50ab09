"""What every entry point shares: user mistakes end in one line on stderr and exit status 1."""

from __future__ import annotations

import sys
from typing import Callable

from absl import app
from absl import flags

from common.errors import UserError


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
  """absl's app.run, but a UserError or a bad flag ends with one line and exit status 1."""

  def wrapped(argv: list[str]) -> None:
    try:
      main(argv)
    except UserError as e:
      _fail(str(e))

  app.run(wrapped, flags_parser=_parse_flags)
