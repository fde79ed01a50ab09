"""Reading a request: its JSON body and its values, each checked against its range.

Anything malformed is an ApiError, answered as JSON {"error": message} with a 4xx status that
says what is wrong: a body that is not a JSON object, a value of the wrong type or out of range,
and a body nested deeper than Python's json decodes (json raises RecursionError there), which
would otherwise end as a 500.
"""

from __future__ import annotations

import math
from typing import Any

import flask

from common.errors import UserError
from studio import engine

MAX_UPLOAD_BYTES = 1 << 20  # the largest request body, uploads included
MAX_SEED = 2**31 - 2


class ApiError(Exception):
  """A request the API refuses: HTTP `status` with a JSON message."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status
    self.message = message


def json_object() -> dict[str, Any]:
  """The request's body as a JSON object; ApiError 400 for anything else."""
  try:
    body = flask.request.get_json(silent=True)
  except RecursionError:
    raise ApiError(400, 'the JSON body is nested too deeply') from None
  if not isinstance(body, dict):
    raise ApiError(400, 'expected a JSON object as the request body '
                        '(Content-Type: application/json)')
  return body


def integer(value: Any, name: str, low: int, high: int) -> int:
  """`value` as an int in low..high (JSON true/false are not integers here)."""
  if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
    raise ApiError(400, f'{name} must be an integer in {low}..{high}, got {value!r}')
  return value


def number(value: Any, name: str, low: float, high: float) -> float:
  """`value` as a finite float in [low, high]."""
  if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
      or not low <= value <= high):
    raise ApiError(400, f'{name} must be a number in [{low:g}, {high:g}], got {value!r}')
  return float(value)


def boolean(value: Any, name: str) -> bool:
  """A JSON bool, or a form field's 'true'/'false'/'on'/'off'/'1'/'0'/''."""
  if isinstance(value, bool):
    return value
  if isinstance(value, str) and value.lower() in ('true', 'false', 'on', 'off', '1', '0', ''):
    return value.lower() in ('true', 'on', '1')
  raise ApiError(400, f'{name} must be true or false, got {value!r}')


def gibbs_steps(value: Any) -> int:
  """One of engine.GIBBS_STEPS, from JSON or from a form field's digits."""
  if isinstance(value, str) and value.isdigit():
    value = int(value)
  try:
    return engine.check_gibbs_steps(value)
  except UserError as e:
    raise ApiError(400, str(e)) from None


def optional_seed(value: Any) -> int | None:
  """A seed in 0..MAX_SEED; None when not given."""
  return None if value is None else integer(value, 'seed', 0, MAX_SEED)
