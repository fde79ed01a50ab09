"""Runtime shims that let Magenta 2.1.4 import and run on TensorFlow 2.15 / NumPy 1.26 / Py 3.11.

Import this module before anything from ``magenta`` (``import compat`` with originals/ on the
path); it patches already-imported modules at runtime and never edits site-packages. Each shim
exists because something concrete fails without it:

* NumPy aliases (``np.bool``, ``np.int``, ``np.float``, ``np.complex``, ``np.object``, ``np.str``):
  NumPy 1.24 removed these deprecated aliases of the Python builtins. Magenta 2.1.4's
  ``magenta/models/music_vae/data.py`` uses ``np.bool`` as a default argument value, evaluated at
  import time, so ``import magenta.models.music_vae.configs`` raises AttributeError without it;
  a few other code paths use the other aliases. They are restored as the builtins they always
  were, so no behaviour changes.
* ``tf.data.experimental.unbatch``: older Magenta input code calls it; TF 2.15 still has it, so
  this only fills it in (as ``Dataset.unbatch``) if a TensorFlow build lacks it.
* Quiet logs (``TF_CPP_MIN_LOG_LEVEL=2`` unless set; DeprecationWarning, FutureWarning and pydub's
  "Couldn't find ffmpeg" filtered):
  not needed for correctness; the originals print hundreds of deprecation lines otherwise.
"""
import builtins
import os
import warnings

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
warnings.filterwarnings('ignore', category=DeprecationWarning)
warnings.filterwarnings('ignore', category=FutureWarning)
warnings.filterwarnings('ignore', message='.*ffmpeg.*')  # pydub, imported by magenta, never used

import numpy as np  # noqa: E402  (after the environment variable, before TensorFlow)

_NUMPY_ALIASES = {'bool': builtins.bool, 'int': builtins.int, 'float': builtins.float,
                  'complex': builtins.complex, 'object': builtins.object, 'str': builtins.str}
for _name, _value in _NUMPY_ALIASES.items():
  if _name not in np.__dict__:
    setattr(np, _name, _value)

import tensorflow as tf  # noqa: E402

if not hasattr(tf.data.experimental, 'unbatch'):
  tf.data.experimental.unbatch = lambda: (lambda ds: ds.unbatch())
