r"""MusicVAE configs: get_config('<variant>').

  python -m experiments.train --config=musicvae/configs.py:tiny --workdir=/tmp/mvae_tiny
  python -m experiments.train --config=musicvae/configs.py:mel_2bar_small --workdir=runs/mel_2bar \
      --config.num_train_steps=20000
  python -m experiments.train --config=musicvae/configs.py:mel_16bar_hier --workdir=runs/mel16_hier
  python -m experiments.train --config=musicvae/configs.py:mel_16bar_flat --workdir=runs/mel16_flat
  python -m experiments.train --config=musicvae/configs.py:drums_2bar --workdir=runs/drums
  python -m experiments.train --config=musicvae/configs.py:trio_16bar_hier --workdir=runs/trio \
      --config.data_dir=<folder of MIDI files with melody (programs 0-31), bass (32-39), drums>

Variants:
  tiny            seconds on a CPU: 2-bar melodies made in code (no data folder), tiny LSTMs.
  small           = mel_2bar_small (the CPU-sized run of the paper's 2-bar melody model).
  paper           cat-mel_2bar_small with the paper's 200k training steps.
  tiny_hier       the same data, 4 bars, hierarchical decoder (tests).
  mel_2bar_small  the paper's cat-mel_2bar_small: z 256, BiLSTM 512, decoder [256, 256],
                  max_beta 0.2, beta_rate 0.99999, free_bits 0, batch 512, +-5 transposition.
                  POP909 MELODY tracks (--config.dataset=nottingham works too). The paper trains
                  200k steps; num_train_steps here is a CPU-sized 5k (override it on a GPU).
  mel_16bar_hier  hierdec-mel_16bar: z 512, BiLSTM [2048, 2048], conductor [1024, 1024], note
                  decoder [1024, 1024], free_bits 256, max_beta 0.2, beta_rate 0 (full beta
                  from the start), teacher forcing.
  mel_16bar_flat  the same data and encoder with a flat 2-layer decoder as wide as it takes to
                  match the hierarchical decoder's parameter count (the paper's comparison).
  trio_16bar_hier hierdec-trio_16bar: three note decoders (melody, bass, drums) under one
                  conductor, batch 256, 2 bars of silence allowed (as in the original code). No
                  shared data set holds trios: point data_dir at your own MIDI folder.
  mel_16bar_hier_small, mel_16bar_flat_small
                  CPU-sized 16-bar pair for the flat vs hierarchical comparison: z 128, BiLSTM 256,
                  conductor 128, note decoder 128, batch 32; the flat decoder (2 layers) is as wide
                  as it takes to match the hierarchical decoder's parameter count.
  drums_2bar      cat-drums_2bar_small on Groove: the encoder reads the 9 drum classes (+ a "no
                  hit" bit), the decoder emits their 512 combinations; free_bits 48, beta_rate 0.

Settings where the original's behaviour is the default (runs recorded before they existed read
back with what they computed, common/configs.py _LEGACY_DEFAULTS): model.forget_bias (1.0, as
Magenta's LSTMBlockCell), model.sigma_epsilon (0), encoding.roll_input (drums),
encoding.trio_combinations, encoding.extraction and encoding.dedupe. Magenta's checkpoints
import with musicvae/original.py.
"""

from __future__ import annotations

import ml_collections

from common import configs

VARIANTS = ('tiny', 'small', 'paper', 'tiny_hier', 'mel_2bar_small', 'mel_16bar_hier',
            'mel_16bar_flat', 'mel_16bar_hier_small', 'mel_16bar_flat_small', 'trio_16bar_hier',
            'drums_2bar')


