"""MusicVAE's uses of a trained model: encode, decode, sample, interpolate, attribute vectors.

    z, mu, sigma = encode(model, [seq], enc)
    seqs = decode(model, z, enc, jax.random.key(0), temperature=0.5)
    seqs = interpolate(model, seq_a, seq_b, enc, num=7)           # slerp between the two mu
    vectors = compute_attribute_vectors(model, slices, enc)       # {'note_density': (Z,), ...}
    z2 = apply_attribute(z, vectors['note_density'], scale=1.5)

`generate_pieces` is the generation entry (common.generation).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence
import zlib

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from common import files
from common import generation
from common import midi
from common import precision
from common.errors import UserError
from musicvae import data
from musicvae import model as model_lib

NoteSequence = midi.NoteSequence
ENCODE_BATCH = 64


# ------------------------------------------------------------------------------------------------
# Jitted pieces (the model is an argument, so one compile serves any weights of the same shape).


@functools.partial(nnx.jit, static_argnames='dtype')
def _encode(model: model_lib.MusicVAE, tokens_BTK: jax.Array, dtype: str):
  return model_lib.inference_copy(model, dtype).encode(tokens_BTK)


@functools.partial(nnx.jit, static_argnames='dtype')
def _decode(model: model_lib.MusicVAE, z_BZ: jax.Array, rng: jax.Array, temperature: jax.Array,
            dtype: str):
  return model_lib.inference_copy(model, dtype).sample(z_BZ, rng, temperature)[0]


def encode_tokens(model: model_lib.MusicVAE, tokens_NTK: np.ndarray,
                  rng: jax.Array | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Token slices (N, T, K) -> (z, mu, sigma), each (N, Z); z drawn from q(z|x)."""
  mus, sigmas = [], []
  for i in range(0, len(tokens_NTK), ENCODE_BATCH):
    chunk = tokens_NTK[i:i + ENCODE_BATCH]
    mu, sigma = _encode(model, jnp.asarray(chunk, jnp.int32), precision.inference_dtype(len(chunk)))
    mus.append(np.asarray(mu)), sigmas.append(np.asarray(sigma))
  mu, sigma = np.concatenate(mus), np.concatenate(sigmas)
  rng = jax.random.key(0) if rng is None else rng
  z = mu + sigma * np.asarray(jax.random.normal(rng, mu.shape))
  return z, mu, sigma


def decode_tokens(model: model_lib.MusicVAE, z_NZ: np.ndarray, rng: jax.Array,
                  temperature: float = 0.5) -> np.ndarray:
  """z (N, Z) -> tokens int32 (N, T, K) by free-running decoding (temperature 0 = argmax)."""
  out = []
  for i in range(0, len(z_NZ), ENCODE_BATCH):
    chunk = z_NZ[i:i + ENCODE_BATCH]
    out.append(np.asarray(_decode(model, jnp.asarray(chunk, jnp.float32),
                                  jax.random.fold_in(rng, i), jnp.float32(temperature),
                                  precision.inference_dtype(len(chunk)))))
  return np.concatenate(out) if out else np.zeros((0, model.num_steps, len(model.vocab_sizes)))


@functools.partial(nnx.jit, static_argnames='dtype')
def _decode_rows(model: model_lib.MusicVAE, z_BZ: jax.Array, keys_B: jax.Array,
                 temperature: jax.Array, dtype: str):
  copy = model_lib.inference_copy(model, dtype)
  return jax.vmap(lambda z_Z, key: copy.sample(z_Z[None], key, temperature)[0][0])(z_BZ, keys_B)


def row_keys(seed: int, z_NZ: np.ndarray) -> jax.Array:
  """One key per row of z, from the seed and the row's float32 bytes: the same vector gets the
  same key wherever it stands in a population."""
  z_NZ = np.ascontiguousarray(np.asarray(z_NZ, np.float32))
  base = jax.random.key(seed)
  return jnp.stack([jax.random.fold_in(base, zlib.crc32(row.tobytes())) for row in z_NZ])


