"""Compound Word Transformer generation speed: cached generation, and the KV cache against
recomputing the whole prefix.

The 'paper' model (12 layers, d_model 512, 8 heads) with random weights: speed does not depend on
the weights. Generation is cpword/sample.py's own jitted loop (type first, then the fields, with
per-family nucleus sampling); EOS is held back so every song gets exactly the words asked for. The
paper reports 20.9 s per song of 1,430 words on average on an RTX 2080 Ti (68 words/s, linear
attention), for comparison only: another machine and another attention.

The cache comparison computes the same next word two ways at position 1,024: one cached step (the
word at 1,023 attends to a prefilled cache of 1,024 positions, then the word is sampled), and one
full forward pass over the 1,024-word prefix followed by the same sampling with the same key. The
two paths are checked to agree before they are timed.
"""

from __future__ import annotations

import functools

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from cpword import configs
from cpword import sample
from cpword import tokens
from cpword import train
from experiments import benchmarks as bench

GENERATED_WORDS = 256
PREFIX_WORDS = 1024
_PAPER = '20.9 s per 1,430-word song on an RTX 2080 Ti (68 words/s)'


def build(variant: str = 'paper'):
  """(model in eval mode, config) of a cpword variant, random weights."""
  config = configs.get_config(variant)
  model = train.build_model(config, nnx.Rngs(0))
  model.eval()
  return model, config


def prefix_tokens(config, length: int) -> np.ndarray:
  """`length` words (or REMI events) of real-looking music: synthetic pieces one after another."""
  vocab = tokens.vocab_from_config(config)
  parts, total, seed = [], 0, 0
  while total < length:
    words = tokens.encode_cp(train.synthetic_pieces(1, seed)[0], vocab, eos=False)
    if config.representation == 'remi':
      words = tokens.cp_to_remi(words, vocab)
    parts.append(words)
    total, seed = total + len(words), seed + 1
  return np.concatenate(parts)[:length]


def _unit(config) -> str:
  return 'events' if config.representation == 'remi' else 'words'


def _generation_result(name: str, model, config, num_songs: int, num_words: int, *,
                       repeats: int, warmup: int) -> dict:
  start = sample.start_tokens(config)
  settings = sample.settings_from_config(config)
  max_len = len(start) + num_words
  key = jax.random.key(0)

  def call():
    return sample.generate(model, start, rng=key, num_songs=num_songs, max_len=max_len,
                           settings=settings, min_len=max_len)  # no EOS before the last word

  songs = call()
  first = songs[..., 0] if songs.ndim == 3 else songs
  if not (first[:, len(start):] != 0).all():
    raise AssertionError(f'{name}: a song ended before {num_words} words')
  seconds = bench.median_seconds(call, repeats=repeats, warmup=warmup)
  rate = num_songs * num_words / seconds
  unit = _unit(config)
  return bench.result(
      name, seconds, throughput=f'{rate:.1f} {unit}/s ({num_words / seconds:.1f} per song)',
      note=f'{num_songs} song(s) x {num_words} {unit}, cached (jitted while_loop); paper: {_PAPER}',
      words_per_second=rate)


def _next_word_fns(model, settings):
  """Jitted (cached step, full pass): each returns (the next word, its first-field logits)."""
  graphdef, state = nnx.split(model)

  def next_word(m, h_BD, key):
    logits_BV = m.first_logits(h_BD)
    if m.multi_field:
      position_B = jnp.zeros(h_BD.shape[0], jnp.int32)  # in a bar, after a beat: no mask skipped
      word = sample.sample_cp_word(key, logits_BV, lambda type_B: m.field_logits(h_BD, type_B),
                                   settings, position_B)
    else:
      word = sample.sample_remi_event(key, logits_BV, settings)
    return word, logits_BV

  @functools.partial(jax.jit, donate_argnums=(1,))
  def cached(state, cache, word_B1F, pos, key):
    m = nnx.merge(graphdef, state)
    h_B1D, cache = m.hidden(word_B1F, cache, pos)
    return next_word(m, h_B1D[:, -1], key), cache

  @jax.jit
  def prefill(state, cache, prefix_BTF):
    h_BTD, cache = nnx.merge(graphdef, state).hidden(prefix_BTF, cache, 0)
    return h_BTD, cache

  @jax.jit
  def full(state, prefix_BTF, key):
    m = nnx.merge(graphdef, state)
    h_BTD, _ = m.hidden(prefix_BTF)
    return next_word(m, h_BTD[:, -1], key)

  return state, cached, prefill, full


