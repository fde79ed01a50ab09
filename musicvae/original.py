r"""Magenta's MusicVAE checkpoints -> our MusicVAE (no TensorFlow needed).

  python -m experiments.import_weights --source=magenta --config=cat-mel_2bar_small \
      --checkpoint=downloads/cat-mel_2bar_small/cat-mel_2bar_small.ckpt --workdir=runs/mvae_magenta

CONFIGS maps Magenta's configuration names (magenta/models/music_vae/configs.py) to our configs
of the same architecture, data encoding and training settings at the published sizes;
import_model takes z and the LSTM widths from the checkpoint's variables (the fixtures are built
narrow; `sized_config` sets other widths by hand).

How Magenta's variables map onto ours (tests/musicvae/test_original.py checks the result against
outputs Magenta's own graphs computed, tests/fixtures/originals/musicvae_*.npz):
- LSTMBlockCell `.../lstm_cell/kernel` [input + units, 4 * units] multiplies concat([x, h]) with
  gate column blocks (i, j, f, o); ours keeps the input rows in `dense_i.kernel`, the recurrent rows
  in `dense_h.kernel`, with gates (i, f, j, o), and `bias` in `dense_h.bias`. The cell's constant
  forget bias 1.0 is config.model.forget_bias.
- encoder/cell_<l>/bidirectional_rnn/{fw,bw}/multi_rnn_cell/cell_0/lstm_cell -> encoder.fw[l],
  encoder.bw[l]; encoder/mu, encoder/sigma -> encoder.mu, encoder.sigma.
- flat decoder: decoder/z_to_initial_state, decoder/multi_rnn_cell/cell_<l>/lstm_cell,
  decoder/output_projection -> decoder.init, decoder.lstm, decoder.out.
- hierarchical decoder: decoder/hierarchical_level_0/{initial_state, cell_<l>/lstm_cell} ->
  decoder.conductor_init, decoder.conductor; core_decoder/decoder/... (trio:
  core_decoder/core_decoder_<k>/decoder/...) -> decoder.core_inits[k], cores[k], outs[k].
"""

from __future__ import annotations

from typing import Callable, Sequence

from flax import nnx
import ml_collections
import numpy as np

from common import weight_import
from common.errors import UserError
from musicvae import configs
from musicvae import model as model_lib
from musicvae import train


def _melody_2bar(z_dim: int, encoder_sizes, decoder_sizes, max_beta: float
                 ) -> ml_collections.ConfigDict:
  c = configs.get_config('mel_2bar_small')
  c.encoding.melody_track = 'programs:0-31'  # the converter's valid_programs (MEL_PROGRAMS)
  c.model.z_dim, c.model.encoder_sizes, c.model.decoder_sizes = z_dim, encoder_sizes, decoder_sizes
  c.loss.max_beta = max_beta
  return c


def _hierdec_16bar(variant: str) -> ml_collections.ConfigDict:
  c = configs.get_config(variant)
  if variant == 'mel_16bar_hier':
    c.encoding.melody_track = 'all'  # mel_16bar_converter keeps every program
  return c


def _drums_2bar() -> ml_collections.ConfigDict:
  c = configs.get_config('drums_2bar')
  c.encoding.roll_input = True
  return c


CONFIGS: dict[str, Callable[[], ml_collections.ConfigDict]] = {
    'cat-mel_2bar_small': lambda: _melody_2bar(256, (512,), (256, 256), 0.2),
    'cat-mel_2bar_big': lambda: _melody_2bar(512, (2048,), (2048, 2048, 2048), 0.5),
    'hierdec-mel_16bar': lambda: _hierdec_16bar('mel_16bar_hier'),
    'hierdec-trio_16bar': lambda: _hierdec_16bar('trio_16bar_hier'),
    'cat-drums_2bar_small': _drums_2bar,
}


def sized_config(name: str, z_dim: int, encoder_sizes: Sequence[int],
                 decoder_sizes: Sequence[int]) -> ml_collections.ConfigDict:
  """CONFIGS[name] with other widths (Magenta's z_size, enc_rnn_size, dec_rnn_size; the
  hierarchical conductor is as wide as the note decoder, as in Magenta)."""
  if name not in CONFIGS:
    raise UserError(f'musicvae: unknown Magenta configuration {name!r}; known: '
                    f'{", ".join(CONFIGS)}')
  c = CONFIGS[name]()
  c.model.z_dim = int(z_dim)
  c.model.encoder_sizes = tuple(int(s) for s in encoder_sizes)
  c.model.decoder_sizes = tuple(int(s) for s in decoder_sizes)
  if c.model.conductor_sizes:
    c.model.conductor_sizes = c.model.decoder_sizes
  return c


