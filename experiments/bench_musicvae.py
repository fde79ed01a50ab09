"""MusicVAE benchmarks: train steps, sampling and encoding for mel_2bar_small and the 16-bar
hierarchical melody model.

The original TensorFlow code (Magenta's cat-mel_2bar_small and hierdec-mel_16bar) runs the same
train steps, sampling and encoding in the same run (originals/bench.py through
experiments/bench_originals.py, rows original/musicvae/...), and the table gives each ratio; the
original trains in float32 only, so both our f32 and our mixed-precision train steps pair with its
one train step of that batch size.
"""

from __future__ import annotations

import resource

from flax import nnx
import jax
import numpy as np

from experiments import benchmarks as bench
from musicvae import configs
from musicvae import data
from musicvae import sample as sample_lib
from musicvae import train as musicvae_train

NUM_EXAMPLES = 64


# XLA's cost analysis counts a lax.scan body once, whatever its trip count, so it under-counts an
# LSTM by the sequence length. FLOPs here are counted by hand instead: 2 per weight per use (one
# multiply-add); biases and gate nonlinearities are left out. The decoders' conditioning input (z
# for the flat decoder, the conductor's c for the note decoders) is the same at every step of a
# sequence or bar, so its share of the input transform runs once per sequence or bar, not per step
# (the original computes it at every step: ~351 GFLOP per batch-512 step by this rule, against
# ~333 here).


def _encoder_weights(config) -> int:
  enc = data.encoding_from_config(config)
  return 2 * configs.lstm_params(sum(enc.vocab_sizes), config.model.encoder_sizes)  # 2 directions


def _decoder_weights_per_step(config) -> int:
  """Weights used at every decoder step: previous-token input, recurrent, deeper layers, output."""
  enc = data.encoding_from_config(config)
  sizes = config.model.decoder_sizes
  if config.model.get('conductor_sizes'):
    return sum(configs.lstm_params(v, sizes) + sizes[-1] * v for v in enc.vocab_sizes)
  vocab = sum(enc.vocab_sizes)
  return configs.lstm_params(vocab, sizes) + sizes[-1] * vocab


def _decoder_weights_per_sequence(config) -> int:
  """Weights used once per sequence (flat: z's input transform and the initial state) or once per
  bar (hierarchical: the conductor step, c's input transforms and the note decoders' states)."""
  enc = data.encoding_from_config(config)
  m = config.model
  state = 2 * sum(m.decoder_sizes)
  if m.get('conductor_sizes'):
    cond = m.conductor_sizes[-1]
    per_bar = (configs.lstm_params(1, m.conductor_sizes) +
               len(enc.vocab_sizes) * (cond * 4 * m.decoder_sizes[0] + cond * state))
    return per_bar * enc.num_bars + m.z_dim * 2 * sum(m.conductor_sizes)
  return m.z_dim * 4 * m.decoder_sizes[0] + m.z_dim * state


def analytic_flops(config, batch_size: int, *, encoder: bool, decoder: bool,
                   train: bool = False) -> float:
  """2 x weights used x batch (x3 for a training step's forward + backward)."""
  enc = data.encoding_from_config(config)
  per_example = 0
  if encoder:
    per_example += _encoder_weights(config) * enc.num_steps
  if decoder:
    per_example += (_decoder_weights_per_step(config) * enc.num_steps +
                    _decoder_weights_per_sequence(config))
  return 2.0 * per_example * batch_size * (3 if train else 1)


def _random_tokens(config, batch_size: int, rng: np.random.Generator) -> np.ndarray:
  enc = data.encoding_from_config(config)
  columns = [rng.integers(0, v, size=(batch_size, enc.num_steps)) for v in enc.vocab_sizes]
  return np.stack(columns, axis=-1).astype(np.int32)


def train_step_result(name: str, config, batch_size: int, *, repeats: int, warmup: int,
                      note: str = '') -> dict:
  config = config.copy_and_resolve_references()
  config.batch_size = batch_size
  # Hand-counted FLOPs (see above): XLA's count misses the scans' trip counts.
  seconds, _ = bench.time_train_step(
      musicvae_train.get_task(config),
      config, {'tokens': _random_tokens(config, batch_size, np.random.default_rng(0))},
      repeats=repeats, warmup=warmup, count_flops=False)
  flops = analytic_flops(config, batch_size, encoder=True, decoder=True, train=True)
  return bench.result(name, seconds, flops=flops,
                      throughput=f'{batch_size / seconds:.0f} examples/s',
                      note=f'batch {batch_size}{note}')


