"""Evolve: a latent vector always decodes to the same melody within a session."""

import numpy as np
import pytest

from studio import app as app_lib
from studio import engine


@pytest.fixture(scope='module')
def musicvae_only(tiny_musicvae_workdir) -> engine.Models:
  return engine.load_models(tiny_musicvae_workdir, '', musicvae_required=True)


def test_same_vector_same_melody_wherever_it_stands(musicvae_only):
  """Each row is decoded with a key from (seed, the row): its notes do not depend on its
  position or on the other rows, and another seed samples other notes (temperature > 0)."""
  mvae = musicvae_only.musicvae
  assert mvae.temperature > 0
  z_NZ = np.random.default_rng(0).standard_normal((8, mvae.z_dim))
  notes = lambda seqs: [engine.notes_json(s) for s in seqs]
  first = notes(engine.decode_population(mvae, z_NZ, seed=5))
  order = np.array([3, 0, 7, 1, 6, 2, 5, 4])
  shuffled = notes(engine.decode_population(mvae, z_NZ[order], seed=5))
  assert shuffled == [first[i] for i in order]
  others = z_NZ.copy()
  others[1:] = np.random.default_rng(1).standard_normal((7, mvae.z_dim))
  assert notes(engine.decode_population(mvae, others, seed=5))[0] == first[0]
  assert notes(engine.decode_population(mvae, z_NZ, seed=6)) != first


def test_kept_selection_sounds_as_it_did(musicvae_only):
  """By default the selected melodies are kept in the next generation (first, their own
  parents); with sigma 0 their vectors are unchanged, so they play the same notes."""
  client = app_lib.create_app(musicvae_only, seed=0).test_client()
  state = client.get('/api/evolve').json
  for generation, selected in enumerate(([4, 1], [0], [2, 6, 7])):
    nxt = client.post('/api/evolve/next', json=dict(generation=generation, selected=selected,
                                                    sigma=0.0)).json
    assert nxt['generation'] == generation + 1
    for row, index in enumerate(selected):
      kept = nxt['population'][row]
      assert kept['parents'] == [index, index] and kept['origin'] in ('elite', 'mutant')
      assert kept['notes'] == state['population'][index]['notes']
    state = nxt