def _layer_sizes(arrays, pattern: str) -> tuple[int, ...]:
  """Units of the LSTM layers named pattern.format(layer=0, 1, ...) (their bias is 4 * units)."""
  sizes = []
  while f'{pattern.format(layer=len(sizes))}/bias' in arrays:
    sizes.append(int(np.shape(arrays[f'{pattern.format(layer=len(sizes))}/bias'])[0]) // 4)
  return tuple(sizes)


def sizes_from_variables(variables: weight_import.Variables, config: ml_collections.ConfigDict
                         ) -> dict[str, object]:
  """The z_dim and LSTM widths of the checkpoint (Magenta's z_size, enc_rnn_size, dec_rnn_size)
  as config.model settings, for the architecture `config` describes; widths the checkpoint does
  not show are left out (a missing variable is then reported by name)."""
  arrays = variables.arrays
  sizes: dict[str, object] = {}
  if 'encoder/mu/kernel' in arrays:
    sizes['z_dim'] = int(np.shape(arrays['encoder/mu/kernel'])[1])
  encoder = _layer_sizes(
      arrays, 'encoder/cell_{layer}/bidirectional_rnn/fw/multi_rnn_cell/cell_0/lstm_cell')
  if config.model.conductor_sizes:
    core = ('core_decoder/core_decoder_0/decoder' if config.encoding.kind == 'trio' else
            'core_decoder/decoder')
    decoder = _layer_sizes(arrays, core + '/multi_rnn_cell/cell_{layer}/lstm_cell')
    conductor = _layer_sizes(arrays, 'decoder/hierarchical_level_0/cell_{layer}/lstm_cell')
  else:
    decoder = _layer_sizes(arrays, 'decoder/multi_rnn_cell/cell_{layer}/lstm_cell')
    conductor = ()
  for name, value in (('encoder_sizes', encoder), ('decoder_sizes', decoder),
                      ('conductor_sizes', conductor)):
    if value:
      sizes[name] = value
  return sizes


def _is_training_state(name: str) -> bool:
  """Optimizer slots and counters that a training checkpoint holds beside the weights."""
  leaf = name.rsplit('/', 1)[-1]
  return (leaf in ('global_step', 'beta1_power', 'beta2_power') or
          leaf.startswith(('Adam', 'Adam_1')))


def _dense(variables: weight_import.Variables, layer: nnx.Linear, name: str) -> None:
  weight_import.assign(layer.kernel, variables.get(f'{name}/kernel'), f'{name}/kernel',
                       variables.source)
  weight_import.assign(layer.bias, variables.get(f'{name}/bias'), f'{name}/bias',
                       variables.source)


def _lstm_cell(variables: weight_import.Variables, cell: nnx.OptimizedLSTMCell, name: str
               ) -> None:
  """LSTMBlockCell's kernel [in + H, 4H] (gates i, j, f, o) and bias -> our cell."""
  kernel, bias = variables.get(f'{name}/kernel'), variables.get(f'{name}/bias')
  if kernel.ndim != 2 or kernel.shape[1] % 4 or bias.shape != (kernel.shape[1],):
    raise UserError(f'{variables.source}: {name} is not an LSTM cell (kernel '
                    f'{kernel.shape}, bias {bias.shape})')
  units = kernel.shape[1] // 4
  i, j, f, o = (np.arange(units) + g * units for g in range(4))
  order = np.concatenate([i, f, j, o])  # ours: i, f, g (= j), o
  kernel, bias = kernel[:, order], bias[order]
  in_features = cell.dense_i.kernel.shape[0]
  weight_import.assign(cell.dense_i.kernel, kernel[:in_features], f'{name}/kernel',
                       variables.source)
  weight_import.assign(cell.dense_h.kernel, kernel[in_features:], f'{name}/kernel',
                       variables.source)
  weight_import.assign(cell.dense_h.bias, bias, f'{name}/bias', variables.source)


def _stack(variables: weight_import.Variables, lstm: model_lib.StackedLSTM, name: str) -> None:
  for layer, cell in enumerate(lstm.cells):
    _lstm_cell(variables, cell, name.format(layer=layer))


def assign_variables(model: model_lib.MusicVAE, variables: weight_import.Variables) -> None:
  """Sets every parameter of `model` from Magenta's variables (UserError naming the first one
  missing or of the wrong shape)."""
  encoder = model.encoder
  for layer, (fw, bw) in enumerate(zip(encoder.fw, encoder.bw)):
    prefix = f'encoder/cell_{layer}/bidirectional_rnn'
    _stack(variables, fw, f'{prefix}/fw/multi_rnn_cell/cell_0/lstm_cell')
    _stack(variables, bw, f'{prefix}/bw/multi_rnn_cell/cell_0/lstm_cell')
  _dense(variables, encoder.mu, 'encoder/mu')
  _dense(variables, encoder.sigma, 'encoder/sigma')
  decoder = model.decoder
  if isinstance(decoder, model_lib.FlatDecoder):
    _dense(variables, decoder.init, 'decoder/z_to_initial_state')
    _stack(variables, decoder.lstm, 'decoder/multi_rnn_cell/cell_{layer}/lstm_cell')
    _dense(variables, decoder.out, 'decoder/output_projection')
    return
  _dense(variables, decoder.conductor_init, 'decoder/hierarchical_level_0/initial_state')
  _stack(variables, decoder.conductor, 'decoder/hierarchical_level_0/cell_{layer}/lstm_cell')
  num_tracks = len(decoder.vocab_sizes)
  for k in range(num_tracks):
    prefix = 'core_decoder/decoder' if num_tracks == 1 else f'core_decoder/core_decoder_{k}/decoder'
    _dense(variables, decoder.core_inits[k], f'{prefix}/z_to_initial_state')
    _stack(variables, decoder.cores[k], f'{prefix}/multi_rnn_cell/cell_{{layer}}/lstm_cell')
    _dense(variables, decoder.outs[k], f'{prefix}/output_projection')


def import_model(variables: weight_import.Variables, config: ml_collections.ConfigDict
                 ) -> model_lib.MusicVAE:
  """Our MusicVAE of `config`, at the widths of the checkpoint (written back into `config`, which
  the workdir records), with every parameter from Magenta's `variables`."""
  for name, value in sizes_from_variables(variables, config).items():
    config.model[name] = value
  config.mixed_precision = False
  model = train.build_model(config, nnx.Rngs(config.get('seed', 0)))
  assign_variables(model, variables)
  unused = variables.unused(ignore=_is_training_state)
  if unused:
    raise UserError(f'{variables.source}: variable {unused[0]!r} has no place in this config '
                    f'({len(unused)} unused); pick the --config the checkpoint was trained with')
  return model
