"""Relative attention's skewing, and cached generation equal to the full forward pass."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cpword import model as model_lib



def test_skew_equals_brute_force_gather():
  t = 7
  qe_BHTT = jax.random.normal(jax.random.key(0), (2, 3, t, t))
  skewed = np.asarray(model_lib.skew(qe_BHTT))
  qe = np.asarray(qe_BHTT)
  for i in range(t):
    for j in range(i + 1):
      # Column m of qe is relative distance m - (t - 1); the pair (i, j) has distance j - i.
      np.testing.assert_allclose(skewed[:, :, i, j], qe[:, :, i, t - 1 + j - i])


def test_relative_attention_logits_match_a_direct_computation():
  attn = model_lib.Attention(8, 2, relative=True, max_len=6, rngs=nnx.Rngs(0))
  x_BTD = jax.random.normal(jax.random.key(1), (1, 5, 8))
  q, k, v = attn._split(x_BTD)
  rel = np.asarray(attn.rel_HMK[...])
  expected = np.zeros((1, 2, 5, 5))
  for i in range(5):
    for j in range(i + 1):
      expected[:, :, i, j] = (np.einsum('bhk,bhk->bh', q[:, :, i], k[:, :, j]) +
                              np.einsum('bhk,hk->bh', q[:, :, i], rel[:, 6 - 1 + j - i]))
  expected = expected / np.sqrt(4)
  mask = np.tril(np.ones((5, 5), bool))
  expected = np.where(mask, expected, -np.inf)
  weights = np.exp(expected - expected.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  out = np.einsum('bhts,bhsk->bhtk', weights, np.asarray(v)).transpose(0, 2, 1, 3).reshape(1, 5, 8)
  got, _ = attn(x_BTD)
  np.testing.assert_allclose(got, attn.out(jnp.asarray(out, jnp.float32)), atol=1e-5)


@pytest.mark.parametrize('representation', ['cp', 'remi'])
@pytest.mark.parametrize('relative', [False, True], ids=['plain', 'relative'])
def test_cached_steps_equal_full_forward(tiny_model, representation, relative):
  _, model = tiny_model(representation, relative)
  families = model.families
  # The cache is stored in chunks of 16 positions (16, 16, 12); the prompt (19 words) and a
  # later block of 6 words at 30 are written across chunk boundaries, the rest one at a time.
  t, prompt, block_at, block = 40, 19, 30, 6
  assert [c.shape[2] for c in model.init_cache(2, t + 4)[0]['k']] == [16, 16, 12]
  assert [c.shape[2] for c in model.init_cache(1, t + 4)[0]['k']] == [t + 4]  # one song: one
  tokens_BTF = jnp.stack([jax.random.randint(jax.random.key(i), (2, t), 0, f.vocab_size)
                          for i, f in enumerate(families)], axis=-1)
  # Jitted with the weights as arguments (as constants XLA would try to fold them).
  graphdef, state = nnx.split(model)
  full = jax.jit(lambda state, tok: nnx.merge(graphdef, state)(tok, tok[..., 0]))(state, tokens_BTF)
  step = jax.jit(lambda state, tok, cache, pos: nnx.merge(graphdef, state).hidden(tok, cache, pos))
  cache = model.init_cache(2, t + 4)  # longer than the sequence: unused slots must not leak
  h_BPD, cache = step(state, tokens_BTF[:, :prompt], cache, jnp.asarray(0))  # prefill
  hs, pos = [h_BPD], prompt
  while pos < t:
    n = block if pos == block_at else 1
    h_BND, cache = step(state, tokens_BTF[:, pos:pos + n], cache, jnp.asarray(pos))
    hs.append(h_BND)
    pos += n
  h_BTD = jnp.concatenate(hs, axis=1)
  np.testing.assert_allclose(model.first_logits(h_BTD), full[families[0].name], atol=1e-4)
  if len(families) > 1:
    for name, logits in model.field_logits(h_BTD, tokens_BTF[..., 0]).items():
      np.testing.assert_allclose(logits, full[name], atol=1e-4)
  # The test can fail: a wrong position breaks the equality.
  h_wrong, _ = model.hidden(tokens_BTF[:, prompt:prompt + 1], model.hidden(
      tokens_BTF[:, :prompt], model.init_cache(2, 12), 0)[1], prompt + 1)
  assert not np.allclose(model.first_logits(h_wrong)[:, 0], full[families[0].name][:, prompt],
                         atol=1e-4)


def test_type_conditioning_changes_field_logits(tiny_model):
  _, model = tiny_model('cp')
  h_BTD = jax.random.normal(jax.random.key(0), (1, 2, model.d_model))
  a = model.field_logits(h_BTD, jnp.array([[1, 1]]))['pitch']
  b = model.field_logits(h_BTD, jnp.array([[1, 2]]))['pitch']
  np.testing.assert_allclose(a[:, 0], b[:, 0])
  assert not np.allclose(a[:, 1], b[:, 1])


@pytest.mark.parametrize('representation', ['cp', 'remi'])
def test_bfloat16_products_stay_close_to_float32(tiny_model, representation):
  _, model = tiny_model(representation, True)
  fast = model_lib.with_bfloat16_products(model)
  linears = [m for _, m in nnx.iter_graph(fast) if isinstance(m, model_lib.Linear)]
  assert all(m.kernel[...].dtype == jnp.bfloat16 for m in linears)
  assert all(m.kernel[...].dtype == jnp.float32
             for _, m in nnx.iter_graph(model) if isinstance(m, model_lib.Linear))
  tokens_BTF = jnp.stack([jax.random.randint(jax.random.key(i), (2, 12), 0, f.vocab_size)
                          for i, f in enumerate(model.families)], axis=-1)
  name = model.families[0].name
  want, got = model(tokens_BTF, tokens_BTF[..., 0])[name], fast(tokens_BTF, tokens_BTF[..., 0])[name]
  scale = float(jnp.abs(want).max())
  np.testing.assert_allclose(got, want, atol=0.03 * scale)
  assert np.mean(np.argmax(got, -1) == np.argmax(want, -1)) >= 0.9  # near-ties may flip


@pytest.mark.parametrize('shape', [(64, 1024), (1024, 64), (2048, 1024)])
def test_bfloat16_products_split_in_halves_equal_one_product(shape):
  linear = model_lib.Linear(*shape, rngs=nnx.Rngs(0))
  linear.kernel = nnx.Param(jax.random.normal(jax.random.key(0), shape, jnp.bfloat16))
  linear.bias = nnx.Param(jax.random.normal(jax.random.key(1), shape[1:]))
  x = jax.random.normal(jax.random.key(2), (3, shape[0]))
  want = jnp.dot(x.astype(jnp.bfloat16), linear.kernel[...],
                 preferred_element_type=jnp.float32) + linear.bias[...]
  np.testing.assert_allclose(linear(x), want, rtol=1e-5, atol=1e-4 * float(jnp.abs(want).max()))
