r"""Compound Word Transformer (and REMI) configs.

  python -m experiments.train --config=cpword/configs.py:small --workdir=runs/cpword_small
  python -m experiments.train --config=cpword/configs.py:paper --workdir=runs/cpword_paper
  python -m experiments.train --config=cpword/configs.py:small_remi --workdir=runs/remi_small
  python -m experiments.train --config=cpword/configs.py:tiny --workdir=/tmp/cp \
      --config.representation=remi --config.model.relative=True

Variants: 'tiny' (seconds on a CPU, synthetic data), 'small' (CPU-sized, Pop1K7), 'paper'
(12 layers, d_model 512, 8 heads, ffn 2048, dropout 0.1, Adam 1e-4, batch 4, clip 3, whole songs
of up to 3,584 words). Add '_remi' for the REMI representation, '_emotion' for EMOPIA with emotion
conditioning, '_v1tokens' for this project's first bins (64 tempo bins, 32 velocity bins over
1..127, durations offset - onset of 1..16 steps, pitch 21..108) instead of the original's
('small_remi', 'small_emotion', 'small_v1tokens', ...). `dataset`: 'pop1k7' | 'emopia' |
'synthetic' | any MIDI set of common.datasets.

Where this differs from the original on purpose (docs/cpword.md):
- attention is softmax (optionally relative) instead of linear, over `data.seq_len` words: random
  windows of that length (data.whole_songs=False), or whole songs padded to it, as the original
  (data.whole_songs=True; longer songs are left out, as the original leaves out those of 3,582
  words or more).
- generation never attends to more than the `data.seq_len` words the model learned on: past that,
  the window slides (`sampling.window_stride` words at a time; None: seq_len // 8).
- `loss`: 'original' (every family's cross-entropy over every real position, IGNORE targets
  included, summed over the 7 families and divided by 7, 8 with emotion; the original's) or
  'masked_mean' (each family over the fields its words use, averaged over the families present).
"""

import itertools

import ml_collections

from common import configs

SIZES = ('tiny', 'small', 'paper')
# Every variant: a size, then '_remi' for the REMI representation, '_emotion' for EMOPIA with
# emotion conditioning and '_v1tokens' for the first bins: 'small', 'small_remi_emotion', ...
VARIANTS = tuple(size + remi + emotion + bins for size, remi, emotion, bins in
                 itertools.product(SIZES, ('', '_remi'), ('', '_emotion'), ('', '_v1tokens')))

# This project's first tokenisation (what pretrained runs before the original's bins used).
V1_TOKENS = dict(num_tempo_bins=64, pitch_min=21, pitch_max=108, velocity_min=1, velocity_max=127,
                 num_velocity_bins=32, durations='grid')


