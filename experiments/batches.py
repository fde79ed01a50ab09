"""What each model's train step eats: synthetic batches of the right shapes and dtypes, and the
unit of work in one example, for the GPU check, the memory plans and the multi-device tests
(which must not need the data sets)."""

from __future__ import annotations

from typing import Any

import numpy as np


def model_config(model: str, variant: str):
  """get_config(variant) of a model package's configs.py."""
  # pylint: disable=g-import-not-at-top
  if model == 'coconet':
    from coconet import configs
  elif model == 'musicvae':
    from musicvae import configs
  elif model == 'pianonet':
    from pianonet import configs
  elif model == 'cpword':
    from cpword import configs
  else:
    raise ValueError(f'unknown model {model!r}')
  return configs.get_config(variant)


def synthetic_batch(config: Any, batch_size: int | None = None, seed: int = 0
                    ) -> dict[str, np.ndarray]:
  """A host batch of random contents with the shapes config's train step takes."""
  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  batch = int(batch_size or config.batch_size)
  if config.task == 'coconet':
    from coconet import data
    return {'pitch_index': rng.integers(0, data.NUM_PITCHES, size=(
        batch, config.crop_len, data.NUM_INSTRUMENTS)).astype(np.int32)}
  if config.task == 'musicvae':
    from musicvae import data
    enc = data.encoding_from_config(config)
    columns = [rng.integers(0, v, size=(batch, enc.num_steps)) for v in enc.vocab_sizes]
    return {'tokens': np.stack(columns, axis=-1).astype(np.int32)}
  if config.task == 'pianonet':
    from pianonet import train
    length = train.window_spec(config).length
    return {'keys': (rng.random((batch, length)) < 0.07).astype(np.uint8)}
  if config.task == 'cpword':
    from cpword import model as model_lib
    families = model_lib.families_from_config(config)
    length = config.data.seq_len + 1
    columns = [rng.integers(1, f.vocab_size, size=(batch, length)) for f in families]
    tokens = np.stack(columns, axis=-1).astype(np.int32)
    return {'tokens': tokens[..., 0] if len(families) == 1 else tokens}
  raise ValueError(f'unknown task {config.task!r}')


def work_per_example(config: Any) -> tuple[int, str]:
  """(count, unit) of what one training example holds: Coconet's variables (steps x voices),
  MusicVAE's steps, PianoNet's predicted key states, CP-word's words (REMI events)."""
  if config.task == 'coconet':
    return config.crop_len * 4, 'variables'
  if config.task == 'musicvae':
    from musicvae import data  # pylint: disable=g-import-not-at-top
    return data.encoding_from_config(config).num_steps, 'steps'
  if config.task == 'pianonet':
    return config.predicted_steps * config.num_keys, 'key states'
  if config.task == 'cpword':
    return config.data.seq_len, 'events' if config.representation == 'remi' else 'words'
  raise ValueError(f'unknown task {config.task!r}')
