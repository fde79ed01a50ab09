"""Per-family nucleus sampling, cached generation, prompts, emotion, MIDI output."""

import warnings

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import generation
from common import midi
from common import precision
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


# ------------------------------------------------------------------------------------------------
# The context window: generation never conditions on more words than the model was trained on.


def test_window_bases_keep_every_context_within_the_window():
  for window, stride, pinned in ((32, 4, 0), (32, 1, 0), (32, 31, 0), (32, 5, 1)):
    bases = sample.window_bases(4 * window + 7, window, stride, pinned)
    n = np.arange(len(bases))
    spans = pinned + n - bases + 1  # words in the context after reading word n
    assert spans.max() == window and np.all(spans >= 1)
    np.testing.assert_array_equal(spans[:window], np.arange(1, window + 1))
    assert spans[window:].min() == window - stride + 1  # at least window - stride + 1 after
    assert np.all(np.diff(bases) >= 0)


def _reference_generation(model, start, key, length, settings, window, stride):
  """The slow path: each word sampled after one full forward pass over its context, words[:pinned]
  + words[base:n + 1] with the base of sample.window_bases (the same keys as sample.generate)."""
  songs = np.zeros((2, length, tokens.NUM_FAMILIES), np.int32)
  songs[:, :len(start)] = start
  pinned = int(tokens.starts_with_emotion(start))
  bases = sample.window_bases(length, window, stride, pinned)
  bar_pos = np.full(2, -1)
  rng, spans = key, []
  graphdef, state = nnx.split(model)

  @jax.jit
  def next_word(state, context_BWF, last, step_key, bar_pos, allow_eos):
    # context_BWF is zero-padded to the window after its words: causal, so the padding is unseen.
    m = nnx.merge(graphdef, state)
    h_BD = jnp.take(m.hidden(context_BWF)[0], last, axis=1)
    return sample.sample_cp_word(step_key, m.first_logits(h_BD),
                                 lambda type_B: m.field_logits(h_BD, type_B), settings, bar_pos,
                                 allow_eos)

  for pos in range(length - 1):
    rng, step_key = jax.random.split(rng)
    word = songs[:, pos]
    metrical = word[:, 0] == tokens.TYPE_METRICAL
    bar_beat = word[:, tokens.F['bar_beat']]
    bar_pos = np.where(metrical & (bar_beat == tokens.BAR), -1,
                       np.where(metrical & (bar_beat > tokens.BAR), bar_beat - 2, bar_pos))
    context = np.concatenate([songs[:, :pinned], songs[:, bases[pos]:pos + 1]], axis=1)
    spans.append(context.shape[1])
    padded = np.pad(context, [(0, 0), (0, window - context.shape[1]), (0, 0)])
    new = next_word(state, jnp.asarray(padded), context.shape[1] - 1, step_key,
                    jnp.asarray(bar_pos, jnp.int32), pos + 2 >= length)
    if pos + 1 >= len(start):
      songs[:, pos + 1] = np.asarray(new)
  return songs, spans


@pytest.mark.parametrize('stride, emotion', [(1, None), (4, None), (5, 'Q2')],
                         ids=['last_window_words', 'stride_4', 'stride_5_emotion'])
def test_windowed_generation_equals_a_full_pass_over_its_window(tiny_model, monkeypatch, stride,
                                                                 emotion):
  monkeypatch.setenv(precision.ENV_VAR, 'float32')  # the reference multiplies in float32
  config, model = tiny_model('cp')
  window = config.data.seq_len
  length = 4 * window  # the window slides many times
  settings = sample.settings_from_config(config)
  start = sample.start_tokens(config, emotion=emotion)
  key = jax.random.key(3)
  fast = sample.generate(model, start, rng=key, num_songs=2, max_len=length, settings=settings,
                         min_len=length, window=window, stride=stride)
  slow, spans = _reference_generation(model, start, key, length, settings, window, stride)
  assert max(spans) == window and min(spans[window:]) == window - stride + 1
  np.testing.assert_array_equal(fast, slow)
  assert np.all(fast[:, :, 0] != 0)  # every word generated, none past the window left out
  if emotion:
    assert np.all(fast[:, 0] == start[0])


def test_generate_pieces_reads_the_window_from_the_config(tiny_model, monkeypatch):
  config, model = tiny_model('cp')
  config = config.copy_and_resolve_references()
  assert sample.context_window(config) == (config.data.seq_len, config.data.seq_len // 8)
  config.sampling.window_stride = 3
  assert sample.context_window(config) == (config.data.seq_len, 3)
  seen = {}
  original = sample.generate

  def spy(*args, **kwargs):
    seen.update(kwargs)
    return original(*args, **kwargs)
  monkeypatch.setattr(sample, 'generate', spy)
  pieces = sample.generate_pieces(model, config, generation.Request(
      num_samples=2, length=4 * config.data.seq_len, min_length=4 * config.data.seq_len))
  assert (seen['window'], seen['stride']) == (config.data.seq_len, 3) and pieces
  with pytest.raises(UserError, match='window_stride'):
    sample.generate(model, sample.start_tokens(config), rng=jax.random.key(0), num_songs=1,
                    max_len=64, settings=sample.settings_from_config(config), window=32,
                    stride=32)


@pytest.mark.parametrize('representation', ['cp', 'remi'])
def test_generation_past_the_model_length_slides_instead_of_failing(tiny_model, representation):
  config, model = tiny_model(representation)
  length = model.max_len + 40  # more than the model could read at once
  songs = sample.generate(model, sample.start_tokens(config), rng=jax.random.key(1), num_songs=2,
                          max_len=length, settings=sample.settings_from_config(config),
                          min_len=length, vocab=tokens.vocab_from_config(config),
                          window=config.data.seq_len)
  first = songs[..., 0] if songs.ndim == 3 else songs
  assert first.shape == (2, length) and np.all(first != 0)
  with pytest.raises(UserError, match='max_len'):
    sample.generate(model, sample.start_tokens(config), rng=jax.random.key(1), num_songs=1,
                    max_len=length, settings=sample.settings_from_config(config))


def test_prompt_notes_outside_the_pitch_range_are_dropped_with_a_count(tiny_model, caplog):
  config, _ = tiny_model('cp')
  prompt = train.synthetic_pieces(1, seed=5)[0]
  inside = len(prompt.notes)
  for pitch in (12, 21, 108, 120):
    prompt.notes.add(pitch=pitch, velocity=80, start_time=0.0, end_time=0.5)
  with caplog.at_level('WARNING'):
    start = sample.start_tokens(config, prompt=prompt, name='tune.mid')
  assert 'tune.mid: dropped 4 of %d notes outside the model\'s pitch range 22..107' % (
      inside + 4) in caplog.text
  assert (start[:, 0] == tokens.TYPE_NOTE).sum() == inside
  low = midi.NoteSequence()
  low.notes.add(pitch=10, velocity=80, start_time=0.0, end_time=0.5)
  caplog.clear()
  with caplog.at_level('WARNING'):
    start = sample.start_tokens(config, prompt=low, name='low.mid')
  assert 'low.mid: dropped 1 of 1 notes' in caplog.text and 'from silence' in caplog.text
  assert not (start[:, 0] == tokens.TYPE_NOTE).any()