def _model(config):
  model = musicvae_train.build_model(config, nnx.Rngs(0))
  model.eval()
  return model


def sample_result(name: str, config, *, repeats: int, warmup: int) -> dict:
  """NUM_EXAMPLES sequences from z ~ N(0, I), decoded to NoteSequences."""
  model = _model(config)
  enc = data.encoding_from_config(config)
  key = jax.random.key(0)
  seconds = bench.median_seconds(lambda: sample_lib.sample(model, NUM_EXAMPLES, key, enc),
                                 repeats=repeats, warmup=warmup)
  flops = analytic_flops(config, NUM_EXAMPLES, encoder=False, decoder=True)
  return bench.result(name, seconds, flops=flops,
                      throughput=f'{NUM_EXAMPLES / seconds:.0f} sequences/s',
                      note=f'{NUM_EXAMPLES} x {enc.num_steps} steps, to NoteSequences')


def encode_result(name: str, config, *, repeats: int, warmup: int) -> dict:
  """NUM_EXAMPLES melodies from NoteSequences (slice extraction included) to z."""
  model = _model(config)
  enc = data.encoding_from_config(config)
  seqs = data.synthetic_melodies(NUM_EXAMPLES, num_bars=enc.num_bars, seed=0)
  seconds = bench.median_seconds(lambda: sample_lib.encode(model, seqs, enc),
                                 repeats=repeats, warmup=warmup)
  flops = analytic_flops(config, NUM_EXAMPLES, encoder=True, decoder=False)
  return bench.result(name, seconds, flops=flops,
                      throughput=f'{NUM_EXAMPLES / seconds:.0f} sequences/s',
                      note=f'{NUM_EXAMPLES} NoteSequences of {enc.num_bars} bars')


_F32 = '; float32'
_MIXED = '; --config.mixed_precision=True (bf16 LSTM products, f32 accumulation and weights)'
# The 16-bar rows take seconds a call: at most this many timed and untimed calls (the original's
# rows in bench_originals take the same caps).
HIER_MAX_REPEATS, HIER_MAX_WARMUP = 3, 1


def mel_2bar_small(repeats: int, warmup: int) -> list[dict]:
  config = configs.get_config('mel_2bar_small')
  mixed = configs.get_config('mel_2bar_small')
  mixed.mixed_precision = True
  return [
      train_step_result('musicvae/mel_2bar_small/train_step_b512', config, 512, repeats=repeats,
                        warmup=warmup, note=_F32),
      train_step_result('musicvae/mel_2bar_small/train_step_b64', config, 64, repeats=repeats,
                        warmup=warmup, note=_F32),
      train_step_result('musicvae/mel_2bar_small/train_step_b512_mixed', mixed, 512,
                        repeats=repeats, warmup=warmup, note=_MIXED),
      train_step_result('musicvae/mel_2bar_small/train_step_b64_mixed', mixed, 64,
                        repeats=repeats, warmup=warmup, note=_MIXED),
      sample_result('musicvae/mel_2bar_small/sample64', config, repeats=repeats, warmup=warmup),
      encode_result('musicvae/mel_2bar_small/encode64', config, repeats=repeats, warmup=warmup),
  ]


def mel_16bar_hier(repeats: int, warmup: int) -> list[dict]:
  config = configs.get_config('mel_16bar_hier')
  repeats, warmup = min(repeats, HIER_MAX_REPEATS), min(warmup, HIER_MAX_WARMUP)
  results = [
      sample_result('musicvae/mel_16bar_hier/sample64', config, repeats=repeats, warmup=warmup),
      encode_result('musicvae/mel_16bar_hier/encode64', config, repeats=repeats, warmup=warmup),
  ]
  train = train_step_result('musicvae/mel_16bar_hier/train_step_b64', config, 64,
                            repeats=repeats, warmup=warmup)
  peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  train['note'] += f'; peak resident memory of the benchmark process {peak_gib:.1f} GiB'
  train['peak_gib'] = peak_gib
  return results + [train]


# The benchmarks of this module by name (experiments/benchmark.py lists every module's).
BENCHMARKS = {
    'musicvae/mel_2bar_small': mel_2bar_small,
    'musicvae/mel_16bar_hier': mel_16bar_hier,
}