def decode_tokens_per_row(model: model_lib.MusicVAE, z_NZ: np.ndarray, seed: int,
                          temperature: float = 0.5) -> np.ndarray:
  """z (N, Z) -> tokens int32 (N, T, K), each row decoded with its own key (row_keys): within a
  seed, a latent vector always decodes to the same notes, whatever else is decoded with it."""
  if not len(z_NZ):
    return np.zeros((0, model.num_steps, len(model.vocab_sizes)), np.int32)
  keys_N = row_keys(seed, z_NZ)
  out = []
  for i in range(0, len(z_NZ), ENCODE_BATCH):
    chunk = np.asarray(z_NZ[i:i + ENCODE_BATCH], np.float32)
    out.append(np.asarray(_decode_rows(model, jnp.asarray(chunk), keys_N[i:i + ENCODE_BATCH],
                                       jnp.float32(temperature),
                                       precision.inference_dtype(len(chunk)))))
  return np.concatenate(out)


def sequences_to_tokens(seqs: Sequence[NoteSequence], enc: data.Encoding,
                        names: Sequence[str] | None = None) -> np.ndarray:
  """The first kept slice of each sequence -> (N, T, K); UserError when one has none.

  A melody model trained on a data set whose melody is a named track (POP909's MELODY) reads a
  user's file without such a track by its highest pitches instead ('all').
  """
  out = []
  for i, seq in enumerate(seqs):
    seq_enc = enc
    if enc.kind == 'melody' and not data.select_notes(seq, enc.melody_track):
      seq_enc = dataclasses.replace(enc, melody_track='all')
    slices, stats = data.extract_slices([seq], seq_enc)
    if not len(slices):
      name = names[i] if names else (seq.filename or f'sequence {i}')
      raise UserError(f'{name}: no {enc.num_bars}-bar {enc.kind} slice: '
                      f'{data.describe_extraction(stats, seq_enc)}; a slice needs 4/4 time and '
                      f'notes in {data.MIN_PITCH}..{data.MAX_PITCH}')
    out.append(slices[0])
  return np.stack(out).astype(np.int32)


