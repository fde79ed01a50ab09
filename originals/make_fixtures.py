"""Writes fidelity fixtures computed by the ORIGINAL implementations' own code.

    .venv-originals/bin/python originals/make_fixtures.py              # every fixture
    .venv-originals/bin/python originals/make_fixtures.py --only=NAME  # one (or NAME,NAME)

Needs the environment that `bash originals/setup.sh` (or `make originals`) creates: Magenta 2.1.4
on TensorFlow-CPU 2.15.1. Writes tests/fixtures/originals/<NAME>.npz (np.savez_compressed) with:

    var/<variable name>   every variable the forward pass uses, named exactly as Magenta's graph
                          (TF variable name without ':0') or PianoNet's Keras model names it
    meta/config_json      JSON string: hyperparameters, versions, how inputs and outputs were made
    input/...  output/... arrays fed to and fetched from the original's own graph (inference mode)
    converter/...         (MusicVAE) what the config's data converter's to_tensors() returns

Magenta graphs are built with Magenta's own functions at reduced widths (same structure), with
Magenta's random initialisation, then biases, batch-norm statistics and the N(0, 0.001)-initialised
dense kernels are overwritten with seeded random values (recorded in meta) so that a missed bias
or a wrong batch-norm mode shows in a comparison. PianoNet uses the released trained weights.
Without --only, each fixture runs in its own subprocess (Magenta needs TF1 graph mode, PianoNet's
Keras models load in eager mode; one process per fixture keeps both clean), then every written
file is reloaded and its keys and shapes are checked.
"""
import argparse
import copy
import glob
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import compat  # noqa: E402,F401  (shims before magenta / tensorflow users)
import numpy as np  # noqa: E402

OUT_DIR = os.path.join(ROOT, 'tests', 'fixtures', 'originals')
SHARED = os.environ.get('SHARED_DIR', os.path.join(os.path.dirname(ROOT), 'shared'))
JSB_NPZ = os.path.join(SHARED, 'data', 'jsb', 'Jsb16thSeparated.npz')
MAESTRO_DIR = os.path.join(SHARED, 'data', 'maestro-v2')
PIANONET_DIR = os.path.join(SHARED, 'models', 'pianonet_original')
MAGENTA_VERSION = '2.1.4'
MAX_BYTES = 2 * 1024 * 1024

COCONET = ('coconet_straight', 'coconet_dilated_sep')
MUSICVAE = {  # fixture name -> (CONFIG_MAP name, batch size)
    'musicvae_cat-mel_2bar_small': ('cat-mel_2bar_small', 2),
    'musicvae_cat-mel_2bar_big': ('cat-mel_2bar_big', 2),
    'musicvae_hierdec-mel_16bar': ('hierdec-mel_16bar', 2),
    'musicvae_hierdec-trio_16bar': ('hierdec-trio_16bar', 1),  # B=1 keeps the file < 2 MB
    'musicvae_cat-drums_2bar_small': ('cat-drums_2bar_small', 2),
}
PIANONET = {'pianonet_r5p3': 'r5p3_300kparams_4_blocks_12_12_12_12_model',
            'pianonet_micro_1': 'micro_1'}
ALL = list(COCONET) + list(MUSICVAE) + list(PIANONET)


# ------------------------------------------------------------------------------------------------
# Shared helpers


def _versions():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import note_seq  # pylint: disable=g-import-not-at-top
  return {'magenta': MAGENTA_VERSION, 'tensorflow': tf.__version__,
          'note_seq': getattr(note_seq, '__version__', '0.0.5'), 'numpy': np.__version__,
          'python': sys.version.split()[0]}


def _save(name, arrays, meta):
  """Writes OUT_DIR/name.npz; float arrays as float32, the meta as a JSON string."""
  os.makedirs(OUT_DIR, exist_ok=True)
  out = {}
  for key, value in arrays.items():
    value = np.asarray(value)
    if value.dtype.kind == 'f' or value.dtype == bool:
      value = value.astype(np.float32)
    out[key] = value
  meta = dict(meta, versions=_versions(), fixture=name,
              regenerate='.venv-originals/bin/python originals/make_fixtures.py --only=%s' % name)
  out['meta/config_json'] = np.array(json.dumps(meta, indent=1, sort_keys=True, default=str))
  path = os.path.join(OUT_DIR, name + '.npz')
  np.savez_compressed(path, **out)
  size = os.path.getsize(path)
  print('wrote %s (%.0f kB, %d arrays)' % (path, size / 1024, len(out)))
  if size > MAX_BYTES:
    raise RuntimeError('%s is %d bytes, over the 2 MB limit' % (path, size))


def _session_config():
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  # One thread: deterministic reductions, and the machine is shared.
  return tf.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)


def _randomise(sess, rules):
  """Overwrites variables by rule; returns {var name: rule description} for the meta.

  rules: list of (predicate(name, shape) -> bool, description, sampler(shape) -> array); the
  first matching rule wins; variables no rule matches keep the graph's own initial value.
  """
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  applied = {}
  for v in tf.global_variables():
    name, shape = v.name[:-2], v.shape.as_list()
    for predicate, description, sampler in rules:
      if predicate(name, shape):
        v.load(sampler(shape).astype(np.float32), sess)
        applied[name] = description
        break
    else:
      applied[name] = 'graph initializer (kept: glorot_uniform for kernels)'
  return applied