def _base(variant: str) -> ml_collections.ConfigDict:
  c = configs.add_common_settings(ml_collections.ConfigDict(), task='musicvae', variant=variant,
                                  dataset='pop909')
  c.num_synthetic = 32
  c.batch_size = 512
  c.eval_batch_size = 256
  c.eval_split = 'valid'
  c.max_eval_examples = 2048
  c.num_train_steps = 5000
  # Training batches drawn a batch at once (numpy over rows): the per-slice pipeline cannot feed
  # an accelerator (experiments/bench_scaling.py's input rows).
  c.batched_input = True
  # LSTM products with bf16 operands (f32 accumulation, f32 weights) in training and evaluation:
  # faster where bf16 is fast (AVX512-BF16 CPUs, GPUs, TPUs); see model.use_mixed_precision.
  c.mixed_precision = False
  c.learning_rate = 1e-3
  c.min_learning_rate = 1e-5
  c.decay_rate = 0.9999
  c.grad_clip_norm = 1.0
  c.log_every_steps = 50
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 1000
  c.sample_every_steps = 1000

  c.encoding = ml_collections.ConfigDict()
  c.encoding.kind = 'melody'
  c.encoding.num_bars = 2
  c.encoding.max_silence_bars = 1.0
  c.encoding.melody_track = ''  # '' = the dataset's default (pop909 name:MELODY, nottingham first)
  c.encoding.max_transpose = 5
  # One copy of identical slices of a piece (Magenta's melody and drum converters); 'all': across
  # the data set; 'none' keeps every slice (configs recorded it as True / False before).
  c.encoding.dedupe = 'sequence'
  # Drums: the encoder reads the 9 classes hit plus a "no hit" bit (Magenta's roll_input); False
  # gives it the decoder's 512-way one-hot.
  c.encoding.roll_input = True
  # Trio: one example per combination of a melody, a bass and a drum instrument, each line on its
  # own (Magenta's TrioConverter); False merges each program range's instruments into one line.
  c.encoding.trio_combinations = True
  # Melody and drums: slices inside the melodies (per instrument) and drum tracks that Magenta
  # extracts, which end at max_silence_bars of silence; 'grid' cuts one line on a one-bar grid and
  # drops slices with more than max_silence_bars of silence.
  c.encoding.extraction = 'magenta'

  c.model = ml_collections.ConfigDict()
  c.model.z_dim = 256
  c.model.encoder_sizes = (512,)
  c.model.decoder_sizes = (256, 256)
  c.model.conductor_sizes = ()
  # Magenta's LSTMBlockCell adds 1.0 to every forget gate's pre-activation; 0 is flax's cell.
  c.model.forget_bias = 1.0
  # sigma = softplus(dense) + sigma_epsilon; Magenta adds nothing.
  c.model.sigma_epsilon = 0.0

  c.loss = ml_collections.ConfigDict()
  c.loss.max_beta = 0.2
  c.loss.beta_rate = 0.99999
  c.loss.free_bits = 0.0
  c.loss.sampling_schedule = 'inverse_sigmoid'
  c.loss.sampling_rate = 1000.0

  c.sample = ml_collections.ConfigDict()
  c.sample.temperature = 0.5
  c.sample.num_samples = 4
  return c


def lstm_params(in_features: int, sizes) -> int:
  """Parameters of stacked LSTM layers (4 gates: input and recurrent kernels, one bias)."""
  total = 0
  for size in sizes:
    total += 4 * size * (in_features + size) + 4 * size
    in_features = size
  return total


def dense_params(n_in: int, n_out: int) -> int:
  return n_in * n_out + n_out


def hier_decoder_params(vocab: int, z_dim: int, conductor_sizes, sizes) -> int:
  cond = conductor_sizes[-1]
  return (lstm_params(1, conductor_sizes) + dense_params(z_dim, 2 * sum(conductor_sizes)) +
          lstm_params(vocab + cond, sizes) + dense_params(cond, 2 * sum(sizes)) +
          dense_params(sizes[-1], vocab))


def flat_decoder_params(vocab: int, z_dim: int, sizes) -> int:
  return (lstm_params(vocab + z_dim, sizes) + dense_params(z_dim, 2 * sum(sizes)) +
          dense_params(sizes[-1], vocab))


