"""The studio's model side: load MusicVAE and Coconet, decode populations, harmonize melodies,
render MIDI/WAV/PNG bytes. No web code here (studio.app calls these).

    models = load_models('pretrained/mel_2bar_small', 'pretrained/coconet_small')
    seqs = decode_population(models.musicvae, z_NZ, seed=3)
    soprano_T, shift = soprano_from_grid([67, 67, None, 69, ...], steps_per_note=2)
    pitches_TI = harmonize(models.coconet, soprano_T, gibbs_steps=64, seed=0)
    wav = render_bytes(harmony_sequence(pitches_TI), 'wav')

Jit compiles once per shape: a population is always `population_size` rows, melodies are padded
with silence to a multiple of LENGTH_BUCKET steps (and the output cut back), and the number of
Gibbs steps is one of GIBBS_STEPS, so a running studio compiles a handful of programs at most.
Callers serialize model calls with `Models.lock`.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import threading
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from coconet import data as coconet_data
from coconet import sample as coconet_sample
from coconet import train as coconet_train
from common import midi
from common import render
from common import training
from common.errors import UserError
from musicvae import data as musicvae_data
from musicvae import sample as musicvae_sample
from musicvae import train as musicvae_train

NoteSequence = midi.NoteSequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MUSICVAE_WORKDIR = os.path.join(REPO, 'pretrained', 'mel_2bar_small')
DEFAULT_COCONET_WORKDIR = os.path.join(REPO, 'pretrained', 'coconet_small')
EXAMPLE_MELODY = os.path.join(REPO, 'assets', 'ode_to_joy.mid')

GIBBS_STEPS = (8, 16, 32, 64, 128, 256)
DEFAULT_GIBBS_STEPS = 64
# Coconet's samplers (coconet/sample.py): annealed Gibbs (the paper's), chronological ancestral
# (one voice-step per forward pass: 3 passes per 16th step of the melody), one independent pass.
SAMPLERS = ('gibbs', 'ancestral', 'independent')
LENGTH_BUCKET = 32  # 16th steps (2 bars): melodies are padded to a multiple of this
MAX_MELODY_STEPS = 512  # 16th steps (32 bars of 4/4)
HARMONIZE_QPM = 90.0
# The melody grid of the Harmonize page: GRID_STEPS eighth notes over the soprano range.
GRID_STEPS = 32
GRID_STEP_SIXTEENTHS = 2
RENDER_KINDS = ('mid', 'wav', 'png')
SOPRANO_RANGE = coconet_data.SOPRANO_RANGE

_PNG_LOCK = threading.Lock()  # matplotlib is not thread-safe, even without pyplot


@dataclasses.dataclass
class LoadedMusicVAE:
  model: Any
  config: ml_collections.ConfigDict
  encoding: Any
  workdir: str
  temperature: float

  @property
  def z_dim(self) -> int:
    return int(self.model.z_dim)

  @property
  def num_steps(self) -> int:
    return int(self.encoding.num_steps)


@dataclasses.dataclass
class LoadedCoconet:
  model: Any
  config: ml_collections.ConfigDict
  workdir: str


@dataclasses.dataclass
class Models:
  """The loaded models; a missing one is None and its *_message says why and what to do."""
  musicvae: LoadedMusicVAE | None = None
  coconet: LoadedCoconet | None = None
  musicvae_message: str = ''
  coconet_message: str = ''
  lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


def _has_checkpoints(workdir: str) -> bool:
  return os.path.isdir(os.path.join(workdir, training.CHECKPOINT_DIR))


def _load(workdir: str, task: str) -> tuple[Any, ml_collections.ConfigDict]:
  config = training.read_config(workdir)
  if config.get('task') != task:
    raise UserError(f'{workdir}: holds a {config.get("task")!r} model, not a {task} one')
  train_task = (musicvae_train if task == 'musicvae' else coconet_train).get_task(config)
  return training.load_model(train_task, config, workdir), config


def load_musicvae(workdir: str, temperature: float | None = None) -> LoadedMusicVAE:
  """The MusicVAE in `workdir` (UserError when there is none)."""
  model, config = _load(workdir, 'musicvae')
  temperature = config.sample.temperature if temperature is None else float(temperature)
  if temperature < 0:
    raise UserError(f'temperature must be >= 0, got {temperature}')
  return LoadedMusicVAE(model, config, musicvae_data.encoding_from_config(config), workdir,
                        temperature)


def load_coconet(workdir: str) -> LoadedCoconet:
  """The Coconet in `workdir` (UserError when there is none)."""
  model, config = _load(workdir, 'coconet')
  return LoadedCoconet(model, config, workdir)


def musicvae_missing_message(workdir: str) -> str:
  return (f'No MusicVAE model: {workdir} has no checkpoints. Start the studio with '
          f'--musicvae_workdir=<a trained MusicVAE run>, e.g. after python -m experiments.train '
          f'--config=musicvae/configs.py:mel_2bar_small --workdir=runs/mel_2bar_small. '
          f'The Harmonize page works without it.')


def load_models(musicvae_workdir: str | None, coconet_workdir: str | None, *,
                musicvae_required: bool = False, coconet_required: bool = False,
                temperature: float | None = None) -> Models:
  """Loads what there is. A workdir that is '' or None is left out; a default workdir without
  checkpoints is left out with a message for the page; a *_required one must load (UserError)."""
  models = Models()
  if not musicvae_workdir:
    models.musicvae_message = ('No MusicVAE model: the studio was started without '
                               '--musicvae_workdir.')
  elif musicvae_required or _has_checkpoints(musicvae_workdir):
    models.musicvae = load_musicvae(musicvae_workdir, temperature)
  else:
    models.musicvae_message = musicvae_missing_message(musicvae_workdir)
  if not coconet_workdir:
    models.coconet_message = 'No Coconet model: the studio was started without --coconet_workdir.'
  elif coconet_required or _has_checkpoints(coconet_workdir):
    models.coconet = load_coconet(coconet_workdir)
  else:
    models.coconet_message = (f'No Coconet model: {coconet_workdir} has no checkpoints. Start the '
                              f'studio with --coconet_workdir=<a trained Coconet run>.')
  if models.musicvae is None and models.coconet is None:
    raise UserError(f'studio: no model to serve. {models.musicvae_message} '
                    f'{models.coconet_message}')
  return models


# ------------------------------------------------------------------------------------------------
# Evolve


def decode_population(mvae: LoadedMusicVAE, z_NZ: np.ndarray, *, seed: int
                      ) -> list[NoteSequence]:
  """Decodes latent vectors (N, Z) to melodies, each with a key from (seed, the vector): within
  a session the same vector always sounds the same (a kept melody that was not mutated, a
  generation undone and bred again)."""
  tokens = musicvae_sample.decode_tokens_per_row(mvae.model, np.asarray(z_NZ, np.float32), seed,
                                                 mvae.temperature)
  return [musicvae_data.tokens_to_sequence(t, mvae.encoding) for t in tokens]


# ------------------------------------------------------------------------------------------------
# Harmonize


def _fit(soprano_T: np.ndarray, transpose: bool, name: str) -> tuple[np.ndarray, int]:
  if len(soprano_T) > MAX_MELODY_STEPS:
    raise UserError(f'{name}: the melody is {len(soprano_T) / 16:g} bars long; the studio '
                    f'harmonizes up to {MAX_MELODY_STEPS // 16} bars')
  try:
    fitted = coconet_data.fit_soprano_range(soprano_T, transpose=transpose, name=name)
  except UserError as e:
    # The library's hint names the command-line flag; here it is a checkbox.
    raise UserError(str(e).replace('use --transpose to shift the melody by octaves',
                                   'tick "Transpose by octaves" to shift it into range')) from None
  sounding = ~np.isnan(soprano_T)
  shift = int(round(float((fitted[sounding] - soprano_T[sounding])[0])))
  return fitted, shift


def soprano_from_grid(pitches: Sequence[int | None], *, steps_per_note: int = GRID_STEP_SIXTEENTHS,
                      transpose: bool = False) -> tuple[np.ndarray, int]:
  """Grid columns (MIDI pitch or None per column, each `steps_per_note` 16ths; equal neighbours
  are one held note, as in Coconet's encoding) -> ((T,) soprano in range, octave shift)."""
  low, high = SOPRANO_RANGE
  bad = [(i, p) for i, p in enumerate(pitches)
         if p is not None and p >= 0 and not low <= p <= high]
  if bad and not transpose:
    shown = ', '.join(f'{coconet_data.pitch_name(p)} ({p}) in column {i + 1}' for i, p in bad[:8])
    more = f' and {len(bad) - 8} more' if len(bad) > 8 else ''
    raise UserError(f'the melody: notes outside the soprano range {coconet_data.pitch_name(low)}..'
                    f'{coconet_data.pitch_name(high)} ({low}..{high}): {shown}{more}; move them '
                    f'into range, or transpose by octaves')
  soprano_T = coconet_data.melody_from_pitches(list(pitches), steps_per_note)
  return _fit(soprano_T, transpose, 'the melody')


def soprano_from_midi(data_bytes: bytes, *, name: str, transpose: bool = False
                      ) -> tuple[np.ndarray, int]:
  """A MIDI file's top line -> ((T,) soprano in range, octave shift); MidiError when corrupt."""
  seq = midi.midi_bytes_to_sequence(data_bytes, name)
  return _fit(coconet_data.melody_from_sequence(seq, name=name), transpose, name)


def example_grid() -> list[int | None]:
  """The bundled melody's first GRID_STEPS eighth notes, for the grid's example button."""
  seq = midi.read_midi(EXAMPLE_MELODY)
  soprano_T = coconet_data.fit_soprano_range(coconet_data.melody_from_sequence(seq),
                                             transpose=True)
  columns = soprano_T[::GRID_STEP_SIXTEENTHS][:GRID_STEPS]
  out = [None if np.isnan(p) else int(p) for p in columns]
  return out + [None] * (GRID_STEPS - len(out))


def check_gibbs_steps(gibbs_steps: Any) -> int:
  if isinstance(gibbs_steps, bool) or gibbs_steps not in GIBBS_STEPS:
    raise UserError(f'gibbs_steps must be one of {", ".join(map(str, GIBBS_STEPS))}, '
                    f'got {gibbs_steps!r}')
  return int(gibbs_steps)


def check_sampler(sampler: Any) -> str:
  if sampler not in SAMPLERS:
    raise UserError(f'sampler must be one of {", ".join(SAMPLERS)}, got {sampler!r}')
  return sampler


def harmonize(coconet: LoadedCoconet, soprano_T: np.ndarray, *, gibbs_steps: int, seed: int,
              sampler: str = 'gibbs') -> np.ndarray:
  """Alto, tenor and bass under a soprano (T,) -> (T, 4) pitches, by annealed Gibbs sampling
  (gibbs_steps steps), chronological ancestral sampling or one independent pass (`sampler`).

  The soprano is kept exactly. The piece is padded with silence (given, not sampled) to a multiple
  of LENGTH_BUCKET steps so that lengths share compiled programs; the padding is cut off again.
  """
  gibbs_steps = check_gibbs_steps(gibbs_steps)
  sampler = check_sampler(sampler)
  soprano_T = np.asarray(soprano_T, np.float32)
  num_steps = len(soprano_T)
  padded = -(-num_steps // LENGTH_BUCKET) * LENGTH_BUCKET
  pitches_BTI = np.full((1, padded, coconet_data.NUM_INSTRUMENTS), np.nan, np.float32)
  pitches_BTI[0, :num_steps, 0] = soprano_T
  erase_BTI = np.zeros(pitches_BTI.shape, bool)
  erase_BTI[0, :num_steps, 1:] = True
  options = dict(gibbs_steps=gibbs_steps) if sampler == 'gibbs' else {}
  out = coconet_sample.complete(coconet.model, jax.random.key(seed), pitches_BTI, erase_BTI,
                                method=sampler, **options)
  return out[0, :num_steps]


def harmony_sequence(pitches_TI: np.ndarray) -> NoteSequence:
  return coconet_data.pitches_to_sequence(pitches_TI, qpm=HARMONIZE_QPM, programs='choir')


def warm_up(models: Models, population_size: int, gibbs_steps: int = DEFAULT_GIBBS_STEPS) -> None:
  """Compiles the programs a first visitor would otherwise wait for."""
  with models.lock:
    if models.musicvae is not None:
      decode_population(models.musicvae, np.zeros((population_size, models.musicvae.z_dim)),
                        seed=0)
    if models.coconet is not None:
      soprano_T, _ = soprano_from_grid([72] * GRID_STEPS)
      harmonize(models.coconet, soprano_T, gibbs_steps=gibbs_steps, seed=0)


# ------------------------------------------------------------------------------------------------
# JSON views and rendering


def _pitch_or_none(p: float) -> int | None:
  return None if np.isnan(p) else int(p)


def pitches_json(pitches_TI: np.ndarray) -> list[list[int | None]]:
  """(T, I) float pitches -> nested lists with None for silence."""
  return [[_pitch_or_none(p) for p in row] for row in np.asarray(pitches_TI, np.float32)]


def notes_json(seq: NoteSequence) -> list[dict[str, Any]]:
  """The notes of a quantized sequence: pitch, start and end (16th steps), voice, drum."""
  return [dict(pitch=n.pitch, start=n.quantized_start_step, end=n.quantized_end_step,
               voice=n.instrument, drum=n.is_drum) for n in seq.notes]


def render_bytes(seq: NoteSequence, kind: str, title: str | None = None) -> bytes:
  """`seq` as a MIDI file, a WAV (fluidsynth when installed, else the built-in synth) or a
  piano-roll PNG, rendered in a private temporary folder."""
  if kind not in RENDER_KINDS:
    raise ValueError(f'unknown kind {kind!r}')
  with tempfile.TemporaryDirectory(prefix='studio-') as folder:
    path = os.path.join(folder, f'out.{kind}')
    if kind == 'mid':
      midi.write_midi(seq, path)
    elif kind == 'wav':
      render.render_wav(seq, path)
    else:
      with _PNG_LOCK:
        render.piano_roll_png(seq, path, title=title)
    with open(path, 'rb') as f:
      return f.read()
