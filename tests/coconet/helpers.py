"""Helpers for the Coconet tests: small SATB pieces and a jitted forward pass."""

from flax import nnx
import numpy as np


_forward = nnx.jit(lambda model, roll, mask: model(roll, mask))


def forward(model, roll_BTPI, mask_BTI) -> np.ndarray:
  """The model's logits, jitted (eager op-by-op calls compile slowly on a CPU)."""
  return np.asarray(_forward(model, np.asarray(roll_BTPI, np.float32),
                             np.asarray(mask_BTI, np.float32)))


def make_piece(num_steps: int = 8, seed: int = 0) -> np.ndarray:
  """A (T, 4) SATB piece in the voices' JSB ranges, with held notes, on the 16th grid."""
  rng = np.random.default_rng(seed)
  ranges = ((62, 79), (55, 72), (48, 67), (38, 60))
  pitches = np.stack([rng.integers(lo, hi + 1, size=(num_steps + 1) // 2) for lo, hi in ranges],
                     axis=1)
  return np.repeat(pitches, 2, axis=0)[:num_steps].astype(np.float32)
