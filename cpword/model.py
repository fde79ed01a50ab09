"""Decoder-only transformer for compound words (CP) and, from the same code, REMI.

CP input: one embedding per family (sizes differ: pitch 512, chord 256, type 32, ...), concatenated
and projected to d_model, plus sinusoidal positions. Output, type first: type logits from the
hidden state; then concat(hidden, embed(type)) -> linear -> one head per other family, where the
type is the target type in training and the sampled type in generation. REMI is the one-family
case: one embedding, one head.

Self-attention is causal, optionally with Music Transformer relative attention: a learned
embedding per head and relative distance -(max_len-1)..0, added to the logits through "skewing"
in a full pass and through a gather in a cached pass (same numbers). Generation uses an explicit
KV cache of fixed length: `hidden(tokens, cache, pos)` runs any number of new tokens starting at
position `pos` (a traced scalar), so the step is jittable and prompt prefill is one call.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from common import precision
from common.errors import UserError
from cpword import tokens

# Per layer: keys and values (B, H, S, K), each split into chunks along S (Attention._cached).
LayerCache = dict[str, tuple[jax.Array, ...]]
Cache = list[LayerCache]
CACHE_CHUNKS = 8
_SPLIT_AT = 1024  # see Linear
_NEG = -1e30
# Weights are created as zeros and then filled from one random draw (`_init_weights`): compiling
# one RNG program per weight shape costs ~0.5 s each on a CPU, far more than the tiny models' use.
_ZEROS = nnx.initializers.zeros


class Linear(nnx.Linear):
  """nnx.Linear whose kernel may also be bfloat16 (`with_bfloat16_products`, for generation):
  the product then accumulates in float32.

  A bf16 product with 1,024 or more outputs (inputs) runs as two products over halves of them:
  XLA:CPU runs the two at once on two cores (a few percent more words/s at 8 songs).
  """

  def __init__(self, d_in: int, d_out: int, rngs: nnx.Rngs):
    super().__init__(d_in, d_out, kernel_init=_ZEROS, rngs=rngs)
    # Mixed-precision training (config.mixed_precision): float32 weights, bf16 operands in the
    # product and its gradients, float32 accumulation.
    self.bf16_products = False

  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.kernel[...]
    if kernel.dtype == jnp.float32 and self.bf16_products:
      return precision.matmul_bf16(x, kernel) + self.bias[...]
    if kernel.dtype == jnp.float32:
      return super().__call__(x)
    d_in, d_out = kernel.shape
    if d_out >= _SPLIT_AT and d_out % 2 == 0:
      half = d_out // 2
      y = jnp.concatenate([precision.matmul(x, kernel[:, :half]),
                           precision.matmul(x, kernel[:, half:])], axis=-1)
    elif d_in >= _SPLIT_AT and d_in % 2 == 0:
      half = d_in // 2
      y = (precision.matmul(x[..., :half], kernel[:half])
           + precision.matmul(x[..., half:], kernel[half:]))
    else:
      y = precision.matmul(x, kernel)
    return y + self.bias[...]


def _linear(d_in: int, d_out: int, rngs: nnx.Rngs) -> Linear:
  return Linear(d_in, d_out, rngs)


@dataclasses.dataclass(frozen=True)
class Family:
  name: str
  vocab_size: int
  embed_dim: int


def skew(qe_BHTT: jax.Array) -> jax.Array:
  """Music Transformer skewing: out[..., i, j] = qe[..., i, T-1-i+j] for j <= i (rest: junk).

  Column m of the input is relative distance m - (T-1); pad a zero column on the left, reshape
  (T, T+1) -> (T+1, T), drop the first row.
  """
  *lead, t, _ = qe_BHTT.shape
  padded = jnp.pad(qe_BHTT, [(0, 0)] * len(lead) + [(0, 0), (1, 0)])
  return padded.reshape(*lead, t + 1, t)[..., 1:, :]


def sinusoidal(positions_T: jax.Array, dim: int) -> jax.Array:
  """Transformer sine/cosine position encodings (T, dim)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half) / max(half, 1))
  angles = positions_T[:, None].astype(jnp.float32) * freqs[None, :]
  enc = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  return jnp.pad(enc, ((0, 0), (0, dim - 2 * half)))


