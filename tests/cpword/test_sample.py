"""Per-family nucleus sampling, cached generation, prompts, emotion, MIDI output."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import generation
from common import midi
from common.errors import UserError
from cpword import sample
from cpword import tokens
from cpword import train

_FIELDS = ('bar_beat', 'tempo', 'chord', 'pitch', 'duration', 'velocity')


def _nucleus(logits_V, temperature, top_p):
  """Indices of the smallest most-probable set reaching top_p (IGNORE excluded), in numpy."""
  x = np.array(logits_V, np.float64)
  x[0] = -np.inf
  p = np.exp((x - x.max()) / temperature)
  p /= p.sum()
  order = np.argsort(-p, kind='stable')
  before = np.cumsum(p[order]) - p[order]
  return set(order[(before < top_p) | (np.arange(len(p)) == 0)].tolist())


def test_per_family_top_p_never_samples_outside_the_nucleus():
  vocab = tokens.Vocab()
  sizes = vocab.family_sizes
  rng = np.random.default_rng(0)
  type_logits = np.array([0.0, -1.0, 1.0, 1.2, 3.0], np.float32)  # Emotion (4) must never come
  field_logits = {f: rng.normal(0, 2, sizes[f]).astype(np.float32) for f in _FIELDS}
  field_logits['bar_beat'][tokens.BAR] = field_logits['bar_beat'].max()  # some Bar words too
  settings = sample.settings_from_config(None)
  batch = 4000
  # Logits are arguments, not constants: XLA would spend minutes constant-folding the sorts.
  word_BF = jax.jit(lambda key, type_logits, field_logits: sample.sample_cp_word(
      key, jnp.broadcast_to(type_logits, (batch, 5)),
      lambda type_B: {f: jnp.broadcast_to(v, (batch, len(v))) for f, v in field_logits.items()},
      settings))(jax.random.key(1), type_logits, field_logits)
  word_BF = np.asarray(word_BF)
  types = word_BF[:, tokens.F['type']]
  assert set(types) <= _nucleus(np.where(np.arange(5) == 4, -np.inf, type_logits), 1.0, 0.9)
  assert tokens.TYPE_EMOTION not in types
  for family in _FIELDS:
    s = settings[family]
    used = word_BF[:, tokens.F[family]]
    used = used[used != tokens.IGNORE]
    allowed = _nucleus(field_logits[family], s['temperature'], s['top_p'] or 1.0)
    assert used.size and set(used.tolist()) <= allowed, family
    if s['top_p'] is not None and s['top_p'] < 1:
      assert len(allowed) < sizes[family] - 1, family  # the nucleus really excludes something
  # Fields follow the type: notes carry no metrical fields and vice versa.
  notes = word_BF[types == tokens.TYPE_NOTE]
  assert np.all(notes[:, [tokens.F['bar_beat'], tokens.F['tempo'], tokens.F['chord']]] == 0)
  bars = word_BF[(types == tokens.TYPE_METRICAL) & (word_BF[:, tokens.F['bar_beat']] == 1)]
  assert len(bars) and np.all(bars[:, [tokens.F['tempo'], tokens.F['pitch']]] == 0)


def test_settings_validation():
  with pytest.raises(UserError, match='unknown family'):
    sample.settings_from_config(None, {'pitchh': {'temperature': 1.0}})
  with pytest.raises(UserError, match='top_p'):
    sample.settings_from_config(None, {'pitch': {'top_p': 1.5}})
  assert sample.settings_from_config(None)['duration'] == {'temperature': 2.0, 'top_p': 0.9}


@pytest.mark.parametrize('representation', ['cp', 'remi'])
def test_generation_is_batched_deterministic_and_decodes(tiny_model, representation, tmp_path):
  config, model = tiny_model(representation, relative=True)
  settings = sample.settings_from_config(config)
  start = sample.start_tokens(config, emotion='Q2')
  # An untrained model may favour EOS at once: min_len keeps the songs going for a while.
  songs = sample.generate(model, start, rng=jax.random.key(0), num_songs=3, max_len=64,
                          settings=settings, min_len=20)
  again = sample.generate(model, start, rng=jax.random.key(0), num_songs=3, max_len=64,
                          settings=settings, min_len=20)
  np.testing.assert_array_equal(songs, again)
  assert songs.shape[:2] == (3, 64)
  np.testing.assert_array_equal(songs[:, :len(start)], np.broadcast_to(start, (3,) + start.shape))
  eos_token = songs[:, :20, 0] if songs.ndim == 3 else songs[:, :20]
  assert np.all(eos_token[:, :19] != tokens.TYPE_EOS)  # no EOS before min_len
  assert not np.array_equal(songs[0], songs[1])  # songs differ within the batch
  vocab = tokens.vocab_from_config(config)
  if representation == 'remi':
    # The REMI grammar mask: even an untrained model's songs decode in full, but for a note cut
    # short by the length limit (a Pitch or Pitch + Duration in the last two events).
    for song in songs:
      with warnings.catch_warnings():
        warnings.simplefilter('ignore', tokens.TokenWarning)
        words = tokens.remi_to_cp(song, vocab)
      decoded = tokens.cp_to_remi(words, vocab).tolist()
      events = song[song != 0].tolist()
      assert decoded == events[:len(decoded)] and len(decoded) >= len(events) - 2
      eos = int(np.sum(words[:, 0] == tokens.TYPE_EOS))
      assert tokens.valid_prefix_length(words, vocab) == len(words) - eos  # bars and beats too
  if representation == 'cp':
    # The grammar mask keeps every generated CP song valid up to its EOS or the length limit.
    for song in songs:
      eos = np.nonzero(song[:, 0] == tokens.TYPE_EOS)[0]
      end = eos[0] if len(eos) else len(song)
      assert tokens.valid_prefix_length(song, vocab) == end
      assert np.all(song[end + 1:] == 0)  # padding after EOS
      assert tokens.emotion_of(song) == 'Q2'


def test_prompt_is_continued(tiny_model, tmp_path):
  config, model = tiny_model('cp', relative=True)  # as above: reuses the compiled loop
  prompt = train.synthetic_pieces(1, seed=5)[0]
  path = str(tmp_path / 'prompt.mid')
  midi.write_midi(prompt, path)
  start = sample.start_tokens(config, prompt=midi.read_midi(path))
  assert start[-1, 0] != tokens.TYPE_EOS
  assert len(start) < 56
  songs = sample.generate(model, start, rng=jax.random.key(0), num_songs=3, max_len=64,
                          settings=sample.settings_from_config(config), min_len=len(start) + 8)
  np.testing.assert_array_equal(songs[:, :len(start)], np.broadcast_to(start, (3,) + start.shape))
  assert np.all(songs[:, len(start):len(start) + 8, 0] != 0)  # continued, no EOS yet
  pieces = sample.generate_pieces(model, config, generation.Request(
      task='continue', inputs=(midi.read_midi(path),), num_samples=3, length=64))
  for piece in pieces:
    assert len(piece.sequence.notes) >= len(prompt.notes)
  with pytest.raises(UserError, match='length limit'):
    sample.generate(model, start, rng=jax.random.key(0), num_songs=1, max_len=len(start),
                    settings=sample.settings_from_config(config))