def get_config(variant: str = 'tiny') -> ml_collections.ConfigDict:
  """A named config: 'tiny' | 'small' | 'paper', optionally with '_remi', '_emotion' and/or
  '_v1tokens'."""
  if variant not in VARIANTS:
    raise configs.unknown_variant('cpword', variant, VARIANTS)
  name = variant.split('_')[0]
  options = variant.split('_')[1:]

  c = configs.add_common_settings(ml_collections.ConfigDict(), task='cpword', variant=variant,
                                  dataset='pop1k7')
  c.representation = 'remi' if 'remi' in options else 'cp'

  # The original's bins (tokens.py; CW:dataset/midi2corpus.py:19-27, 142-158).
  c.tokens = ml_collections.ConfigDict(dict(
      steps_per_beat=4, beats_per_bar=4, tempo_min=32, tempo_step=3, num_tempo_bins=65,
      pitch_min=22, pitch_max=107, velocity_min=40, velocity_max=126, num_velocity_bins=44,
      durations='original'))
  if 'v1tokens' in options:
    c.tokens.update(V1_TOKENS)

  c.data = ml_collections.ConfigDict()
  c.data.emotion = False  # EMOPIA: put the clip's quadrant (Q1..Q4) first
  c.data.chords = 'auto'  # 'auto' | 'annotations' | 'recognize' | 'none'
  # Words (CP) or events (REMI) the model learns on: per random window, or (whole_songs) the
  # longest song. Generation reads it: it never attends to more.
  c.data.seq_len = 3580  # the original's MAX_LEN 3,584 less its room: songs of <= 3,581 words
  c.data.whole_songs = True
  # Whole songs: 'longest_first' (the original's fixed order, no shuffling) | 'shuffled'.
  c.data.song_order = 'longest_first'
  c.data.max_eval_windows = 256
  c.data.num_workers = ml_collections.FieldReference(None, field_type=int)

  c.loss = 'original'  # 'original' | 'masked_mean' (see the module docstring)

  c.model = ml_collections.ConfigDict()
  c.model.d_model = 512
  c.model.num_heads = 8
  c.model.num_layers = 12
  c.model.ffn_dim = 2048
  c.model.dropout = 0.1
  c.model.relative = False
  c.model.abs_pos = True
  c.model.max_len = 3584  # >= data.seq_len: the longest sequence, the relative table's size
  c.model.embed_dims = ml_collections.ConfigDict(dict(
      type=32, bar_beat=64, tempo=128, chord=256, pitch=512, duration=128, velocity=128,
      emotion=32))
  c.model.remi_embed_dim = 512

  # Per-family sampling: temperature / top_p (None: no nucleus).
  c.sampling = ml_collections.ConfigDict()
  for family, (temperature, top_p) in dict(
      type=(1.0, 0.9), tempo=(1.2, 0.9), bar_beat=(1.2, None), chord=(1.0, 0.99),
      pitch=(1.0, 0.9), duration=(2.0, 0.9), velocity=(5.0, None), remi=(1.2, 0.9)).items():
    c.sampling[family] = ml_collections.ConfigDict(dict(
        temperature=temperature, top_p=ml_collections.FieldReference(top_p, field_type=float)))
  c.sampling.max_words = 3584  # the original samples until EOS: its songs are 1,039..2,122 words
  c.sampling.num_songs = 2
  # Past data.seq_len words the context window slides by this many words at a time (None:
  # seq_len // 8): every word is predicted from between seq_len - stride + 1 and seq_len words.
  c.sampling.window_stride = ml_collections.FieldReference(None, field_type=int)

  c.batch_size = 4
  c.learning_rate = 1e-4
  c.grad_clip_norm = 3.0
  # bf16 operands in the dense products (float32 accumulation, weights, layer norms, softmax and
  # optimizer state), for accelerators and CPUs with fast bf16.
  c.mixed_precision = False
  c.num_train_steps = 200_000
  c.eval_every_steps = 2000
  c.checkpoint_every_steps = 2000
  c.sample_every_steps = 0

  if name == 'small':
    c.data.seq_len = 256
    c.data.whole_songs = False
    c.model.update(d_model=128, num_heads=4, num_layers=3, ffn_dim=512, max_len=1024)
    c.model.embed_dims.update(pitch=128, chord=64, tempo=32, duration=32, velocity=32, bar_beat=32,
                              type=16, emotion=16)
    c.model.remi_embed_dim = 128
    c.batch_size = 8
    c.learning_rate = 3e-4
    c.num_train_steps = 20_000
    c.eval_every_steps = 1000
    c.checkpoint_every_steps = 1000
    c.sampling.max_words = 512
  elif name == 'tiny':
    c.dataset = 'synthetic'
    c.data.seq_len = 32
    c.data.whole_songs = False
    c.data.max_eval_windows = 8
    c.model.update(d_model=32, num_heads=2, num_layers=2, ffn_dim=64, dropout=0.0, max_len=128)
    c.model.embed_dims.update(pitch=16, chord=16, tempo=8, duration=8, velocity=8, bar_beat=8,
                              type=8, emotion=8)
    c.model.remi_embed_dim = 32
    c.batch_size = 4
    c.learning_rate = 3e-3
    c.num_train_steps = 20
    c.log_every_steps = 5
    c.eval_every_steps = 10
    c.checkpoint_every_steps = 10
    c.sampling.max_words = 64

  if 'emotion' in options:
    c.dataset = 'emopia'
    c.data.emotion = True
  return c
