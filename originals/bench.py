r"""Times the ORIGINAL implementations on the workloads of our benchmark rows, for `make bench`.

    .venv-originals/bin/python originals/bench.py                    # the default workloads
    .venv-originals/bin/python originals/bench.py --workloads=coconet/paper/train_step --repeats=3
    .venv-originals/bin/python originals/bench.py --small --repeats=1   # smoke test, tiny models
    .venv-originals/bin/python originals/bench.py --list

Runs Magenta 2.1.4's own code on TensorFlow-CPU 2.15.1 (the environment `make originals`
creates); this script only builds inputs, writes a freshly initialised checkpoint where the
original API loads one, and times calls. experiments/bench_originals.py runs it from our side in
the same `make bench` and names its rows original/<name>, beside our row <name>.

Each workload name is the name of the benchmark row of ours it pairs with. Each one runs
--warmup untimed calls, then --repeats timed ones; one JSON line per workload goes to stdout:

    {"name": "coconet/paper/train_step", "median_s": 12.8, "times_s": [...], "repeats": 5,
     "warmup": 1, "shapes": {...}, "what": "...", "threads": {...}, "small": false,
     "versions": {...}}

and everything else (Magenta's prints, TensorFlow's logs, progress) to stderr. --small shrinks
every model to a few units (names unchanged, "small": true) for smoke tests; its times mean
nothing. TensorFlow runs on every core this process may use (intra- and inter-op pools), as XLA
does on our side.

Imports only the standard library at module level, so that the project's tests can read WORKLOADS
and json_line() from the project's own environment; TensorFlow and Magenta load in main().
"""
import argparse
import contextlib
import importlib.metadata
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))

# Our coconet/harmonize32 soprano (experiments/bench_coconet.py): eight notes of four 16ths each.
SOPRANO_MIDI = (67, 69, 71, 72, 74, 72, 71, 69)
HARMONIZE_STEPS = 32
MIN_PITCH, MAX_PITCH = 36, 81  # Coconet's 46 pitches
NUM_EXAMPLES = 64  # MusicVAE sequences sampled or encoded per call, as ours
SAMPLE_TEMPERATURE = 0.5  # our musicvae sample()'s default (the original's generate script's)

# Magenta's Coconet hyperparameters shared by both configs (lib_hparams.Hyperparameters).
_COCONET_COMMON = dict(min_pitch=MIN_PITCH, max_pitch=MAX_PITCH, num_instruments=4,
                       separate_instruments=True, quantization_level=0.125,
                       maskout_method='orderless', use_residual=True, batch_norm=True,
                       rescale_loss=True, optimize_mask_only=False, mask_indicates_context=False)
COCONET_CONFIGS = {
    # The paper's model (the published checkpoint's shape): our configs.get_config('paper').
    'paper': dict(architecture='straight', num_layers=64, num_filters=128, use_sep_conv=False,
                  batch_size=20, crop_piece_len=64),
    # Our bench_coconet.small_dilated_config(): one dilation block (9 layers for crop 32 and 46
    # pitches), separable from layer 2 on, 64 filters.
    'small_dilated': dict(architecture='dilated', num_dilation_blocks=1, dilate_time_only=False,
                          repeat_last_dilation_level=False, num_layers=9, num_filters=64,
                          use_sep_conv=True, sep_conv_depth_multiplier=1,
                          num_initial_regular_conv_layers=2, num_pointwise_splits=1,
                          interleave_split_every_n_layers=1, batch_size=10, crop_piece_len=32),
}
_COCONET_SMALL = {'paper': dict(num_layers=6, num_filters=16, batch_size=2, crop_piece_len=16),
                  'small_dilated': dict(num_filters=16, batch_size=2, crop_piece_len=16)}

