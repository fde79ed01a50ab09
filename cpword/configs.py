r"""Compound Word Transformer (and REMI) configs.

  python -m experiments.train --config=cpword/configs.py:small --workdir=runs/cpword_small
  python -m experiments.train --config=cpword/configs.py:paper --workdir=runs/cpword_paper
  python -m experiments.train --config=cpword/configs.py:small_remi --workdir=runs/remi_small
  python -m experiments.train --config=cpword/configs.py:tiny --workdir=/tmp/cp \
      --config.representation=remi --config.model.relative=True

Variants: 'tiny' (seconds on a CPU, synthetic data), 'small' (CPU-sized, Pop1K7), 'paper'
(12 layers, d_model 512, 8 heads, ffn 2048, dropout 0.1, Adam 1e-4, batch 4, clip 3). Add
'_remi' for the REMI representation, '_emotion' for EMOPIA with emotion conditioning
('small_remi', 'small_emotion', ...). `dataset`: 'pop1k7' | 'emopia' | 'synthetic' | any MIDI set
of common.datasets.
The original CP model used linear attention over whole songs; here attention is softmax (optionally
relative) over windows of `data.seq_len` words.
"""

import itertools

import ml_collections

from common import configs

SIZES = ('tiny', 'small', 'paper')
# Every variant: a size, then '_remi' for the REMI representation, then '_emotion' for EMOPIA with
# emotion conditioning: 'small', 'small_remi', 'small_emotion', 'small_remi_emotion', ...
VARIANTS = tuple(size + remi + emotion for size, remi, emotion in
                 itertools.product(SIZES, ('', '_remi'), ('', '_emotion')))


def get_config(variant: str = 'tiny') -> ml_collections.ConfigDict:
  """A named config: 'tiny' | 'small' | 'paper', optionally with '_remi' and/or '_emotion'."""
  if variant not in VARIANTS:
    raise configs.unknown_variant('cpword', variant, VARIANTS)
  name = variant.split('_')[0]
  options = variant.split('_')[1:]

  c = configs.add_common_settings(ml_collections.ConfigDict(), task='cpword', variant=variant,
                                  dataset='pop1k7')
  c.representation = 'remi' if 'remi' in options else 'cp'

  c.tokens = ml_collections.ConfigDict(dict(
      steps_per_beat=4, beats_per_bar=4, tempo_min=32, tempo_step=3, num_tempo_bins=64,
      pitch_min=21, pitch_max=108, num_velocity_bins=32))

  c.data = ml_collections.ConfigDict()
  c.data.emotion = False  # EMOPIA: put the clip's quadrant (Q1..Q4) first
  c.data.chords = 'auto'  # 'auto' | 'annotations' | 'recognize' | 'none'
  c.data.seq_len = 512  # words (CP) or events (REMI) per training window
  c.data.max_eval_windows = 256
  c.data.num_workers = ml_collections.FieldReference(None, field_type=int)

  c.model = ml_collections.ConfigDict()
  c.model.d_model = 512
  c.model.num_heads = 8
  c.model.num_layers = 12
  c.model.ffn_dim = 2048
  c.model.dropout = 0.1
  c.model.relative = False
  c.model.abs_pos = True
  c.model.max_len = 2048  # longest window or generated song; the relative table's size
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
  c.sampling.max_words = 1024
  c.sampling.num_songs = 2

  c.batch_size = 4
  c.learning_rate = 1e-4
  c.grad_clip_norm = 3.0
  c.num_train_steps = 200_000
  c.eval_every_steps = 2000
  c.checkpoint_every_steps = 2000
  c.sample_every_steps = 0

  if name == 'small':
    c.data.seq_len = 256
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
