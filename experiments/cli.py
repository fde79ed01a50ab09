"""What every entry point shares: one-line errors for user mistakes, quiet library logs."""

from __future__ import annotations

import sys
from typing import Callable

from absl import app

from common.errors import UserError


def run(main: Callable[[list[str]], None]) -> None:
  """absl's app.run, but a UserError ends with its message on one line and exit status 1."""

  def wrapped(argv: list[str]) -> None:
    try:
      main(argv)
    except UserError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(1)

  app.run(wrapped)