MUSICVAE_CONFIGS = {'mel_2bar_small': 'cat-mel_2bar_small', 'mel_16bar_hier': 'hierdec-mel_16bar'}
_MUSICVAE_SMALL = {'cat-mel_2bar_small': dict(z_size=16, enc_rnn_size=[32], dec_rnn_size=[32, 32]),
                   'hierdec-mel_16bar': dict(z_size=16, enc_rnn_size=[32, 32],
                                             dec_rnn_size=[32, 32])}
_SMALL_BATCH, _SMALL_EXAMPLES = 8, 4

# Every workload: our row's name -> (group, kind, argument). A group's workloads share a setup
# (a graph, a checkpoint) and run together.
WORKLOADS = {
    'coconet/paper/train_step': ('coconet/paper', 'train', None),
    'coconet/paper/harmonize32': ('coconet/paper', 'harmonize', None),
    'coconet/small_dilated/train_step': ('coconet/small_dilated', 'train', None),
    'coconet/small_dilated/harmonize32': ('coconet/small_dilated', 'harmonize', None),
    'musicvae/mel_2bar_small/train_step_b512': ('musicvae/mel_2bar_small', 'train', 512),
    'musicvae/mel_2bar_small/train_step_b64': ('musicvae/mel_2bar_small', 'train', 64),
    'musicvae/mel_2bar_small/sample64': ('musicvae/mel_2bar_small', 'sample', 32),
    'musicvae/mel_2bar_small/encode64': ('musicvae/mel_2bar_small', 'encode', 2),
    'musicvae/mel_16bar_hier/sample64': ('musicvae/mel_16bar_hier', 'sample', 256),
    'musicvae/mel_16bar_hier/encode64': ('musicvae/mel_16bar_hier', 'encode', 16),
}
# Run unless --workloads says otherwise: all but the 16-bar encoding (64 melodies through the
# 2 x 2048 bidirectional encoder, the slowest call here), which --workloads can add.
DEFAULT_WORKLOADS = tuple(name for name in WORKLOADS if name != 'musicvae/mel_16bar_hier/encode64')

_STDOUT = sys.stdout  # the JSON lines only; everything else is redirected to stderr


def log(message: str) -> None:
  sys.stderr.write(f'[originals/bench] {message}\n')
  sys.stderr.flush()


def json_line(name: str, times_s: list, *, warmup: int, **extra) -> str:
  """The record of one workload, as one line of JSON (no newline)."""
  record = {'name': name, 'median_s': statistics.median(times_s), 'times_s': list(times_s),
            'repeats': len(times_s), 'warmup': warmup}
  record.update(extra)
  return json.dumps(record, sort_keys=True)


def time_workload(name: str, call, args, **extra) -> None:
  """args.warmup untimed calls, args.repeats timed ones; writes the JSON line to stdout."""
  for i in range(args.warmup):
    start = time.perf_counter()
    call()
    log(f'{name} warm-up {i + 1}: {time.perf_counter() - start:.3f} s')
  times = []
  for i in range(args.repeats):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
    log(f'{name} call {i + 1}: {times[-1]:.3f} s')
  _STDOUT.write(json_line(name, times, warmup=args.warmup, small=args.small,
                          threads=args.threads_used, versions=args.versions, **extra) + '\n')
  _STDOUT.flush()


def _versions() -> dict:
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return {'magenta': importlib.metadata.version('magenta'), 'tensorflow': tf.__version__,
          'numpy': np.__version__, 'python': sys.version.split()[0],
          'onednn': os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'default')}


def _num_params() -> int:
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  return int(sum(np.prod(v.shape.as_list()) for v in tf.trainable_variables()))


# ------------------------------------------------------------------------------------------------
# Coconet (magenta.models.coconet)


def coconet_hparams(config: str, small: bool):
  from magenta.models.coconet import lib_hparams  # pylint: disable=g-import-not-at-top
  kw = dict(_COCONET_COMMON, **COCONET_CONFIGS[config])
  if small:
    kw.update(_COCONET_SMALL[config])
  return lib_hparams.Hyperparameters(**kw)