def encode(model: model_lib.MusicVAE, seqs: Sequence[NoteSequence], enc: data.Encoding,
           rng: jax.Array | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """NoteSequences (their first slice each) -> (z, mu, sigma), each (N, Z)."""
  return encode_tokens(model, sequences_to_tokens(seqs, enc), rng)


def decode(model: model_lib.MusicVAE, z_NZ: np.ndarray, enc: data.Encoding, rng: jax.Array,
           temperature: float = 0.5) -> list[NoteSequence]:
  return [data.tokens_to_sequence(t, enc) for t in decode_tokens(model, z_NZ, rng, temperature)]


def sample(model: model_lib.MusicVAE, num: int, rng: jax.Array, enc: data.Encoding,
           temperature: float = 0.5) -> list[NoteSequence]:
  """`num` sequences decoded from z ~ N(0, I)."""
  z_key, dec_key = jax.random.split(rng)
  z = np.asarray(jax.random.normal(z_key, (num, model.z_dim)))
  return decode(model, z, enc, dec_key, temperature)


def slerp(p0: np.ndarray, p1: np.ndarray, t: float | np.ndarray) -> np.ndarray:
  """Spherical interpolation; t may be an array (T,) -> (T, Z). Linear when p0 and p1 align."""
  p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
  t = np.asarray(t, np.float64)[..., None]
  cos = np.dot(p0 / np.linalg.norm(p0), p1 / np.linalg.norm(p1))
  omega = np.arccos(np.clip(cos, -1.0, 1.0))
  if np.sin(omega) < 1e-6:
    return (1 - t) * p0 + t * p1
  return (np.sin((1 - t) * omega) * p0 + np.sin(t * omega) * p1) / np.sin(omega)


def interpolate_z(mu_a: np.ndarray, mu_b: np.ndarray, num: int) -> np.ndarray:
  """`num` latent points from mu_a to mu_b (both included) by slerp at linspace(0, 1, num)."""
  return slerp(mu_a, mu_b, np.linspace(0.0, 1.0, num)).astype(np.float32)


def interpolate(model: model_lib.MusicVAE, seq_a: NoteSequence, seq_b: NoteSequence,
                enc: data.Encoding, num: int = 7, rng: jax.Array | None = None,
                temperature: float = 0.5) -> list[NoteSequence]:
  _, mu, _ = encode(model, [seq_a, seq_b], enc)
  rng = jax.random.key(0) if rng is None else rng
  return decode(model, interpolate_z(mu[0], mu[1], num), enc, rng, temperature)


# ------------------------------------------------------------------------------------------------
# Attributes of melody slices (track 0) and attribute vectors.


def _notes(tokens_T: np.ndarray) -> list[tuple[int, int, int]]:
  return data.melody_notes(np.asarray(tokens_T))


def note_density(tokens_T: np.ndarray) -> float:
  """Note onsets per step."""
  return len(_notes(tokens_T)) / len(tokens_T)


def average_interval(tokens_T: np.ndarray) -> float:
  """Mean absolute pitch interval (semitones) between consecutive notes."""
  pitches = [p for _, _, p in _notes(tokens_T)]
  return float(np.mean(np.abs(np.diff(pitches)))) if len(pitches) > 1 else 0.0


def syncopation_16th(tokens_T: np.ndarray) -> float:
  """Fraction of notes that start on an odd 16th (off the 8th-note grid)."""
  notes = _notes(tokens_T)
  return float(np.mean([s % 2 == 1 for s, _, _ in notes])) if notes else 0.0


def syncopation_8th(tokens_T: np.ndarray) -> float:
  """Fraction of notes that start on an 8th-note off-beat (the 'and' of a beat)."""
  notes = _notes(tokens_T)
  return float(np.mean([s % 4 == 2 for s, _, _ in notes])) if notes else 0.0


def c_diatonic(tokens_T: np.ndarray) -> float:
  """Fraction of notes whose pitch class is in the C major scale."""
  notes = _notes(tokens_T)
  return float(np.mean([p % 12 in (0, 2, 4, 5, 7, 9, 11) for _, _, p in notes])) if notes else 0.0


ATTRIBUTES: dict[str, Callable[[np.ndarray], float]] = {
    'note_density': note_density,
    'average_interval': average_interval,
    'syncopation_16th': syncopation_16th,
    'syncopation_8th': syncopation_8th,
    'c_diatonic': c_diatonic,
}


def attribute_vector(mu_NZ: np.ndarray, values_N: np.ndarray, quantile: float = 0.25
                     ) -> np.ndarray:
  """Mean latent of examples in the top `quantile` of an attribute minus the bottom one's."""
  values_N = np.asarray(values_N)
  lo, hi = np.quantile(values_N, [quantile, 1 - quantile])
  high, low = values_N >= hi, values_N <= lo
  if hi <= lo or not high.any() or not low.any():
    raise UserError('attribute vector: the attribute does not vary across the examples given')
  return (mu_NZ[high].mean(0) - mu_NZ[low].mean(0)).astype(np.float32)


def compute_attribute_vectors(model: model_lib.MusicVAE, tokens_NTK: np.ndarray,
                              names: Sequence[str] = tuple(ATTRIBUTES),
                              quantile: float = 0.25) -> dict[str, np.ndarray]:
  """{attribute: (Z,) vector} from melody slices (N, T, K) (track 0 is the melody)."""
  if model.vocab_sizes[0] != data.MELODY_CLASSES:
    raise UserError('attribute vectors are defined on melodies; this model has no melody track')
  unknown = set(names) - set(ATTRIBUTES)
  if unknown:
    raise UserError(f'unknown attributes {sorted(unknown)}; known: {", ".join(ATTRIBUTES)}')
  _, mu, _ = encode_tokens(model, tokens_NTK)
  return {name: attribute_vector(mu, np.array([ATTRIBUTES[name](x[:, 0]) for x in tokens_NTK]),
                                 quantile) for name in names}


def apply_attribute(z_NZ: np.ndarray, vector_Z: np.ndarray, scale: float) -> np.ndarray:
  """z + scale * vector (scale -1.5..1.5 in the paper; negative removes the attribute)."""
  return np.asarray(z_NZ) + scale * np.asarray(vector_Z)


def save_attribute_vectors(path: str, vectors: dict[str, np.ndarray]) -> None:
  """Writes {name: (Z,)} to an npz file, atomically."""
  files.atomic_write(path, lambda f: np.savez(f, **vectors))


def load_attribute_vectors(path: str) -> dict[str, np.ndarray]:
  try:
    with np.load(path) as npz:
      return {k: np.asarray(npz[k]) for k in npz.files}
  except (OSError, ValueError) as e:
    raise UserError(f'{path}: cannot read attribute vectors ({e})') from None


# ------------------------------------------------------------------------------------------------
# The generation entry (common.generation): a request in, NoteSequences out

TASKS = ('sample', 'reconstruct', 'interpolate', 'attribute')
ATTRIBUTE_VECTORS_FILE = 'attribute_vectors.npz'


def generate_pieces(model: model_lib.MusicVAE, config: ml_collections.ConfigDict,
                    request: generation.Request) -> list[generation.Piece]:
  """Runs one task and returns its melodies (or drum patterns, trios) as NoteSequences.

  sample: num_samples from the prior; reconstruct: each input through its mu; interpolate: two
  inputs, num_samples points of the slerp between their mu, ends included; attribute: each
  input's mu moved by attribute_scale * the attribute's vector (from request.assets
  ['attribute_vectors'], the file shipped beside the checkpoint).
  """
  task = request.task_or(TASKS, 'musicvae')
  enc = data.encoding_from_config(config)
  temperature = config.sample.temperature if request.temperature is None else request.temperature
  rng = jax.random.key(request.seed)

  def pieces(prefix: str, seqs: Sequence[NoteSequence]) -> list[generation.Piece]:
    return [generation.Piece(f'{prefix}_{i:03d}', seq) for i, seq in enumerate(seqs)]

  if task == 'sample':
    return pieces('sample', sample(model, request.num_samples, rng, enc, temperature))
  if not request.inputs:
    raise UserError(f'musicvae: --task={task} needs input MIDI/MusicXML files (--inputs)')
  _, mu, _ = encode_tokens(model, sequences_to_tokens(request.inputs, enc,
                                                      list(request.input_names)))
  if task == 'reconstruct':
    return pieces('reconstruction', decode(model, mu, enc, rng, temperature))
  if task == 'interpolate':
    if len(request.inputs) != 2:
      raise UserError(f'musicvae: interpolate needs exactly 2 inputs, got {len(request.inputs)}')
    z = interpolate_z(mu[0], mu[1], max(request.num_samples, 2))
    return pieces('interpolation', decode(model, z, enc, rng, temperature))
  vector = attribute_vector_for(request.attribute, request.assets.get('attribute_vectors'))
  z = apply_attribute(mu, vector, request.attribute_scale)
  return pieces(f'{request.attribute}_{request.attribute_scale:+g}',
                decode(model, z, enc, rng, temperature))


def attribute_vector_for(attribute: str | None, vectors: dict[str, np.ndarray] | None
                         ) -> np.ndarray:
  """The named attribute's vector from `vectors` (the file shipped beside the checkpoint)."""
  if attribute not in ATTRIBUTES:
    raise UserError(f'musicvae: --attribute must be one of {", ".join(ATTRIBUTES)}, '
                    f'got {attribute!r}')
  if not vectors or attribute not in vectors:
    raise UserError(f'musicvae: this model has no attribute vector for {attribute!r} (no '
                    f'{ATTRIBUTE_VECTORS_FILE} beside its checkpoint); python -m '
                    'experiments.export --workdir=<the run> --out_dir=<a new folder> computes them '
                    "from the run's data set into the export: generate from that folder")
  return vectors[attribute]