def matched_flat_width(target: int, vocab: int, z_dim: int, num_layers: int = 2) -> int:
  """The width of a flat decoder whose parameter count is closest to `target`."""
  return min(range(8, 8192), key=lambda w: abs(
      flat_decoder_params(vocab, z_dim, (w,) * num_layers) - target))


def get_config(variant: str = 'tiny') -> ml_collections.ConfigDict:
  """A named MusicVAE config (see the module docstring)."""
  if variant not in VARIANTS:
    raise configs.unknown_variant('musicvae', variant, VARIANTS)
  c = _base(variant)
  if variant in ('tiny', 'tiny_hier'):
    c.dataset = 'synthetic'
    c.num_synthetic = 16
    c.batch_size = 8
    c.eval_batch_size = 8
    c.max_eval_examples = 16
    c.num_train_steps = 20
    c.learning_rate = 3e-3
    c.log_every_steps = 5
    c.eval_every_steps = 10
    c.checkpoint_every_steps = 10
    c.sample_every_steps = 0
    c.model.z_dim = 8
    c.model.encoder_sizes = (16,)
    c.model.decoder_sizes = (16,)
    c.loss.beta_rate = 0.99
    c.loss.sampling_rate = 10.0
    if variant == 'tiny_hier':
      c.encoding.num_bars = 4
      c.model.conductor_sizes = (16,)
  elif variant in ('small', 'mel_2bar_small'):
    pass
  elif variant == 'paper':
    c.num_train_steps = 200_000
  elif variant in ('mel_16bar_hier', 'mel_16bar_flat', 'trio_16bar_hier'):
    c.encoding.num_bars = 16
    c.encoding.max_transpose = 0
    c.model.z_dim = 512
    c.model.encoder_sizes = (2048, 2048)
    c.model.conductor_sizes = (1024, 1024)
    c.model.decoder_sizes = (1024, 1024)
    c.loss.free_bits = 256.0
    # Magenta's 16-bar configs: the full beta from the first step, teacher forcing throughout.
    c.loss.beta_rate = 0.0
    c.loss.sampling_schedule = 'constant'
    c.loss.sampling_rate = 0.0
    c.eval_batch_size = 64
    c.max_eval_examples = 512
    if variant == 'mel_16bar_flat':
      target = hier_decoder_params(90, 512, (1024, 1024), (1024, 1024))
      c.model.decoder_sizes = (matched_flat_width(target, 90, 512),) * 2
      c.model.conductor_sizes = ()
    if variant == 'trio_16bar_hier':
      c.dataset = 'midi_dir'
      c.batch_size = 256
      c.encoding.kind = 'trio'
      c.encoding.max_silence_bars = 2.0
      c.encoding.dedupe = 'none'  # Magenta's trio converter keeps repeats
  elif variant in ('mel_16bar_hier_small', 'mel_16bar_flat_small'):
    c.encoding.num_bars = 16
    c.encoding.max_transpose = 0
    c.batch_size = 32
    c.eval_batch_size = 64
    c.max_eval_examples = 512
    c.model.z_dim = 128
    c.model.encoder_sizes = (256,)
    c.model.conductor_sizes = (128,)
    c.model.decoder_sizes = (128,)
    c.loss.free_bits = 64.0
    if variant == 'mel_16bar_flat_small':
      target = hier_decoder_params(90, 128, (128,), (128,))
      c.model.decoder_sizes = (matched_flat_width(target, 90, 128),) * 2
      c.model.conductor_sizes = ()
  elif variant == 'drums_2bar':
    c.dataset = 'groove'
    c.encoding.kind = 'drums'
    c.encoding.max_transpose = 0
    c.loss.free_bits = 48.0
    c.loss.beta_rate = 0.0  # Magenta's cat-drums_2bar_small: the full beta from the first step
  return c