def _random_rolls(rng, batch: int, steps: int, pitches: int, voices: int):
  """One-hot over pitch for every (step, voice), as chorales are."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rolls = np.zeros([batch, steps, pitches, voices], np.float32)
  index = rng.integers(0, pitches, size=[batch, steps, voices])
  b, t, v = np.meshgrid(np.arange(batch), np.arange(steps), np.arange(voices), indexing='ij')
  rolls[b, t, index, v] = 1.
  return rolls


def coconet_train(name: str, config: str, args) -> None:
  """One sess.run of the train op of lib_graph.build_graph(is_training=True) (Adam), with the
  fetches of coconet_train.run_epoch, on random rolls and lib_mask's orderless masks."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from magenta.models.coconet import lib_graph  # pylint: disable=g-import-not-at-top
  from magenta.models.coconet import lib_mask  # pylint: disable=g-import-not-at-top
  hparams = coconet_hparams(config, args.small)
  batch, steps, pitches, voices = [hparams.batch_size] + hparams.pianoroll_shape
  np.random.seed(0)  # lib_mask draws from NumPy's global generator
  rolls = _random_rolls(np.random.default_rng(0), batch, steps, pitches, voices)
  masks = np.stack([lib_mask.get_mask(hparams.maskout_method, hparams.pianoroll_shape,
                                      separate_instruments=hparams.separate_instruments,
                                      blankout_ratio=hparams.corrupt_ratio)
                    for _ in range(batch)]).astype(np.float32)
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    model = lib_graph.build_graph(is_training=True, hparams=hparams)
    params = _num_params()
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      feed = {model.placeholders['pianorolls']: rolls, model.placeholders['masks']: masks,
              model.placeholders['lengths']: np.full([batch], steps, np.float32)}
      fetches = [model.loss, model.loss_total, model.loss_mask, model.loss_unmask,
                 model.reduced_mask_size, model.reduced_unmask_size, model.learning_rate,
                 model.train_op]

      def step():
        loss = sess.run(fetches, feed_dict=feed)[0]
        if not np.isfinite(loss):
          raise RuntimeError(f'{name}: the loss is {loss}')

      time_workload(name, step, args,
                    shapes=dict(batch=batch, crop_len=steps, pitches=pitches, voices=voices,
                                layers=len(hparams.get_conv_arch().layers),
                                filters=hparams.num_filters, params=params),
                    what=f'Magenta Coconet {hparams.architecture} train step: one sess.run of '
                         'lib_graph.build_graph(is_training=True).train_op (Adam) with '
                         "coconet_train.run_epoch's fetches")


