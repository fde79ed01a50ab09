"""Shared by the importers of the originals' weights (coconet/, musicvae/, pianonet/ original.py).

Each importer maps the original's variable names to our modules' variables in plain code; this
module reads the original's files and checks every assignment, so that a wrong checkpoint or a
config whose shapes do not match ends in one error naming the first variable that does not fit.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from common.errors import UserError


class Variables:
  """The original's variables by name, remembering which ones an importer used."""

  def __init__(self, arrays: Mapping[str, np.ndarray], source: str):
    self.arrays = dict(arrays)
    self.source = source
    self.used: set[str] = set()

  def get(self, name: str) -> np.ndarray:
    """The variable `name`; UserError naming it (and the source) when the source lacks it."""
    if name not in self.arrays:
      raise UserError(f'{self.source}: no variable {name!r}; is this the right checkpoint and '
                      f'--config? (it has {len(self.arrays)} variables, e.g. '
                      f'{", ".join(sorted(self.arrays)[:3])})')
    self.used.add(name)
    return np.asarray(self.arrays[name])

  def unused(self, ignore: Callable[[str], bool] = lambda name: False) -> list[str]:
    """Variables no importer asked for (optimizer slots and counters excluded by `ignore`)."""
    return sorted(n for n in self.arrays if n not in self.used and not ignore(n))


def assign(variable: Any, value: np.ndarray, name: str, source: str) -> None:
  """Sets an nnx Variable to `value` (cast to its dtype); UserError naming the original variable
  when the shapes differ (the config does not match the checkpoint)."""
  value = np.asarray(value)
  if tuple(value.shape) != tuple(variable.shape):
    raise UserError(f'{source}: variable {name!r} has shape {tuple(value.shape)} but this config '
                    f'expects {tuple(variable.shape)}; pick the --config the checkpoint was '
                    'trained with')
  variable[...] = value.astype(variable.dtype)


def read_variables(path: str) -> Variables:
  """A TensorFlow checkpoint (prefix, folder or SavedModel) or a fixture .npz whose arrays are
  named 'var/<name>', as Variables."""
  if path.endswith('.npz'):
    try:
      with np.load(path) as npz:
        arrays = {k[len('var/'):]: npz[k] for k in npz.files if k.startswith('var/')}
    except (OSError, ValueError) as e:
      raise UserError(f'{path}: cannot read it ({e})') from None
    if not arrays:
      raise UserError(f'{path}: no var/<name> arrays in this .npz')
    return Variables(arrays, path)
  from common import tf_checkpoint  # pylint: disable=g-import-not-at-top
  return Variables(tf_checkpoint.read_checkpoint(path), path)
