"""Generation with the KV cache: per-family temperature and nucleus sampling, type first.

CP: at every step the type is sampled first (EOS / Metrical / Note), then every family's head sees
the sampled type and each field is sampled with its own temperature and top-p; fields the type does
not use are set to IGNORE (and a Bar word carries no tempo or chord). REMI: one event per step.
Songs are generated in a batch inside one jitted `lax.while_loop`, until every song has its EOS or
the length limit, optionally continuing a prompt (a MIDI file) and/or after an emotion token.

The context never holds more than the `window` words the model was trained on (config.data.seq_len):
when the KV cache is full, the last window - stride words (after the pinned emotion word, which
stays first, as in training) are run again from position 0 into a fresh cache, and generation goes
on. So every word is predicted from between window - stride + 1 and window words, exactly as a full
forward pass over those words would predict it (`window_bases` says which; tests check it).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from common import generation
from common import midi
from common import precision
from common import sampling
from common.errors import UserError
from cpword import model as model_lib
from cpword import tokens

# The paper's settings (temperature, top_p); 'remi' is for the REMI model's single stream.
DEFAULT_SETTINGS: dict[str, dict[str, Any]] = {
    'type': {'temperature': 1.0, 'top_p': 0.9},
    'tempo': {'temperature': 1.2, 'top_p': 0.9},
    'bar_beat': {'temperature': 1.2, 'top_p': None},
    'chord': {'temperature': 1.0, 'top_p': 0.99},
    'pitch': {'temperature': 1.0, 'top_p': 0.9},
    'duration': {'temperature': 2.0, 'top_p': 0.9},
    'velocity': {'temperature': 5.0, 'top_p': None},
    'remi': {'temperature': 1.2, 'top_p': 0.9},
}
_FIELDS = ('bar_beat', 'tempo', 'chord', 'pitch', 'duration', 'velocity')
_NOTE_FIELDS = ('pitch', 'duration', 'velocity')
_ALLOWED_TYPES = (tokens.TYPE_EOS, tokens.TYPE_METRICAL, tokens.TYPE_NOTE)


def settings_from_config(config: ml_collections.ConfigDict | None = None,
                         overrides: Mapping[str, Mapping[str, Any]] | None = None
                         ) -> dict[str, dict[str, Any]]:
  """DEFAULT_SETTINGS, then config.sampling.<family>, then `overrides`."""
  settings = {k: dict(v) for k, v in DEFAULT_SETTINGS.items()}
  sources = []
  if config is not None and 'sampling' in config:
    sources.append({k: v for k, v in config.sampling.items()
                    if isinstance(v, ml_collections.ConfigDict)})
  sources.append(overrides or {})
  for source in sources:
    for family, values in source.items():
      if family not in settings:
        raise UserError(f'sampling settings for unknown family {family!r}; '
                        f'known: {", ".join(settings)}')
      values = dict(values.items())
      for key, value in values.items():
        if key not in ('temperature', 'top_p'):
          raise UserError(f'sampling.{family}.{key}: unknown; use temperature or top_p')
        if key == 'top_p' and value is not None and not 0 < value <= 1:
          raise UserError(f'sampling.{family}.top_p={value}: must be in (0, 1] or None')
        if key == 'temperature' and value < 0:
          raise UserError(f'sampling.{family}.temperature={value}: must be >= 0')
      settings[family].update(values)
  return settings


def _mask_ignore(logits_BV: jax.Array) -> jax.Array:
  return logits_BV.at[..., tokens.IGNORE].set(-jnp.inf)


def sample_cp_word(rng: jax.Array, type_logits_BV: jax.Array,
                   field_logits_fn: Callable[[jax.Array], Mapping[str, jax.Array]],
                   settings: Mapping[str, Mapping[str, Any]],
                   position_B: jax.Array | None = None,
                   allow_eos: jax.Array | bool = True) -> jax.Array:
  """One CP word per row (B, NUM_FAMILIES): the type, then the fields given that type.

  `field_logits_fn(type_B)` gives the logits of every non-type family. IGNORE is never sampled
  for a field the type uses; the other fields are set to IGNORE. With `position_B` (the current
  position in the bar, -1 right after a Bar) the grammar is enforced too: no note before a beat,
  beats only forward within a bar. `allow_eos` False forbids EOS (a minimum length).
  """
  type_key, field_key = jax.random.split(rng)
  types_V = jnp.arange(type_logits_BV.shape[-1])
  allowed_BV = jnp.broadcast_to(jnp.isin(types_V, jnp.array(_ALLOWED_TYPES)),
                                type_logits_BV.shape)
  if position_B is not None:
    allowed_BV &= ~((types_V == tokens.TYPE_NOTE) & (position_B[:, None] < 0))
  allowed_BV &= (types_V != tokens.TYPE_EOS) | allow_eos
  type_B = sampling.sample_logits(type_key, jnp.where(allowed_BV, type_logits_BV, -jnp.inf),
                                  **settings['type'])
  field_logits = {f: _mask_ignore(logits) for f, logits in field_logits_fn(type_B).items()}
  if position_B is not None:
    values_V = jnp.arange(field_logits['bar_beat'].shape[-1])
    forward_BV = (values_V == tokens.BAR) | (values_V - 2 > position_B[:, None])
    field_logits['bar_beat'] = jnp.where(forward_BV, field_logits['bar_beat'], -jnp.inf)
  ids = sampling.sample_fields(field_key, {f: field_logits[f] for f in _FIELDS},
                               {f: settings[f] for f in _FIELDS})
  metrical_B = type_B == tokens.TYPE_METRICAL
  beat_B = metrical_B & (ids['bar_beat'] != tokens.BAR)
  note_B = type_B == tokens.TYPE_NOTE
  use = {'bar_beat': metrical_B, 'tempo': beat_B, 'chord': beat_B,
         **{f: note_B for f in _NOTE_FIELDS}}
  word = {'type': type_B, 'emotion': jnp.zeros_like(type_B)}
  word.update({f: jnp.where(use[f], ids[f], tokens.IGNORE) for f in _FIELDS})
  return jnp.stack([word[f].astype(jnp.int32) for f in tokens.FAMILIES], axis=-1)


def sample_remi_event(rng: jax.Array, logits_BV: jax.Array,
                      settings: Mapping[str, Mapping[str, Any]],
                      allow_eos: jax.Array | bool = True,
                      allowed_BV: jax.Array | None = None) -> jax.Array:
  """The next REMI event; `allowed_BV` (tokens.remi_grammar's row of the previous event) keeps
  samples inside the grammar, so every generated song decodes in full."""
  logits_BV = _mask_ignore(logits_BV)
  if allowed_BV is not None:
    logits_BV = jnp.where(allowed_BV, logits_BV, -jnp.inf)
  logits_BV = logits_BV.at[..., 1].set(jnp.where(allow_eos, logits_BV[..., 1], -jnp.inf))
  return sampling.sample_logits(rng, logits_BV, **settings['remi'])[:, None]


def _remi_bar_position(event_B: jax.Array, bar_pos_B: jax.Array, layout: jax.Array) -> jax.Array:
  """The position in the bar after REMI event_B: -1 after a Bar, p after Position p."""
  value_B = event_B - layout[0] + 1  # bar_beat value: 1 = Bar, 2 + p = Position p
  is_bar_beat_B = (event_B >= layout[0]) & (event_B < layout[0] + layout[1])
  return jnp.where(is_bar_beat_B, jnp.where(value_B == tokens.BAR, -1, value_B - 2), bar_pos_B)


def _remi_allowed(event_B: jax.Array, bar_pos_B: jax.Array, grammar_VV: jax.Array,
                  layout: jax.Array) -> jax.Array:
  """(B, V) events allowed next: the grammar's row of the previous event, no Pitch before a beat
  of the bar, and Positions only forward within a bar (the rules CP sampling applies to words)."""
  ids_V = jnp.arange(grammar_VV.shape[-1])
  is_position_V = (ids_V > layout[0]) & (ids_V < layout[0] + layout[1])
  is_pitch_V = (ids_V >= layout[2]) & (ids_V < layout[2] + layout[3])
  backward_BV = is_position_V & (ids_V - layout[0] - 1 <= bar_pos_B[:, None])
  early_note_BV = is_pitch_V & (bar_pos_B[:, None] < 0)
  return grammar_VV[event_B] & ~backward_BV & ~early_note_BV


def window_bases(num_words: int, window: int, stride: int, pinned: int = 0) -> np.ndarray:
  """base[n]: the context after reading word n is words[:pinned] + words[base[n]:n + 1].

  Up to the window the context is every word; from word `window` on it slides by `stride` words
  each time the cache is full, so it holds between window - stride + 1 and window words.
  """
  n = np.arange(num_words)
  slides = np.where(n < window, 0, (n - window) // stride + 1)
  return pinned + stride * slides


def check_window(window: int, stride: int, pinned: int, model_max_len: int) -> None:
  """UserError unless the window and stride can slide (and the model can read the window)."""
  if window > model_max_len:
    raise UserError(f'the context window of {window} words exceeds the model\'s max_len '
                    f'{model_max_len}')
  if not 1 <= stride < window - pinned:
    raise UserError(f'sampling.window_stride={stride}: use 1 .. {window - pinned - 1} for a '
                    f'window of {window} words')


def default_stride(window: int) -> int:
  return max(1, window // 8)


def _generate(graphdef: nnx.GraphDef, state: nnx.State, rng: jax.Array, out_BLF: jax.Array,
              prompt_len: jax.Array, min_len: jax.Array, grammar_VV: jax.Array,
              remi_layout: jax.Array, *, settings, window: int, stride: int,
              pinned: int) -> jax.Array:
  """Fills out_BLF[:, prompt_len:]; the prompt is in out_BLF[:, :prompt_len].

  One loop for prompt and generation: while pos + 1 < prompt_len the next token is the prompt's
  (teacher forcing fills the cache), after that it is sampled. So prompt_len and min_len are traced
  and one compiled program serves every prompt. grammar_VV: REMI's allowed[previous, next]
  (tokens.remi_grammar) and remi_layout its (bar_beat first id, count, pitch first id, count);
  both unused for CP, whose sampler enforces the same rules on words. The cache holds
  min(window, length) positions: words[:pinned] then words[base:] (see window_bases).
  """
  model = nnx.merge(graphdef, state)
  batch, length, _ = out_BLF.shape
  cache_len = min(window, length)
  kept = window - stride - pinned  # unpinned words kept when the window slides
  eos = tokens.TYPE_EOS  # also REMI's EOS id

  def slide(out_BLF, pos):
    """A fresh cache holding words[:pinned] + the `kept` words before pos, and its base."""
    base = pos - kept
    context_BKF = jnp.concatenate(
        [out_BLF[:, :pinned], jax.lax.dynamic_slice_in_dim(out_BLF, base, kept, axis=1)], axis=1)
    _, cache = model.hidden(context_BKF, model.init_cache(batch, cache_len), 0)
    return cache, base

  def step(carry):
    pos, base, cache, out_BLF, done_B, bar_pos_B, rng = carry
    rng, key = jax.random.split(rng)
    word_BF = jax.lax.dynamic_index_in_dim(out_BLF, pos, axis=1, keepdims=False)
    if model.multi_field:
      # Track the position in the bar of the word just read (prompt or sampled).
      bar_beat_B = word_BF[:, tokens.F['bar_beat']]
      is_metrical_B = word_BF[:, tokens.F['type']] == tokens.TYPE_METRICAL
      bar_pos_B = jnp.where(is_metrical_B & (bar_beat_B == tokens.BAR), -1,
                            jnp.where(is_metrical_B & (bar_beat_B > tokens.BAR), bar_beat_B - 2,
                                      bar_pos_B))
    if length > window:  # static: only then can the cache fill up
      cache, base = jax.lax.cond(pinned + pos - base == cache_len,
                                 lambda: slide(out_BLF, pos), lambda: (cache, base))
    h_B1D, cache = model.hidden(word_BF[:, None], cache, pinned + pos - base)
    h_BD = h_B1D[:, 0]
    allow_eos = pos + 2 >= min_len
    if model.multi_field:
      new_BF = sample_cp_word(key, model.first_logits(h_BD),
                              lambda type_B: model.field_logits(h_BD, type_B), settings,
                              bar_pos_B, allow_eos)
    else:
      event_B = word_BF[:, 0]
      bar_pos_B = _remi_bar_position(event_B, bar_pos_B, remi_layout)
      new_BF = sample_remi_event(key, model.first_logits(h_BD), settings, allow_eos,
                                 _remi_allowed(event_B, bar_pos_B, grammar_VV, remi_layout))
    in_prompt = pos + 1 < prompt_len
    next_BF = jax.lax.dynamic_index_in_dim(out_BLF, jnp.minimum(pos + 1, length - 1), axis=1,
                                           keepdims=False)
    new_BF = jnp.where(in_prompt, next_BF, new_BF)
    new_BF = jnp.where(done_B[:, None], 0, new_BF)  # finished songs are padded
    out_BLF = jax.lax.dynamic_update_slice_in_dim(out_BLF, new_BF[:, None], pos + 1, axis=1)
    return pos + 1, base, cache, out_BLF, done_B | (new_BF[:, 0] == eos), bar_pos_B, rng

  def keep_going(carry):
    pos, _, _, _, done_B, _, _ = carry
    return (pos < length - 1) & ~jnp.all(done_B)

  init = (jnp.asarray(0, jnp.int32), jnp.asarray(pinned, jnp.int32),
          model.init_cache(batch, cache_len), out_BLF, jnp.zeros((batch,), bool),
          jnp.full((batch,), -1, jnp.int32), rng)
  return jax.lax.while_loop(keep_going, step, init)[3]


def start_tokens(config: ml_collections.ConfigDict, *, emotion: str | None = None,
                 prompt: midi.NoteSequence | None = None, name: str = 'the prompt') -> np.ndarray:
  """Where generation starts (words (N, F) or events (N,)): [Emotion] Bar, or [Emotion] + prompt.

  Prompt notes outside the vocabulary's pitch range are dropped with a warning that names the
  prompt (`name`) and says how many.
  """
  vocab = tokens.vocab_from_config(config)
  if prompt is not None:
    pitched, outside = tokens.count_out_of_range(prompt, vocab)
    if outside:
      logging.warning('%s: dropped %d of %d notes outside the model\'s pitch range %d..%d%s',
                      name, outside, pitched, vocab.pitch_min, vocab.pitch_max,
                      '; the continuation starts from silence' if outside == pitched else '')
    words = tokens.encode_cp(prompt, vocab, emotion=emotion, eos=False,
                             chords=config.data.get('chords', 'auto'))
  else:
    if emotion is not None and emotion not in tokens.EMOTIONS:
      raise UserError(f'emotion {emotion!r} is not one of {", ".join(tokens.EMOTIONS)}')
    words = [tokens.make_word(type=tokens.TYPE_EMOTION, emotion=tokens.EMOTIONS.index(emotion) + 1)
             ] if emotion else []
    words = np.array(words + [tokens.make_word(type=tokens.TYPE_METRICAL, bar_beat=tokens.BAR)],
                     np.int32)
  return tokens.cp_to_remi(words, vocab) if config.representation == 'remi' else words


def generate(model: model_lib.Transformer, start: np.ndarray, *, rng: jax.Array, num_songs: int,
             max_len: int, settings: Mapping[str, Mapping[str, Any]],
             min_len: int = 0, vocab: tokens.Vocab | None = None, window: int | None = None,
             stride: int | None = None) -> np.ndarray:
  """num_songs continuations of `start` (N, F) or (N,), each max_len tokens in all (0-padded).

  No EOS is sampled before `min_len` tokens (counting the start and the EOS itself). vocab: the
  model's token vocabulary (default tokens.Vocab()); REMI sampling follows its grammar.
  window: the longest context, the length the model was trained on (config.data.seq_len); past
  it the context slides by `stride` words (default window // 8), keeping a leading emotion token
  (module docstring). None: every word attends to all before it (max_len <= model.max_len).
  Several songs at once run the dense layers in bfloat16 where that is fast (common.precision).
  """
  start = np.asarray(start, np.int32)
  start_NF = start[:, None] if start.ndim == 1 else start
  if not 1 <= len(start_NF) < max_len:
    raise UserError(f'the prompt has {len(start_NF)} tokens; the length limit {max_len} must be '
                    'larger (raise max_words, or use a shorter prompt)')
  vocab = vocab or tokens.Vocab()
  pinned = int(tokens.starts_with_emotion(start, vocab))
  if window is None:
    if max_len > model.max_len:
      raise UserError(f'max_words={max_len} exceeds the model\'s max_len {model.max_len}')
    window, stride = max_len, 1
  else:
    stride = default_stride(window) if stride is None else stride
    check_window(window, stride, pinned, model.max_len)
  out_BLF = np.zeros((num_songs, max_len, start_NF.shape[1]), np.int32)
  out_BLF[:, :len(start_NF)] = start_NF
  model.eval()
  if precision.inference_dtype(num_songs) == 'bfloat16':
    model = _bfloat16_copy(model)
  graphdef, state = nnx.split(model)
  frozen = tuple(sorted((k, tuple(sorted(v.items()))) for k, v in settings.items()))
  fn = _jitted(graphdef, frozen, window, stride, pinned)
  ranges = vocab.remi_ranges
  remi_layout = np.array([ranges['bar_beat'][0], ranges['bar_beat'][2], ranges['pitch'][0],
                          ranges['pitch'][2]], np.int32)
  if model.multi_field:
    grammar_VV = np.ones((1, 1), bool)
  else:
    grammar_VV = tokens.remi_grammar(vocab)
    if grammar_VV.shape[0] != model.families[0].vocab_size:
      raise UserError(f'the REMI vocabulary has {grammar_VV.shape[0]} events but the model '
                      f'{model.families[0].vocab_size}: pass the vocab the model was trained with')
  out = np.asarray(fn(state, rng, jnp.asarray(out_BLF), jnp.asarray(len(start_NF), jnp.int32),
                      jnp.asarray(min_len, jnp.int32), jnp.asarray(grammar_VV),
                      jnp.asarray(remi_layout)))
  return out[..., 0] if start.ndim == 1 else out


_JIT_CACHE: dict = {}


@nnx.jit
def _bfloat16_copy(model: model_lib.Transformer) -> model_lib.Transformer:
  # A separate program: cast inside the generation program, it ran a few percent slower.
  return model_lib.with_bfloat16_products(model)


def _jitted(graphdef, frozen_settings, window: int, stride: int, pinned: int):
  key = (graphdef, frozen_settings, window, stride, pinned)
  if key not in _JIT_CACHE:
    settings = {k: dict(v) for k, v in frozen_settings}
    _JIT_CACHE[key] = jax.jit(
        lambda state, rng, out, prompt_len, min_len, grammar, layout: _generate(
            graphdef, state, rng, out, prompt_len, min_len, grammar, layout, settings=settings,
            window=window, stride=stride, pinned=pinned))
  return _JIT_CACHE[key]


def decode(config: ml_collections.ConfigDict, song: np.ndarray) -> midi.NoteSequence:
  """A generated song (words or events) as a NoteSequence (valid prefix, warning otherwise)."""
  vocab = tokens.vocab_from_config(config)
  if config.representation == 'remi':
    return tokens.decode_remi(song, vocab)
  return tokens.decode_cp(song, vocab)


def check_prompt(start: np.ndarray, config: ml_collections.ConfigDict, max_words: int,
                 name: str) -> None:
  """UserError naming the prompt file when its tokens (start_tokens) leave no room to generate.

  generate() checks the same, but cannot name the file.
  """
  if len(start) < max_words:
    return
  unit = 'events' if config.representation == 'remi' else 'words'
  hint = 'raise the length (--length) or use a shorter prompt'
  raise UserError(f'{name}: the prompt is {len(start):,} {unit} long; the length limit '
                  f'{max_words} must be larger ({hint})')


TASKS = ('generate', 'continue')


def context_window(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """(window, stride) of generation: the words a model of `config` was trained on
  (data.seq_len) and sampling.window_stride (None: window // 8)."""
  window = int(config.data.seq_len)
  stride = config.sampling.get('window_stride')
  return window, default_stride(window) if stride is None else int(stride)


def generate_pieces(model: model_lib.Transformer, config: ml_collections.ConfigDict,
                    request: generation.Request) -> list[generation.Piece]:
  """num_samples songs of at most request.length words (events for REMI; default the config's
  sampling.max_words), continuing request.inputs[0] when given (task 'continue') and after
  request.emotion's token for models trained with emotion. request.temperature scales every
  family's temperature. Songs that end at once (no notes) are left out."""
  task = request.task_or(TASKS, 'cpword')
  prompt = request.inputs[0] if request.inputs else None
  if task == 'continue' and prompt is None:
    raise UserError('cpword: --task=continue needs --melody=FILE to continue')
  settings = None
  if request.temperature is not None:
    settings = {family: {'temperature': values['temperature'] * request.temperature}
                for family, values in settings_from_config(config).items()}
  max_words = request.length or config.sampling.max_words
  name = request.input_names[0] if request.input_names else 'the prompt'
  start = start_tokens(config, emotion=request.emotion, prompt=prompt, name=name)
  if prompt is not None:
    check_prompt(start, config, max_words, name)
  window, stride = context_window(config)
  if max_words > window:
    unit = 'events' if config.representation == 'remi' else 'words'
    logging.info('cpword: %d %s with a context of at most %d (the length it was trained on), '
                 'sliding by %d', max_words, unit, window, stride)
  songs = generate(model, start, rng=jax.random.key(request.seed),
                   num_songs=request.num_samples, max_len=max_words,
                   settings=settings_from_config(config, settings),
                   min_len=request.min_length, vocab=tokens.vocab_from_config(config),
                   window=window, stride=stride)
  pieces = []
  for i, song in enumerate(songs):
    seq = decode(config, song)
    if seq.notes:
      pieces.append(generation.Piece(f'song_{i:03d}', seq))
  return pieces