def coconet_harmonize(name: str, config: str, args) -> None:
  """One harmonization of our benchmark's soprano by lib_tfsampling.CoconetSampleGraph (the
  sampler coconet_sample.py uses by default): one independent pass, then T * 4 annealed blocked
  Gibbs steps, all in one session call; the model freshly initialised and saved first, since the
  sampler loads a checkpoint."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from magenta.models.coconet import lib_graph  # pylint: disable=g-import-not-at-top
  from magenta.models.coconet import lib_sampling  # pylint: disable=g-import-not-at-top
  from magenta.models.coconet import lib_tfsampling  # pylint: disable=g-import-not-at-top
  hparams = coconet_hparams(config, args.small)
  steps = 8 if args.small else HARMONIZE_STEPS
  folder = tempfile.mkdtemp(prefix='coconet_original_', dir=args.tmpdir)
  try:
    with tf.Graph().as_default():
      tf.set_random_seed(1)
      lib_graph.build_graph(is_training=False, hparams=hparams)
      with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        tf.train.Saver().save(sess, os.path.join(folder, 'best_model.ckpt'))
    with tf.gfile.Open(os.path.join(folder, 'config'), 'w') as f:
      hparams.dump(f)
    hparams.crop_piece_len = steps
    shape = [1] + hparams.pianoroll_shape
    rolls = np.zeros(shape, np.float32)
    soprano = np.repeat(np.array(SOPRANO_MIDI) - MIN_PITCH, HARMONIZE_STEPS // len(SOPRANO_MIDI))
    rolls[0, np.arange(steps), soprano[:steps], 0] = 1.
    masks = lib_sampling.HarmonizationMasker()(shape).astype(np.float32)
    with tf.Graph().as_default():
      sampler = lib_tfsampling.CoconetSampleGraph(folder)
      sampler.instantiate_sess_and_restore_checkpoint()
      out = {}

      def harmonize():
        out['rolls'] = sampler.run(rolls, masks, sample_steps=0, current_step=0,
                                   total_gibbs_steps=0, temperature=0.99)['pianorolls']

      gibbs_steps = steps * hparams.num_instruments
      time_workload(name, harmonize, args,
                    shapes=dict(pieces=1, steps=steps, pitches=shape[2], voices=shape[3],
                                layers=len(hparams.get_conv_arch().layers),
                                filters=hparams.num_filters, gibbs_steps=gibbs_steps,
                                forward_passes=gibbs_steps + 1),
                    what='Magenta Coconet harmonization: lib_tfsampling.CoconetSampleGraph.run '
                         f'with HarmonizationMasker masks, {gibbs_steps + 1} forward passes '
                         'in one tf.while_loop')
      if out['rolls'].shape != tuple(shape) or not np.all(out['rolls'].sum(axis=2) == 1):
        raise RuntimeError(f'{name}: the sampler returned a malformed roll')
      sampler.sess.close()
  finally:
    shutil.rmtree(folder, ignore_errors=True)


def run_coconet(group: str, names: list, args) -> None:
  config = group.split('/')[1]
  for name in names:
    kind = WORKLOADS[name][1]
    (coconet_train if kind == 'train' else coconet_harmonize)(name, config, args)


# ------------------------------------------------------------------------------------------------
# MusicVAE (magenta.models.music_vae)


def musicvae_config(name: str, small: bool):
  import copy  # pylint: disable=g-import-not-at-top
  from magenta.models.music_vae import configs  # pylint: disable=g-import-not-at-top
  config = copy.deepcopy(configs.CONFIG_MAP[name])
  if small:
    config.hparams.override_from_dict(_MUSICVAE_SMALL[name])
  return config


def _build_train_graph(config, batch: int, rng):
  """The graph music_vae_train.train() builds (model.build, model.train), its input tensors from
  music_vae_train._get_input_tensors over a repeated dataset of random one-hot sequences."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from magenta.models.music_vae import music_vae_train  # pylint: disable=g-import-not-at-top
  config.hparams.batch_size = batch
  converter = config.data_converter
  steps = config.hparams.max_seq_len
  x = np.zeros([batch, steps, converter.input_depth], np.float32)
  x[np.arange(batch)[:, None], np.arange(steps)[None],
    rng.integers(0, converter.input_depth, size=[batch, steps])] = 1.
  controls = np.zeros([batch, steps, converter.control_depth], np.float32)
  lengths = np.full([batch], steps, np.int32)
  dataset = tf.data.Dataset.from_tensors((x, x, controls, lengths)).repeat()
  model = config.model
  model.build(config.hparams, converter.output_depth, is_training=True)
  inputs = music_vae_train._get_input_tensors(dataset, config)  # pylint: disable=protected-access
  optimizer = model.train(**inputs)
  return model, optimizer