def _cache_results(prefix: str, model, config, prefix_len: int, *, repeats: int,
                   warmup: int) -> list[dict]:
  settings = sample.settings_from_config(config)
  state, cached, prefill, full = _next_word_fns(model, settings)
  words = prefix_tokens(config, prefix_len)
  prefix_BTF = jnp.asarray(words.reshape(1, prefix_len, -1))
  key = jax.random.key(1)
  last_B1F = prefix_BTF[:, -1:]
  pos = jnp.asarray(prefix_len - 1, jnp.int32)
  _, cache = prefill(state, model.init_cache(1, prefix_len), prefix_BTF[:, :-1])
  holder = {'cache': cache}

  def cached_call():
    out, holder['cache'] = cached(state, holder['cache'], last_B1F, pos, key)
    return bench.block(out)

  def full_call():
    return bench.block(full(state, prefix_BTF, key))

  (word_c, logits_c), (word_f, logits_f) = cached_call(), full_call()
  np.testing.assert_allclose(np.asarray(logits_c), np.asarray(logits_f), rtol=2e-3, atol=2e-3,
                             err_msg='cached and full next-word logits differ')
  same_word = bool(np.array_equal(np.asarray(word_c), np.asarray(word_f)))
  cached_s = bench.median_seconds(cached_call, repeats=repeats, warmup=warmup)
  full_s = bench.median_seconds(full_call, repeats=repeats, warmup=warmup)
  speedup = full_s / cached_s
  unit = _unit(config)
  note = f'next {unit[:-1]} at position {prefix_len}, 1 song; same sample both ways: {same_word}'
  return [
      bench.result(f'{prefix}/cached_word_at_{prefix_len}', cached_s,
                   throughput=f'{1 / cached_s:.1f} {unit}/s',
                   note=f'{note}; one cached step ({prefix_len}-position cache), '
                        f'{speedup:.1f}x faster than the full pass',
                   speedup_vs_full=speedup, same_word=same_word),
      bench.result(f'{prefix}/full_prefix_{prefix_len}', full_s,
                   throughput=f'{1 / full_s:.2f} {unit}/s',
                   note=f'{note}; one forward pass over the {prefix_len}-{unit[:-1]} prefix, '
                        'no cache',
                   same_word=same_word)]


def run(variant: str = 'paper', *, num_words: int = GENERATED_WORDS,
        prefix_len: int = PREFIX_WORDS, repeats: int = 5, warmup: int = 2) -> list[dict]:
  """All cpword figures for a config variant ('tiny' with few words is the smoke test)."""
  model, config = build(variant)
  prefix = f'cpword/{variant}'
  one = _generation_result(f'{prefix}/generate_1_song', model, config, 1, num_words,
                           repeats=repeats, warmup=warmup)
  eight = _generation_result(f'{prefix}/generate_8_songs', model, config, 8, num_words,
                             repeats=repeats, warmup=warmup)
  eight['note'] += (f'; {eight["words_per_second"] / one["words_per_second"]:.1f}x the '
                    '1-song rate')
  return [one, eight] + _cache_results(prefix, model, config, prefix_len, repeats=repeats,
                                       warmup=warmup)


def paper(repeats: int, warmup: int) -> list[dict]:
  return run('paper', repeats=repeats, warmup=warmup)


# The benchmarks of this module by name (experiments/benchmark.py lists every module's).
BENCHMARKS = {
    'cpword/paper': paper,
}