def _init_weights(module: nnx.Module, key: jax.Array) -> None:
  """Fills every weight from one normal draw: kernels N(0, 1/fan_in) (LeCun), embeddings
  N(0, 1/dim) (flax's default), relative embeddings N(0, 1/head_dim); biases and norms keep
  theirs."""
  weights = [(path[-1], var) for path, var in nnx.iter_graph(module)
             if isinstance(var, nnx.Param) and path[-1] in ('kernel', 'embedding', 'rel_HMK')]
  sizes = [math.prod(var.shape) for _, var in weights]
  draw = jax.random.normal(key, (sum(sizes),), jnp.float32)
  if not isinstance(draw, jax.core.Tracer):
    draw = np.asarray(draw)  # slicing on the host avoids one compiled slice per shape
  offset = 0
  for (name, var), size in zip(weights, sizes):
    fan_in = var.shape[0] if name == 'kernel' else var.shape[-1]
    value = draw[offset:offset + size].reshape(var.shape) / math.sqrt(fan_in)
    var[...] = jnp.asarray(value, var.dtype)
    offset += size


class Attention(nnx.Module):
  """Causal multi-head self-attention, optionally relative, with an optional KV cache."""

  def __init__(self, d_model: int, num_heads: int, *, relative: bool, max_len: int,
               rngs: nnx.Rngs):
    if d_model % num_heads:
      raise ValueError(f'd_model {d_model} is not a multiple of num_heads {num_heads}')
    self.num_heads, self.head_dim, self.max_len = num_heads, d_model // num_heads, max_len
    self.qkv = _linear(d_model, 3 * d_model, rngs)
    self.out = _linear(d_model, d_model, rngs)
    self.relative = relative
    if relative:
      # rel_HMK[:, m] is the embedding of relative distance m - (max_len - 1).
      self.rel_HMK = nnx.Param(jnp.zeros((num_heads, max_len, self.head_dim)))

  def _split(self, x_BTD: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    b, t, _ = x_BTD.shape
    qkv = self.qkv(x_BTD).reshape(b, t, 3, self.num_heads, self.head_dim)
    q, k, v = (jnp.swapaxes(qkv[:, :, i], 1, 2) for i in range(3))  # each (B, H, T, K)
    return q, k, v

  def __call__(self, x_BTD: jax.Array, cache: LayerCache | None = None,
               pos: jax.Array | int = 0) -> tuple[jax.Array, LayerCache | None]:
    t = x_BTD.shape[1]
    q_BHTK, k_BHTK, v_BHTK = self._split(x_BTD)
    if cache is not None:
      return self._cached(q_BHTK, k_BHTK, v_BHTK, cache, pos)
    if t > self.max_len:
      raise ValueError(f'sequence length {t} exceeds max_len {self.max_len}')
    logits_BHTS = jnp.einsum('bhtk,bhsk->bhts', q_BHTK, k_BHTK)
    if self.relative:
      rel_HTK = self.rel_HMK[:, self.max_len - t:]  # distances -(T-1)..0
      logits_BHTS += skew(jnp.einsum('bhtk,hmk->bhtm', q_BHTK, rel_HTK))
    logits_BHTS = logits_BHTS / math.sqrt(self.head_dim)
    positions_T = jnp.arange(t)
    logits_BHTS = jnp.where(positions_T[None, :] <= positions_T[:, None], logits_BHTS, _NEG)
    weights_BHTS = jax.nn.softmax(logits_BHTS.astype(jnp.float32), axis=-1).astype(q_BHTK.dtype)
    return self._merge_heads(jnp.einsum('bhts,bhsk->bhtk', weights_BHTS, v_BHTK)), None

  def _merge_heads(self, out_BHTK: jax.Array) -> jax.Array:
    b, _, t, _ = out_BHTK.shape
    return self.out(jnp.swapaxes(out_BHTK, 1, 2).reshape(b, t, -1))

  def _relative_logits(self, q_BHTK: jax.Array, q_pos_T: jax.Array,
                       k_pos_S: jax.Array) -> jax.Array:
    """q . rel[k_pos - q_pos] for every query and key (a gather; skewing needs a full pass)."""
    b, h, t, _ = q_BHTK.shape
    qe_BHTM = jnp.einsum('bhtk,hmk->bhtm', q_BHTK, self.rel_HMK[...])
    index_TS = jnp.clip(self.max_len - 1 + k_pos_S[None, :] - q_pos_T[:, None], 0,
                        self.max_len - 1)
    return jnp.take_along_axis(qe_BHTM, jnp.broadcast_to(index_TS, (b, h, t, len(k_pos_S))),
                               axis=-1)

  def _cached(self, q_BHTK: jax.Array, k_BHTK: jax.Array, v_BHTK: jax.Array,
              cache: LayerCache, pos: jax.Array | int) -> tuple[jax.Array, LayerCache]:
    """Attention of t new tokens at pos..pos+t-1 over the cache's first `pos` entries and
    themselves; then the new keys and values are written into the cache.

    The cache is stored in chunks (`cache_chunk_lengths`) and a step reads only the chunks
    written so far (a lax.switch): reading the cache is a large part of a step at batch 8, and
    early in a song most of it is empty. Separate arrays, because a slice of one array is a
    copy on XLA:CPU. Reading the cache before writing it matters too: when the attention read
    the updated cache, XLA:CPU fused the update into each reader and copied the whole cache.
    """
    starts = np.cumsum([0] + [c.shape[2] for c in cache['k']])
    attend = [functools.partial(self._attend, num_chunks=n) for n in range(1, len(starts))]
    # Branch j reads chunks 0..j: enough when every old entry (< pos) lies before starts[j + 1].
    branch = jnp.sum(jnp.asarray(starts[1:-1]) < pos)
    out_BHTK = jax.lax.switch(branch, attend, q_BHTK, k_BHTK, v_BHTK, cache, pos)
    new_cache = {name: tuple(_write_chunk(chunk, x, pos - start)
                             for chunk, start in zip(cache[name], starts))
                 for name, x in (('k', k_BHTK), ('v', v_BHTK))}
    return self._merge_heads(out_BHTK), new_cache

  def _attend(self, q_BHTK: jax.Array, k_BHTK: jax.Array, v_BHTK: jax.Array,
              cache: LayerCache, pos: jax.Array | int, *, num_chunks: int) -> jax.Array:
    """Attention output (B, H, T, K) over the cache's first `num_chunks` chunks (entries >= pos
    are masked) and the new tokens."""
    t = q_BHTK.shape[2]
    q_pos_T = pos + jnp.arange(t)
    pieces = [(k, v, jnp.arange(k.shape[2])) for k, v in zip(cache['k'], cache['v'])]
    logits, values, start = [], [], 0
    for k_BHSK, v_BHSK, offsets_S in pieces[:num_chunks]:
      old_pos_S = start + offsets_S
      old_BHTS = jnp.einsum('bhtk,bhsk->bhts', q_BHTK, k_BHSK.astype(q_BHTK.dtype))
      if self.relative:
        old_BHTS += self._relative_logits(q_BHTK, q_pos_T, old_pos_S)
      logits.append(jnp.where(old_pos_S[None, :] < pos, old_BHTS, _NEG))  # not yet written
      values.append(v_BHSK.astype(q_BHTK.dtype))
      start += k_BHSK.shape[2]
    new_BHTT = jnp.einsum('bhtk,bhsk->bhts', q_BHTK, k_BHTK)
    if self.relative:
      new_BHTT += self._relative_logits(q_BHTK, q_pos_T, q_pos_T)
    logits.append(jnp.where(q_pos_T[None, :] <= q_pos_T[:, None], new_BHTT, _NEG))
    values.append(v_BHTK)
    logits_BHTS = jnp.concatenate(logits, -1) / math.sqrt(self.head_dim)
    weights_BHTS = jax.nn.softmax(logits_BHTS.astype(jnp.float32), axis=-1).astype(q_BHTK.dtype)
    out_BHTK, start = 0.0, 0
    for v_BHSK in values:
      n = v_BHSK.shape[2]
      out_BHTK += jnp.einsum('bhts,bhsk->bhtk', weights_BHTS[..., start:start + n], v_BHSK)
      start += n
    return out_BHTK


def _write_chunk(chunk_BHSK: jax.Array, x_BHTK: jax.Array, offset: jax.Array) -> jax.Array:
  """The chunk with x written at chunk positions offset..offset+t-1, where they fall inside it.

  One new entry (generation) is written in place: a dynamic update of one slot that rewrites
  the slot's own value when the position is in another chunk. Several (a prompt) rewrite the
  chunk with a select, once per prompt.
  """
  b, h, s, k = chunk_BHSK.shape
  x_BHTK = x_BHTK.astype(chunk_BHSK.dtype)
  t = x_BHTK.shape[2]
  if t == 1:
    index = jnp.clip(offset, 0, s - 1)
    old_BH1K = jax.lax.dynamic_slice(chunk_BHSK, (0, 0, index, 0), (b, h, 1, k))
    inside = (offset >= 0) & (offset < s)
    return jax.lax.dynamic_update_slice(chunk_BHSK, jnp.where(inside, x_BHTK, old_BH1K),
                                        (0, 0, index, 0))
  source_S = jnp.arange(s) - offset  # which new token lands on each chunk position
  taken_BHSK = jnp.take(x_BHTK, jnp.clip(source_S, 0, t - 1), axis=2)
  return jnp.where(((source_S >= 0) & (source_S < t))[:, None], taken_BHSK, chunk_BHSK)


def cache_chunk_lengths(cache_len: int, chunks: int = CACHE_CHUNKS) -> list[int]:
  """How a cache of cache_len positions is split: at most `chunks` pieces, multiples of 16
  except the last."""
  per_chunk = -(-cache_len // chunks)
  step = -(-per_chunk // 16) * 16
  return [min(step, cache_len - start) for start in range(0, cache_len, step)]


class Block(nnx.Module):
  """Pre-norm transformer block."""

  def __init__(self, d_model: int, num_heads: int, ffn_dim: int, *, dropout: float,
               relative: bool, max_len: int, rngs: nnx.Rngs):
    self.norm1 = nnx.LayerNorm(d_model, rngs=rngs)
    self.attn = Attention(d_model, num_heads, relative=relative, max_len=max_len, rngs=rngs)
    self.norm2 = nnx.LayerNorm(d_model, rngs=rngs)
    self.ffn_in = _linear(d_model, ffn_dim, rngs)
    self.ffn_out = _linear(ffn_dim, d_model, rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x_BTD, cache=None, pos=0):
    y_BTD, cache = self.attn(self.norm1(x_BTD), cache, pos)
    x_BTD = x_BTD + self.dropout(y_BTD)
    y_BTD = self.ffn_out(jax.nn.gelu(self.ffn_in(self.norm2(x_BTD))))
    return x_BTD + self.dropout(y_BTD), cache


class Transformer(nnx.Module):
  """Decoder over multi-field tokens (B, T, F); F = 1 is a plain language model (REMI).

  With F > 1, field 0 is the type family and the heads are type-first (see module docstring).
  """

  def __init__(self, families: Sequence[Family], *, d_model: int, num_heads: int,
               num_layers: int, ffn_dim: int, dropout: float, max_len: int,
               relative: bool = False, abs_pos: bool = True, rngs: nnx.Rngs):
    self.families = tuple(families)
    self.d_model, self.max_len, self.abs_pos = d_model, max_len, abs_pos
    self.embeds = nnx.List([nnx.Embed(f.vocab_size, f.embed_dim, embedding_init=_ZEROS, rngs=rngs)
                            for f in families])
    self.in_proj = _linear(sum(f.embed_dim for f in families), d_model, rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.blocks = nnx.List([
        Block(d_model, num_heads, ffn_dim, dropout=dropout, relative=relative, max_len=max_len,
              rngs=rngs) for _ in range(num_layers)])
    self.norm = nnx.LayerNorm(d_model, rngs=rngs)
    self.heads = nnx.List([_linear(d_model, f.vocab_size, rngs) for f in families])
    if len(families) > 1:
      self.type_proj = _linear(d_model + families[0].embed_dim, d_model, rngs)
    _init_weights(self, rngs.params())

  @property
  def multi_field(self) -> bool:
    return len(self.families) > 1

  def init_cache(self, batch_size: int, length: int, dtype=jnp.float32) -> Cache:
    """An empty KV cache for `length` positions (at most max_len)."""
    if length > self.max_len:
      raise ValueError(f'cache length {length} exceeds max_len {self.max_len}')
    attn = self.blocks[0].attn

    # One song reads one chunk: its cache is small next to the weights, and 8 chunks cost more
    # products per step (at 1,024 words, 14.6 ms per step against 10.1 ms; README).
    lengths = cache_chunk_lengths(length, CACHE_CHUNKS if batch_size > 1 else 1)

    def chunks():
      return tuple(jnp.zeros((batch_size, attn.num_heads, n, attn.head_dim), dtype)
                   for n in lengths)
    return [{'k': chunks(), 'v': chunks()} for _ in self.blocks]

  def hidden(self, tokens_BTF: jax.Array, cache: Cache | None = None,
             pos: jax.Array | int = 0) -> tuple[jax.Array, Cache | None]:
    """Final hidden states (B, T, D) of tokens at positions pos..pos+T-1 (and the new cache)."""
    x_BTE = jnp.concatenate([emb(tokens_BTF[..., i]) for i, emb in enumerate(self.embeds)], -1)
    x_BTD = self.in_proj(x_BTE)
    if self.abs_pos:
      x_BTD = x_BTD + sinusoidal(pos + jnp.arange(tokens_BTF.shape[1]), self.d_model)
    x_BTD = self.dropout(x_BTD)
    new_cache = None if cache is None else []
    for i, block in enumerate(self.blocks):
      x_BTD, layer_cache = block(x_BTD, None if cache is None else cache[i], pos)
      if cache is not None:
        new_cache.append(layer_cache)
    return self.norm(x_BTD), new_cache

  def first_logits(self, h_BTD: jax.Array) -> jax.Array:
    """Type logits (CP) or the token logits (REMI)."""
    return self.heads[0](h_BTD)

  def field_logits(self, h_BTD: jax.Array, type_BT: jax.Array) -> dict[str, jax.Array]:
    """Logits of every non-type family given the (teacher-forced or sampled) type."""
    g_BTD = self.type_proj(jnp.concatenate([h_BTD, self.embeds[0](type_BT)], axis=-1))
    return {f.name: head(g_BTD) for f, head in zip(self.families[1:], self.heads[1:])}

  def __call__(self, tokens_BTF: jax.Array, target_type_BT: jax.Array | None = None
               ) -> dict[str, jax.Array]:
    """Training pass: logits per family; the field heads see `target_type_BT` (CP)."""
    h_BTD, _ = self.hidden(tokens_BTF)
    logits = {self.families[0].name: self.first_logits(h_BTD)}
    if self.multi_field:
      logits.update(self.field_logits(h_BTD, target_type_BT))
    return logits


def with_bfloat16_products(model: Transformer) -> Transformer:
  """A copy of `model` whose dense layers multiply in bfloat16 with float32 accumulation
  (embeddings, norms, attention over the cache and sampling stay float32), for generation.

  Generation at batch > 1 reads every weight once per word, and bf16 weights are half the bytes.
  The input model is left as it is.
  """
  graphdef, state = nnx.split(model)
  copy = nnx.merge(graphdef, state)
  for _, module in nnx.iter_graph(copy):
    if isinstance(module, Linear):
      module.kernel = nnx.Param(module.kernel[...].astype(jnp.bfloat16))
  return copy


def families_from_config(config) -> list[Family]:
  """The output families of a cpword config: one 'token' family for REMI, seven for CP."""
  vocab = tokens.vocab_from_config(config)
  if config.representation == 'remi':
    return [Family('token', vocab.remi_size, config.model.remi_embed_dim)]
  if config.representation != 'cp':
    raise UserError(f"config.representation={config.representation!r}: use 'cp' or 'remi'")
  sizes = vocab.family_sizes
  return [Family(name, sizes[name], config.model.embed_dims[name]) for name in tokens.FAMILIES]


def build_model(config, rngs: nnx.Rngs) -> Transformer:
  """The Transformer a cpword config describes (config.mixed_precision: every dense product with
  bf16 operands and float32 accumulation; weights, layer norms, softmax and optimizer stay
  float32)."""
  m = config.model
  model = Transformer(
      families_from_config(config), d_model=m.d_model, num_heads=m.num_heads,
      num_layers=m.num_layers, ffn_dim=m.ffn_dim, dropout=m.dropout, max_len=m.max_len,
      relative=m.relative, abs_pos=m.abs_pos, rngs=rngs)
  if config.get('mixed_precision'):
    for _, module in nnx.iter_graph(model):
      if isinstance(module, Linear):
        module.bf16_products = True
  return model