def _variables(sess, exclude=('global_step',)):
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  variables = [v for v in tf.global_variables() if v.name[:-2] not in exclude]
  values = sess.run(variables)
  return {'var/' + v.name[:-2]: val for v, val in zip(variables, values)}


# ------------------------------------------------------------------------------------------------
# Coconet


def _jsb_pieces(crop, batch):
  """Real JSB test chorales (SATB MIDI pitches, NaN = silent), crops of `crop` 16th steps.

  Item 0: test piece 0 from step 16. Item 1: test piece 6 around its first silent (NaN) voice,
  so that an all-zero pitch row (a silent voice) is in the input.
  """
  data = np.load(JSB_NPZ, allow_pickle=True, encoding='latin1')
  test = data['test']
  pieces = [np.asarray(test[0], np.float32)[16:16 + crop]]
  p6 = np.asarray(test[6], np.float32)
  first_nan = int(np.argwhere(np.isnan(p6))[0, 0])
  start = max(0, min(first_nan - crop // 2, len(p6) - crop))
  pieces.append(p6[start:start + crop])
  pieces = pieces[:batch]
  sources = [('test', 0, 16), ('test', 6, start)][:batch]
  return np.stack(pieces), sources


def make_coconet(name):
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  tf.disable_v2_behavior()
  tf.logging.set_verbosity(tf.logging.ERROR)
  from magenta.models.coconet import lib_graph  # pylint: disable=g-import-not-at-top
  from magenta.models.coconet import lib_hparams  # pylint: disable=g-import-not-at-top
  from magenta.models.coconet import lib_mask  # pylint: disable=g-import-not-at-top
  from magenta.models.coconet import lib_pianoroll  # pylint: disable=g-import-not-at-top

  seed = {'coconet_straight': 1, 'coconet_dilated_sep': 2}[name]
  common = dict(min_pitch=36, max_pitch=81, num_instruments=4, separate_instruments=True,
                quantization_level=0.125, batch_norm=True, use_residual=True,
                maskout_method='orderless', rescale_loss=True, optimize_mask_only=False,
                mask_indicates_context=False, batch_size=2)
  if name == 'coconet_straight':
    kw = dict(common, architecture='straight', num_layers=6, num_filters=16,
              use_sep_conv=False, crop_piece_len=16)
    original = ('paper model: architecture straight, num_layers 64, num_filters 128 '
                '(published checkpoint); reduced here to 6 layers x 16 filters, crop 16')
  else:
    kw = dict(common, architecture='dilated', num_dilation_blocks=1, dilate_time_only=False,
              repeat_last_dilation_level=False, num_filters=16, use_sep_conv=True,
              sep_conv_depth_multiplier=1, num_initial_regular_conv_layers=2,
              num_pointwise_splits=1, interleave_split_every_n_layers=1, crop_piece_len=32)
    original = ('Bach-Doodle-style model: architecture dilated, use_sep_conv, 2 initial regular '
                'convs, depth multiplier 1; reduced here to 1 dilation block, 16 filters, crop 32')
  hparams = lib_hparams.Hyperparameters(**kw)
  arch = hparams.get_conv_arch()
  bb, tt, pp, ii = [hparams.batch_size] + hparams.pianoroll_shape

  pitches, sources = _jsb_pieces(tt, bb)
  encoder = lib_pianoroll.PianorollEncoderDecoder(
      shortest_duration=0.125, min_pitch=hparams.min_pitch, max_pitch=hparams.max_pitch,
      separate_instruments=True, num_instruments=ii, quantization_level=0.125)
  rolls = np.stack([encoder.encode(p) for p in pitches]).astype(np.float32)
  np.random.seed(seed)  # lib_mask draws from NumPy's global generator
  masks = np.stack([lib_mask.get_mask('orderless', hparams.pianoroll_shape,
                                      separate_instruments=True) for _ in range(bb)])
  masks = masks.astype(np.float32)
  lengths = np.full([bb], tt, np.float32)

  rng = np.random.default_rng(seed)
  graph = tf.Graph()
  with graph.as_default():
    tf.set_random_seed(seed)
    model = lib_graph.build_graph(is_training=False, hparams=hparams)
    with tf.Session(config=_session_config()) as sess:
      sess.run(tf.global_variables_initializer())

      def he_normal(shape, fan_in):
        return rng.normal(0., np.sqrt(2. / fan_in), shape)
      rules = [
          (lambda n, s: n.endswith('/weights'),
           'He normal, std sqrt(2 / (kh*kw*in)) (Magenta trains with he_normal, lib_graph.py:257;'
           ' the eval-mode graph would fall back to U(-init_scale, init_scale))',
           lambda s: he_normal(s, np.prod(s[:-1]))),
          (lambda n, s: n.endswith('/depthwise_kernel'),
           'He normal, std sqrt(2 / (kh*kw))', lambda s: he_normal(s, s[0] * s[1])),
          (lambda n, s: n.endswith('/pointwise_kernel'),
           'He normal, std sqrt(2 / (in*multiplier))', lambda s: he_normal(s, s[2])),
          (lambda n, s: n.endswith('/gamma'), 'U(0.5, 1.5)',
           lambda s: rng.uniform(0.5, 1.5, s)),
          (lambda n, s: n.endswith('/beta'), 'N(0, 0.1)', lambda s: rng.normal(0., 0.1, s)),
          (lambda n, s: n.endswith('/bias'), 'N(0, 0.1)', lambda s: rng.normal(0., 0.1, s)),
      ]
      init_rules = _randomise(sess, rules)
      feed = {model.placeholders['pianorolls']: rolls, model.placeholders['masks']: masks,
              model.placeholders['lengths']: lengths}
      # Population statistics near the real ones (as Magenta's own population-statistics pass
      # would give), perturbed so that mean and variance both matter: layer by layer,
      # popmean = batch mean + N(0, 0.1) * batch std, popvariance = batch variance * U(0.5, 1.5).
      # Without this, activations grow layer after layer and the logits reach magnitudes where
      # float32 sums no longer agree to 1e-5 between frameworks.
      for i in range(len(arch.layers)):
        pre_bn = graph.get_operation_by_name('model/conv%d/batchnorm/mul_1' % i).inputs[0]
        x = sess.run(pre_bn, feed_dict=feed)
        mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
        scope = 'model/conv%d/' % i
        for v in tf.global_variables():
          if v.name == scope + 'popmean:0':
            v.load((mean + rng.normal(0., 0.1, mean.shape) * np.sqrt(var)).reshape(
                v.shape.as_list()).astype(np.float32), sess)
          elif v.name == scope + 'popvariance:0':
            v.load((var * rng.uniform(0.5, 1.5, var.shape)).reshape(
                v.shape.as_list()).astype(np.float32), sess)
        init_rules[scope + 'popmean'] = ('batch mean of this input + N(0, 0.1) * batch std '
                                         '(layer by layer)')
        init_rules[scope + 'popvariance'] = 'batch variance of this input * U(0.5, 1.5)'
      fetches = dict(logits=model.logits, predictions=model.predictions,
                     loss_total=model.loss_total, loss_mask=model.loss_mask,
                     loss_unmask=model.loss_unmask, convnet_input=graph.get_tensor_by_name(
                         'model/concat:0'))
      hidden_names = [h.name for h in model.hiddens]
      out = sess.run(fetches, feed_dict=feed)
      arrays = _variables(sess)

  # The graph's own input tensor must be concat(rolls * (1 - masks), masks) on the channel axis.
  expected_input = np.concatenate([rolls * (1. - masks), masks], axis=3)
  assert np.array_equal(out['convnet_input'], expected_input)
  logits = out['logits']
  print('%s: logits mean %.3f std %.3f; max softmax mean %.3f' % (
      name, logits.mean(), logits.std(), out['predictions'].max(axis=2).mean()))
  arrays.update({
      'input/pianorolls': rolls, 'input/masks': masks, 'input/lengths': lengths,
      'input/jsb_pitches': pitches,
      'output/logits': logits, 'output/predictions': out['predictions'],
      'output/loss_total': np.float32(out['loss_total']),
      'output/loss_mask': np.float32(out['loss_mask']),
      'output/loss_unmask': np.float32(out['loss_unmask']),
  })

  def layer_json(i, layer):
    d = {k: v for k, v in layer.items() if k != 'activation'}
    d['activation'] = 'identity' if 'activation' in layer else 'relu'
    d['separable'] = bool(hparams.use_sep_conv and i >= hparams.num_initial_regular_conv_layers)
    d['batch_norm'] = bool(hparams.batch_norm)
    d['residual_added_pre_activation_from_layer'] = (
        i - 2 if (i >= 2 and i % 2 == 0 and i != len(arch.layers) - 1 and
                  layer['filters'][-1] == hparams.num_filters) else None)
    return d

  meta = {
      'model': 'coconet', 'original_config': original,
      'hparams': {k: v for k, v in sorted(hparams.__dict__.items())},
      'derived': {'num_pitches': hparams.num_pitches, 'input_depth': hparams.input_depth,
                  'output_depth': hparams.output_depth,
                  'use_softmax_loss': hparams.use_softmax_loss,
                  'pianoroll_shape': hparams.pianoroll_shape, 'architecture_name': arch.name},
      'layers': [layer_json(i, l) for i, l in enumerate(arch.layers)],
      'graph': 'magenta.models.coconet.lib_graph.build_graph(is_training=False, hparams) with '
               'placeholders pianorolls/masks/lengths; fetched model.logits, model.predictions, '
               'model.loss_total/loss_mask/loss_unmask',
      'hidden_tensors': hidden_names,
      'input_construction': 'concat([pianorolls * (1 - masks), masks], axis=3): channels = 4 '
                            'masked rolls then 4 masks (mask_indicates_context=False: mask 1 = '
                            'to be predicted); lib_graph.py:117-129',
      'residual': 'residual_period 2: layer i (even, i >= 2, not the last, same channel count) '
                  'adds the post-activation output of layer i-2 after batch norm and before '
                  'its activation; lib_graph.py:94-101, 218-248',
      'batch_norm': 'eval mode: (x - popmean) / sqrt(popvariance + eps) * gamma + beta with '
                    'eps = batch_norm_variance_epsilon = 1e-7; gamma [1,1,1,F] (init 0.1), '
                    'beta [F] (init 0); no conv bias when batch_norm; lib_graph.py:314-357',
      'padding': "SAME everywhere; TF SAME for the even 2x2 kernels pads 0 before and 1 after "
                 "on both time and pitch; dilated 3x3 pads the dilation rate on both sides",
      'softmax_axis': 2,
      'inputs': {'jsb_sources': sources, 'masks': "lib_mask.get_mask('orderless', ...) after "
                 'np.random.seed(%d)' % seed,
                 'pianorolls': 'lib_pianoroll.PianorollEncoderDecoder.encode of real JSB test '
                               'chorale crops (input/jsb_pitches, NaN = silent voice -> all-zero '
                               'pitch row)'},
      'variable_init': init_rules,
      'seed': seed,
  }
  _save(name, arrays, meta)


# ------------------------------------------------------------------------------------------------
# MusicVAE: NoteSequences the script constructs, converted by the config's own data converter


def _ns(notes, total_steps, qpm=120.):
  """notes: (pitch, start_step, end_step, program, instrument, is_drum); 16th-note steps."""
  import note_seq  # pylint: disable=g-import-not-at-top
  ns = note_seq.NoteSequence(ticks_per_quarter=220)
  ns.tempos.add(time=0., qpm=qpm)
  ns.time_signatures.add(time=0., numerator=4, denominator=4)
  step = 60. / qpm / 4.
  for pitch, start, end, program, instrument, is_drum in notes:
    ns.notes.add(pitch=int(pitch), start_time=start * step, end_time=end * step, velocity=90,
                 program=program, instrument=instrument, is_drum=is_drum)
  ns.total_time = total_steps * step
  return ns


def _midi_bytes(ns):
  import note_seq  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'x.mid')
    note_seq.sequence_proto_to_midi_file(ns, path)
    with open(path, 'rb') as f:
      return f.read()


SCALE = [0, 2, 4, 5, 7, 9, 11]


def _melody_notes(rng, bars, low=60, high=84, program=0, instrument=0, chords=False,
                  end_margin=2):
  """A random-walk diatonic melody that fills `bars` bars (no gap of a bar), with short rests;
  optionally with a few two-note chords (the converter keeps the highest pitch)."""
  pitches = [p for p in range(low, high + 1) if p % 12 in SCALE]
  notes, t, idx = [], 0, len(pitches) // 2
  total = bars * 16 - end_margin
  while t < total:
    dur = int(rng.choice([1, 2, 2, 3, 4, 4, 6, 8]))
    dur = min(dur, total - t)
    if t > 0 and rng.random() < 0.12:  # a short rest
      t += int(rng.choice([1, 2]))
      continue
    idx = int(np.clip(idx + rng.choice([-2, -1, -1, 0, 1, 1, 2, 3]), 0, len(pitches) - 1))
    notes.append((pitches[idx], t, t + dur, program, instrument, False))
    if chords and rng.random() < 0.15 and idx >= 2:
      notes.append((pitches[idx - 2], t, t + dur, program, instrument, False))
    t += dur
  return notes


def _bass_notes(rng, bars, program=33, instrument=2):
  roots = [36, 41, 43, 38, 45, 40]
  notes = []
  for b in range(bars):
    root = roots[int(rng.integers(len(roots)))]
    for beat in range(4):
      pitch = root + (7 if beat == 2 else 0)
      start = b * 16 + beat * 4
      notes.append((pitch, start, start + 3, program, instrument, False))
  return notes


def _drum_notes(rng, bars, instrument=9, end_margin=0):
  """A rock-ish pattern with variations; several pitches per class (35/36 kick, 38/40 snare,
  42/44 closed hat, 46 open hat, toms 45/48/50, crash 49, ride 51) to exercise the mapping."""
  notes = []
  for b in range(bars):
    o = b * 16
    kick = rng.choice([36, 35])
    hits = [(kick, 0), (kick, 8), (38, 4), (38, 12)]
    hits += [(42 if rng.random() < 0.8 else 44, s) for s in range(0, 16, 2)]
    if rng.random() < 0.5:
      hits.append((kick, 10))
    if rng.random() < 0.4:
      hits.append((40, 15))
    if b % 2 == 1:  # a fill at the end of every second bar
      hits += [(50, 12), (48, 13), (45, 14), (46, 15)]
    if b % 4 == 0:
      hits.append((49, 0))
    if rng.random() < 0.3:
      hits.append((51, 6))
    for pitch, s in hits:
      if o + s < bars * 16 - end_margin:
        notes.append((int(pitch), o + s, o + s + 1, 0, instrument, True))
  return notes


def _musicvae_sequences(config_name, rng):
  """Returns a list of (description, NoteSequence)."""
  if config_name in ('cat-mel_2bar_small', 'cat-mel_2bar_big'):
    return [('2-bar melody, program 0', _ns(_melody_notes(rng, 2), 32)),
            ('2-bar melody, program 0, with some 2-note chords (converter keeps the top note)',
             _ns(_melody_notes(rng, 2, low=55, high=79, chords=True), 32))]
  if config_name == 'hierdec-mel_16bar':
    return [('16-bar melody, program 0', _ns(_melody_notes(rng, 16), 256)),
            ('16-bar melody, program 0, with some 2-note chords',
             _ns(_melody_notes(rng, 16, low=57, high=81, chords=True), 256))]
  if config_name == 'cat-drums_2bar_small':
    return [('2-bar drum pattern (GM drums, channel 10)', _ns(_drum_notes(rng, 2), 32)),
            ('2-bar drum pattern, another draw', _ns(_drum_notes(rng, 2), 32))]
  if config_name == 'hierdec-trio_16bar':
    notes = (_melody_notes(rng, 16, program=0, instrument=0, chords=True, end_margin=0) +
             _melody_notes(rng, 16, low=67, high=91, program=25, instrument=1, end_margin=0) +
             _bass_notes(rng, 16, program=33, instrument=2) +
             _drum_notes(rng, 16, instrument=9))
    return [('16-bar trio: two melody-range instruments (piano program 0 with chords, guitar '
             'program 25), electric bass program 33, drums', _ns(notes, 256))]
  raise ValueError(config_name)


def make_musicvae(name):
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  tf.disable_v2_behavior()
  tf.logging.set_verbosity(tf.logging.ERROR)
  import note_seq  # pylint: disable=g-import-not-at-top
  from magenta.models.music_vae import configs  # pylint: disable=g-import-not-at-top
  from magenta.models.music_vae import lstm_models  # pylint: disable=g-import-not-at-top

  config_name, batch = MUSICVAE[name]
  seed = 10 + sorted(MUSICVAE).index(name)
  rng = np.random.default_rng(seed)
  # As TrainedModel does (trained_model.py:58-60): a copy of the config, converter in 'infer' mode.
  config = copy.deepcopy(configs.CONFIG_MAP[config_name])
  converter = config.data_converter
  converter.set_mode('infer')
  hparams = config.hparams
  original_sizes = {k: copy.deepcopy(getattr(hparams, k)) for k in
                    ('z_size', 'enc_rnn_size', 'dec_rnn_size', 'batch_size',
                     'sampling_schedule', 'sampling_rate')}
  if config_name == 'hierdec-trio_16bar':
    reduced = dict(z_size=12, enc_rnn_size=[16, 16], dec_rnn_size=[20, 20])
  else:
    reduced = dict(z_size=16, enc_rnn_size=[32] * len(hparams.enc_rnn_size),
                   dec_rnn_size=[24] * len(hparams.dec_rnn_size))
  for k, v in reduced.items():
    setattr(hparams, k, v)
  hparams.batch_size = batch
  # Teacher forcing: the 2-bar configs train with scheduled sampling ('inverse_sigmoid'), which
  # in an is_training=False graph becomes constant sampling probability 1.0
  # (lstm_utils.py:134-141), i.e. the decoder would feed back its own samples. Constant 0 selects
  # the TrainingHelper path (lstm_models.py:336-341). This changes no variable.
  hparams.sampling_schedule = 'constant'
  hparams.sampling_rate = 0.0

  # NoteSequences -> MIDI bytes -> NoteSequence (what a user's file gives) -> converter tensors.
  sequences = _musicvae_sequences(config_name, rng)
  arrays, conv_meta = {}, []
  enc_inputs, dec_outputs, lengths = [], [], []
  for i, (description, ns) in enumerate(sequences):
    midi = _midi_bytes(ns)
    ns_read = note_seq.midi_to_note_sequence(midi)
    tensors = converter.to_tensors(ns_read)
    if not tensors.inputs:
      raise RuntimeError('%s: converter gave no tensors for sequence %d' % (name, i))
    arrays['input/midi_%d' % i] = np.frombuffer(midi, np.uint8)
    arrays['converter/input_tensors_%d' % i] = np.stack(tensors.inputs).astype(np.float32)
    arrays['converter/output_tensors_%d' % i] = np.stack(tensors.outputs).astype(np.float32)
    arrays['converter/lengths_%d' % i] = np.asarray(tensors.lengths, np.int32)
    instruments = sorted({(n.instrument, n.program, n.is_drum) for n in ns_read.notes})
    conv_meta.append({'index': i, 'description': description,
                      'num_tensors': len(tensors.inputs),
                      'instruments_after_midi_read (instrument, program, is_drum)': instruments,
                      'num_notes': len(ns_read.notes)})
    enc_inputs.append(tensors.inputs[0])
    dec_outputs.append(tensors.outputs[0])
    lengths.append(tensors.lengths[0])
  while len(enc_inputs) < batch:  # (not needed with the sequences above)
    enc_inputs.append(enc_inputs[-1])
    dec_outputs.append(dec_outputs[-1])
    lengths.append(lengths[-1])
  sequence = np.stack(enc_inputs[:batch]).astype(np.float32)
  target = np.stack(dec_outputs[:batch]).astype(np.float32)
  seq_len = np.asarray(lengths[:batch], np.int32)
  z = rng.normal(size=[batch, hparams.z_size]).astype(np.float32)
  assert sequence.shape[-1] == converter.input_depth and target.shape[-1] == converter.output_depth

  model = config.model
  graph = tf.Graph()
  conductor = []
  with graph.as_default():
    tf.set_random_seed(seed)
    model.build(hparams, converter.output_depth, is_training=False)
    hierarchical = isinstance(model.decoder, lstm_models.HierarchicalLstmDecoder)
    if hierarchical:
      # The conductor's per-bar output is what HierarchicalLstmDecoder hands its core decoder as
      # `z` (lstm_models.py:976-977, 948-950, 1057-1067): record it on the way in.
      core = model.decoder._core_decoder  # pylint: disable=protected-access
      core_reconstruction_loss = core.reconstruction_loss

      def recording_reconstruction_loss(x_input, x_target, x_length, z=None, c_input=None):
        conductor.append(z)
        return core_reconstruction_loss(x_input, x_target, x_length, z, c_input)
      core.reconstruction_loss = recording_reconstruction_loss
    split_outputs = []
    if hierarchical and isinstance(core, lstm_models.SplitMultiOutLstmDecoder):
      # Trio: SplitMultiOutLstmDecoder._merge_decode_results asserts that every core decode ran
      # hparams.max_seq_len (256) steps (lstm_models.py:690-694), but under the hierarchical
      # decoder each call decodes one 16-step bar, so fetching the merged rnn_output fails that
      # assertion (training never fetches it, so it never fired there). Record each
      # CategoricalLstmDecoder's rnn_output instead and concatenate them exactly as the two
      # merges would: instruments on the last axis (lstm_models.py:703), bars on the time axis
      # (lstm_models.py:924).
      for k, sub in enumerate(core._core_decoders):  # pylint: disable=protected-access
        def recording_sub_loss(x_input, x_target, x_length, z=None, c_input=None,
                               _sub_loss=sub.reconstruction_loss):
          res = _sub_loss(x_input, x_target, x_length, z, c_input)
          split_outputs.append(res[2].rnn_output)
          return res
        sub.reconstruction_loss = recording_sub_loss

    seq_t = tf.constant(sequence)
    len_t = tf.constant(seq_len)
    target_t = tf.constant(target)
    # As MusicVAE._compute_model_loss (base_model.py:218-235): decoder inputs are the targets
    # shifted right by one step with a zero first step.
    max_seq_len = tf.minimum(tf.shape(target_t)[1], hparams.max_seq_len)
    x_target = target_t[:, :max_seq_len]
    x_input = tf.pad(target_t[:, :max_seq_len - 1], [(0, 0), (1, 0), (0, 0)])
    x_length = tf.minimum(len_t, max_seq_len)
    q_z = model.encode(seq_t[:, :max_seq_len], x_length)
    mu, sigma = q_z.loc, q_z.scale.diag  # as TrainedModel (trained_model.py:102-103)
    r_loss, _, decode_results = model.decoder.reconstruction_loss(
        x_input, x_target, x_length, tf.constant(z))
    if split_outputs:
      n_split = len(core._core_decoders)  # pylint: disable=protected-access
      logits_t = tf.concat([tf.concat(split_outputs[i:i + n_split], axis=-1)
                            for i in range(0, len(split_outputs), n_split)], axis=1)
    else:
      logits_t = decode_results.rnn_output
    fetches = dict(mu=mu, sigma=sigma, r_loss=r_loss, logits=logits_t, x_input=x_input)
    if hierarchical:
      fetches['conductor'] = tf.stack(conductor, axis=1)

    with tf.Session(config=_session_config()) as sess:
      sess.run(tf.global_variables_initializer())
      small_dense = ('encoder/mu/kernel', 'encoder/sigma/kernel')
      rules = [
          (lambda n, s: n.endswith('/bias'), 'N(0, 0.1)', lambda s: rng.normal(0., 0.1, s)),
          (lambda n, s: (n in small_dense or n.endswith('z_to_initial_state/kernel') or
                         n.endswith('initial_state/kernel')),
           'N(0, std 1/sqrt(fan_in)) (Magenta: N(0, 0.001), which would hide them)',
           lambda s: rng.normal(0., 1. / np.sqrt(s[0]), s)),
      ]
      init_rules = _randomise(sess, rules)
      init_rules.pop('global_step', None)
      out = sess.run(fetches)
      arrays.update(_variables(sess))
      var_shapes = {v.name[:-2]: v.shape.as_list() for v in tf.global_variables()
                    if v.name[:-2] != 'global_step'}

  assert np.array_equal(out['x_input'][:, 1:], target[:, :-1])
  logits = out['logits']
  print('%s: mu std %.3f, sigma mean %.3f, logits std %.3f, r_loss %s' % (
      name, out['mu'].std(), out['sigma'].mean(), logits.std(), out['r_loss']))
  arrays.update({
      'input/sequence': sequence, 'input/sequence_length': seq_len, 'input/z': z,
      'input/target': target, 'input/decoder_input': out['x_input'],
      'output/mu': out['mu'], 'output/sigma': out['sigma'],
      'output/decoder_logits': logits, 'output/r_loss': out['r_loss'],
  })
  if hierarchical:
    arrays['output/conductor_outputs'] = out['conductor']

  conv = {'class': type(converter).__name__, 'input_depth': converter.input_depth,
          'output_depth': converter.output_depth, 'end_token': converter.end_token,
          'mode': 'infer', 'sequences': conv_meta}
  for attr in ('_slice_steps', '_steps_per_bar', '_steps_per_quarter', '_roll_input',
               '_roll_output', '_valid_programs', '_min_pitch', '_max_pitch', '_gap_bars',
               '_max_bars', '_split_output_depths', '_pitch_classes'):
    if hasattr(converter, attr):
      value = getattr(converter, attr)
      conv[attr.lstrip('_')] = list(value) if isinstance(value, range) else value
  meta = {
      'model': 'music_vae', 'original_config': config_name,
      'original_sizes': original_sizes,
      'hparams': hparams.values(),
      'encoder': type(model.encoder).__name__,
      'decoder': type(model.decoder).__name__,
      'core_decoder': type(core).__name__ if hierarchical else None,
      'level_lengths': getattr(model.decoder, '_level_lengths', None),
      'disable_autoregression': getattr(model.decoder, '_disable_autoregression', None),
      'output_depths': (getattr(getattr(model.decoder, '_core_decoder', None),
                                '_output_depths', None)),
      'converter': conv,
      'variable_shapes': var_shapes,
      'variable_init': init_rules,
      'graph': 'model.build(hparams, converter.output_depth, is_training=False); '
               'q_z = model.encode(input/sequence, input/sequence_length); '
               'output/mu = q_z.loc, output/sigma = q_z.scale.diag; '
               'r_loss, _, results = model.decoder.reconstruction_loss(input/decoder_input, '
               'input/target, input/sequence_length, input/z); '
               'output/decoder_logits = results.rnn_output (teacher forced, fed z, not mu)',
      'batch': batch,
      'seed': seed,
      'sampling_override': 'sampling_schedule constant, sampling_rate 0 (teacher forcing)',
  }
  _save(name, arrays, meta)


# ------------------------------------------------------------------------------------------------
# PianoNet: the released Keras SavedModels


def _maestro_key_states(num_time_steps, start_seconds=10.):
  """A real key-state stream: the first MAESTRO v2 file (sorted paths), rolled at 48 steps per
  second over 72 keys from MIDI 31, flattened t * 72 + k (window chosen below). A simple
  approximation of PianoNet's own MIDI encoding (pypianoroll at 24 per beat, 120 bpm): onset to
  offset rounded to the 48 Hz grid, no pedal. It is only an input; nothing compares it."""
  import note_seq  # pylint: disable=g-import-not-at-top
  paths = sorted(glob.glob(os.path.join(MAESTRO_DIR, '*', '*.mid*')))
  path = paths[0]
  ns = note_seq.midi_file_to_note_sequence(path)
  steps = int(np.ceil(ns.total_time * 48)) + 1
  roll = np.zeros([steps, 72], np.float32)
  for n in ns.notes:
    k = n.pitch - 31
    if 0 <= k < 72:
      a = int(round(n.start_time * 48))
      b = max(a + 1, int(round(n.end_time * 48)))
      roll[a:b, k] = 1.
  # The first window (1-second hops from start_seconds) whose key-down rate is a typical one
  # for this encoding (>= 0.06), so that the model sees dense, realistic input.
  best = None
  for t0 in range(int(start_seconds * 48), steps - num_time_steps, 48):
    rate = roll[t0:t0 + num_time_steps].mean()
    if best is None or rate > best[0]:
      best = (rate, t0)
    if rate >= 0.06:
      break
  t0 = best[1]
  window = roll[t0:t0 + num_time_steps]
  return window.reshape(-1), os.path.relpath(path, MAESTRO_DIR), t0


def make_pianonet(name):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  folder = PIANONET[name]
  path = os.path.join(PIANONET_DIR, folder)
  model = tf.keras.models.load_model(path, compile=False)

  layers, arrays, ckpt_keys = [], {}, {}
  receptive_field = 1
  for layer in model.layers:
    cfg = layer.get_config()
    entry = {'name': layer.name, 'type': type(layer).__name__}
    for k in ('filters', 'kernel_size', 'dilation_rate', 'strides', 'padding', 'activation',
              'use_bias', 'kernel_initializer', 'bias_initializer'):
      if k in cfg:
        entry[k] = cfg[k]
    layers.append(entry)
    if type(layer).__name__ == 'Conv1D':
      receptive_field += (layer.kernel_size[0] - 1) * layer.dilation_rate[0]
    for w in layer.weights:
      arrays['var/' + w.name[:-2]] = w.numpy()

  # Checkpoint keys of the same variables (variables/variables.index), matched by value.
  ckpt = os.path.join(path, 'variables', 'variables')
  for key, _ in tf.train.list_variables(ckpt):
    if not key.endswith('/.ATTRIBUTES/VARIABLE_VALUE') or not key.startswith('layer_with'):
      continue
    value = tf.train.load_variable(ckpt, key)
    matches = [k for k, v in arrays.items() if v.shape == value.shape and np.array_equal(v, value)]
    if len(matches) == 1:
      ckpt_keys[matches[0][4:]] = key
  assert len(ckpt_keys) == len(arrays), (len(ckpt_keys), len(arrays))

  n_steps = 278  # 278 time steps x 72 keys = 20,016 key states (~5.8 s of music)
  stream, source, t0 = _maestro_key_states(n_steps)
  n = stream.size
  key_states = stream.reshape(1, n, 1).astype(np.float32)
  # Left-pad with R-1 zeros ("silence before the stream", what the original's sample generator
  # does at the start of its data: note_sample_generator.py:139-147) so that a 'valid' model
  # gives exactly one output per input position.
  padded = np.concatenate([np.zeros([1, receptive_field - 1, 1], np.float32), key_states], axis=1)
  probs = model(padded, training=False).numpy()
  assert probs.shape == (1, n, 1), probs.shape
  # Same numbers from the SavedModel's own serving signature (not the revived Keras layers).
  raw = tf.saved_model.load(path)
  sig = raw.signatures['serving_default']
  raw_out = list(sig(tf.constant(padded)).values())[0].numpy()
  assert np.allclose(raw_out, probs, atol=1e-6), np.abs(raw_out - probs).max()
  print('%s: R=%d, N=%d, key-down rate %.3f, mean p %.4f' % (
      name, receptive_field, n, key_states.mean(), probs.mean()))

  arrays.update({'input/key_states': key_states, 'output/probabilities': probs})
  meta = {
      'model': 'pianonet', 'folder': folder,
      'source': 'angsten/pianonet commit b092739e5fd4036821ce37e90e88c2d25838bf74 (MIT, see '
                '/work/shared/models/pianonet_original/LICENSE)',
      'layers': layers,
      'num_params': int(model.count_params()),
      'receptive_field': receptive_field,
      'checkpoint_keys': ckpt_keys,
      'kernel_layout': 'Conv1D kernel [kernel_width, in, out]; tap 0 multiplies x[t - d], tap 1 '
                       'x[t] (valid cross-correlation)',
      'alignment': 'output[t] = P(key_states[t+1] = 1 | key_states[..t]): the model is trained '
                   'with targets one position ahead of the last input of each receptive field '
                   '(note_sample_generator.py:106-147; generation: performance_tools.py:50-54, '
                   '175, 195-198). The last output predicts the key state after the stream.',
      'padding': "every Conv1D is padding='valid' (causal by construction, no padding inside "
                 "the model); output/probabilities = model(concat(zeros(R-1), key_states)), i.e. "
                 'causal left zero padding of R-1 = %d; the valid outputs of the unpadded '
                 'stream are output/probabilities[:, R-1:]' % (receptive_field - 1),
      'output_activation': 'sigmoid after a Conv1D(1, kernel 1); hidden activations ELU '
                           '(alpha 1) after every dilated Conv1D',
      'input': {'maestro_file': source, 'start_time_step': t0, 'time_steps': n_steps,
                'num_keys': 72, 'lowest_midi_pitch': 31, 'steps_per_second': 48,
                'flattening': 'index = t * 72 + k', 'key_down_rate': float(key_states.mean())},
  }
  _save(name, arrays, meta)


# ------------------------------------------------------------------------------------------------
# Self-check


def expected_shapes(name, meta):
  """{key: shape or None (any shape)} every fixture must hold."""
  if name in COCONET:
    h = meta['hparams']
    shape = [h['batch_size'], h['crop_piece_len'], h['max_pitch'] - h['min_pitch'] + 1,
             h['num_instruments']]
    exp = {'input/pianorolls': shape, 'input/masks': shape, 'input/lengths': shape[:1],
           'output/logits': shape, 'output/predictions': shape, 'output/loss_total': []}
    for i, layer in enumerate(meta['layers']):
      f = layer['filters']
      if layer['separable']:
        exp['var/model/conv%d/separable_conv2d/depthwise_kernel' % i] = [f[0], f[1], f[2], 1]
        exp['var/model/conv%d/separable_conv2d/pointwise_kernel' % i] = [1, 1, f[2], f[3]]
        exp['var/model/conv%d/separable_conv2d/bias' % i] = [f[3]]
      else:
        exp['var/model/conv%d/weights' % i] = f
      for v in ('gamma', 'popmean', 'popvariance'):
        exp['var/model/conv%d/%s' % (i, v)] = [1, 1, 1, f[3]]
      exp['var/model/conv%d/beta' % i] = [f[3]]
    return exp
  if name in MUSICVAE:
    h, c = meta['hparams'], meta['converter']
    b, z, t = meta['batch'], h['z_size'], h['max_seq_len']
    exp = {'input/sequence': [b, t, c['input_depth']], 'input/sequence_length': [b],
           'input/z': [b, z], 'input/target': [b, t, c['output_depth']],
           'input/decoder_input': [b, t, c['output_depth']],
           'output/mu': [b, z], 'output/sigma': [b, z],
           'output/decoder_logits': [b, t, c['output_depth']], 'output/r_loss': [b]}
    if meta['level_lengths']:
      exp['output/conductor_outputs'] = [b, meta['level_lengths'][0], h['dec_rnn_size'][-1]]
    for s in c['sequences']:
      i = s['index']
      exp['input/midi_%d' % i] = None
      exp['converter/input_tensors_%d' % i] = [s['num_tensors'], t, c['input_depth']]
      exp['converter/output_tensors_%d' % i] = [s['num_tensors'], t, c['output_depth']]
    for v, shape in meta['variable_shapes'].items():
      exp['var/' + v] = shape
    return exp
  if name in PIANONET:
    n = meta['input']['time_steps'] * meta['input']['num_keys']
    exp = {'input/key_states': [1, n, 1], 'output/probabilities': [1, n, 1]}
    for v in meta['checkpoint_keys']:
      exp['var/' + v] = None
    return exp
  raise ValueError(name)


def check(name):
  path = os.path.join(OUT_DIR, name + '.npz')
  with np.load(path) as data:
    meta = json.loads(str(data['meta/config_json']))
    for key, shape in expected_shapes(name, meta).items():
      assert key in data.files, '%s: missing %s' % (name, key)
      if shape is not None:
        assert list(data[key].shape) == list(shape), (name, key, data[key].shape, shape)
      if data[key].dtype.kind == 'f':
        assert data[key].dtype == np.float32 and np.all(np.isfinite(data[key])) or \
            key == 'input/jsb_pitches', (name, key)
    n_vars = sum(k.startswith('var/') for k in data.files)
  assert os.path.getsize(path) <= MAX_BYTES
  print('ok %-32s %4d arrays, %3d variables, %6.0f kB' % (
      name, len(data.files), n_vars, os.path.getsize(path) / 1024))


def run_one(name):
  if name in COCONET:
    make_coconet(name)
  elif name in MUSICVAE:
    make_musicvae(name)
  elif name in PIANONET:
    make_pianonet(name)
  else:
    raise SystemExit('unknown fixture %r; choose from %s' % (name, ', '.join(ALL)))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--only', default='', help='comma-separated fixture names: ' + ', '.join(ALL))
  parser.add_argument('--check_only', action='store_true', help='only reload and check files')
  args = parser.parse_args()
  names = [n for n in args.only.split(',') if n] or ALL
  for n in names:
    if n not in ALL:
      raise SystemExit('unknown fixture %r; choose from %s' % (n, ', '.join(ALL)))
  if not args.check_only:
    if len(names) == 1:
      run_one(names[0])
    else:
      for n in names:
        subprocess.run([sys.executable, os.path.abspath(__file__), '--only=' + n], check=True)
  for n in names:
    check(n)


if __name__ == '__main__':
  main()