def _train_op(config, model, optimizer):
  """music_vae_train.train()'s gradient handling: global-norm clipping (or clip to zero)."""
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  hparams = config.hparams
  grads, variables = list(zip(*optimizer.compute_gradients(model.loss)))
  global_norm = tf.global_norm(grads)
  if hparams.clip_mode == 'value':
    clipped = [tf.clip_by_value(g, -hparams.grad_clip, hparams.grad_clip) for g in grads]
  else:
    clipped = tf.cond(
        global_norm < hparams.grad_norm_clip_to_zero,
        lambda: tf.clip_by_global_norm(grads, hparams.grad_clip, use_norm=global_norm)[0],
        lambda: [tf.zeros(tf.shape(g)) for g in grads])
  return optimizer.apply_gradients(list(zip(clipped, variables)), global_step=model.global_step,
                                   name='train_step')


def musicvae_train(name: str, config_name: str, batch: int, args) -> None:
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  config = musicvae_config(config_name, args.small)
  batch = _SMALL_BATCH if args.small else batch
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    model, optimizer = _build_train_graph(config, batch, np.random.default_rng(0))
    train_op = _train_op(config, model, optimizer)
    params = _num_params()
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())

      def step():
        loss = sess.run([train_op, model.loss])[1]
        if not np.isfinite(loss):
          raise RuntimeError(f'{name}: the loss is {loss}')

      time_workload(name, step, args,
                    shapes=dict(batch=batch, steps=config.hparams.max_seq_len,
                                depth=config.data_converter.input_depth, params=params),
                    what=f'Magenta MusicVAE {config_name} train step (float32): one sess.run of '
                         "music_vae_train.train()'s graph (Adam, global-norm clipping)")


def _random_melody(rng, num_bars: int, qpm: float = 120.):
  """A monophonic 4/4 NoteSequence of num_bars bars of contiguous notes: one slice exactly."""
  import note_seq  # pylint: disable=g-import-not-at-top
  seq = note_seq.NoteSequence(ticks_per_quarter=note_seq.STANDARD_PPQ)
  seq.tempos.add(qpm=qpm)
  seq.time_signatures.add(numerator=4, denominator=4)
  step_s, total = 60. / qpm / 4., 16 * num_bars
  t = 0
  while t < total:
    length = min(int(rng.choice([1, 2, 2, 4])), total - t)
    seq.notes.add(pitch=int(rng.integers(60, 84)), velocity=80, start_time=t * step_s,
                  end_time=(t + length) * step_s)
    t += length
  seq.total_time = total * step_s
  return seq


def musicvae_trained_model(config_name: str, names: list, args) -> None:
  """Sampling and encoding through TrainedModel (batch 64, as ours) on a fresh checkpoint."""
  import copy  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from magenta.models.music_vae import trained_model  # pylint: disable=g-import-not-at-top
  config = musicvae_config(config_name, args.small)
  num = _SMALL_EXAMPLES if args.small else NUM_EXAMPLES
  folder = tempfile.mkdtemp(prefix='musicvae_original_', dir=args.tmpdir)
  try:
    # Every model variable, named as training names them (model.build and model.train make them).
    with tf.Graph().as_default():
      tf.set_random_seed(1)
      _build_train_graph(copy.deepcopy(config), 2, np.random.default_rng(1))
      with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        tf.train.Saver().save(sess, os.path.join(folder, 'model.ckpt'))
    model = trained_model.TrainedModel(config, batch_size=num, checkpoint_dir_or_path=folder)
    rng = np.random.default_rng(2)
    for name in names:
      kind, size = WORKLOADS[name][1:]
      if kind == 'sample':
        out = {}

        def sample(length=size):
          out['seqs'] = model.sample(n=num, length=length, temperature=SAMPLE_TEMPERATURE)

        time_workload(name, sample, args,
                      shapes=dict(n=num, steps=size, batch=num),
                      what=f'Magenta MusicVAE {config_name}: TrainedModel.sample(n={num}, '
                           f'length={size}, temperature={SAMPLE_TEMPERATURE}), to NoteSequences')
        if len(out['seqs']) != num:
          raise RuntimeError(f'{name}: {len(out["seqs"])} sequences instead of {num}')
      else:
        seqs = [_random_melody(rng, size) for _ in range(num)]
        out = {}

        def encode(seqs=seqs):
          out['z'] = model.encode(seqs, assert_same_length=True)[0]

        time_workload(name, encode, args,
                      shapes=dict(n=num, bars=size, steps=16 * size, batch=num),
                      what=f'Magenta MusicVAE {config_name}: TrainedModel.encode of {num} '
                           f'{size}-bar NoteSequences (data converter included)')
        if out['z'].shape != (num, config.hparams.z_size):
          raise RuntimeError(f'{name}: z of shape {out["z"].shape}')
    model._sess.close()  # pylint: disable=protected-access
  finally:
    shutil.rmtree(folder, ignore_errors=True)


def run_musicvae(group: str, names: list, args) -> None:
  config_name = MUSICVAE_CONFIGS[group.split('/')[1]]
  for name in [n for n in names if WORKLOADS[n][1] == 'train']:
    musicvae_train(name, config_name, WORKLOADS[name][2], args)
  others = [n for n in names if WORKLOADS[n][1] != 'train']
  if others:
    musicvae_trained_model(config_name, others, args)


# ------------------------------------------------------------------------------------------------


def set_threads(threads: int) -> dict:
  """TensorFlow's intra- and inter-op pools on `threads` cores; TF1 sessions made without a
  config (Magenta's) take them from here."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(threads)
  tf.config.threading.set_inter_op_parallelism_threads(threads)
  return {'intra_op': threads, 'inter_op': threads}


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workloads', default=','.join(DEFAULT_WORKLOADS),
                      help='comma-separated names (--list shows them)')
  parser.add_argument('--repeats', type=int, default=3, help='timed calls (median reported)')
  parser.add_argument('--warmup', type=int, default=1, help='untimed calls first')
  parser.add_argument('--small', action='store_true', help='tiny models: a smoke test only')
  parser.add_argument('--threads', type=int, default=0,
                      help='TensorFlow threads; 0 = every core this process may use')
  parser.add_argument('--tmpdir', default=None, help='folder for the temporary checkpoints')
  parser.add_argument('--list', action='store_true', help='list the workloads and exit')
  args = parser.parse_args(argv)
  args.names = [n.strip() for n in args.workloads.split(',') if n.strip()]
  unknown = [n for n in args.names if n not in WORKLOADS]
  if unknown:
    parser.error(f'unknown workload {unknown[0]!r}; known: {", ".join(WORKLOADS)}')
  if args.repeats < 1 or args.warmup < 0:
    parser.error('--repeats must be at least 1 and --warmup at least 0')
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.list:
    print('\n'.join(WORKLOADS))
    return 0
  with contextlib.redirect_stdout(sys.stderr):  # Magenta prints progress; stdout is for JSON
    sys.path.insert(0, HERE)
    import compat  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    # Magenta's tf.layers calls warn once each that Keras replaces them: noise in make bench's log.
    warnings.filterwarnings('ignore', message='.*is deprecated and will be removed',
                            category=UserWarning)
    import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
    tf.disable_v2_behavior()
    tf.logging.set_verbosity(tf.logging.ERROR)
    threads = args.threads or len(os.sched_getaffinity(0))
    args.threads_used = set_threads(threads)
    args.versions = _versions()
    groups = {}
    for name in args.names:
      groups.setdefault(WORKLOADS[name][0], []).append(name)
    failed = []
    for group, names in groups.items():
      log(f'{group}: {", ".join(n.split("/")[-1] for n in names)} on {threads} thread(s)'
          + (' (--small)' if args.small else ''))
      try:
        (run_coconet if group.startswith('coconet/') else run_musicvae)(group, names, args)
      except Exception as e:  # pylint: disable=broad-except
        # One failing original must not cost the others their rows; the exit status says so.
        log(f'{group} failed: {type(e).__name__}: {e}')
        failed.append(group)
  if failed:
    log(f'failed: {", ".join(failed)}')
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
