"""The studio's JSON API through Flask's test client: sessions, Evolve, Harmonize, bad requests,
and files that must not be reachable."""

import io
import json
import math
import os
import threading

import note_seq
import numpy as np
import pytest

from coconet import data as coconet_data
from common import midi
from common.errors import UserError
from musicvae import evolve
from studio import app as app_lib
from studio import engine
from studio import sessions

# Eighth-note columns of the grid (None: rest); all inside the soprano range.
MELODY = [67, 67, 69, 71, None, 72, 72, 74, 76, 76, 74, 72, 71, None, 69, 67] * 2
GIBBS = 8  # the fewest Gibbs steps offered: one compiled program, quick


@pytest.fixture(scope='module')
def app(studio_models):
  return app_lib.create_app(studio_models, seed=0)


@pytest.fixture
def client(app):
  return app.test_client()


def _error(response, status):
  assert response.status_code == status, response.data
  assert response.is_json and response.json['error'], response.data
  return response.json['error']


def _notes_of_midi(data: bytes):
  return note_seq.midi_io.midi_to_note_sequence(data).notes


def test_pages_static_files_and_headers(client):
  assert client.get('/').status_code == 302
  for path in ('/evolve', '/harmonize'):
    page = client.get(path)
    assert page.status_code == 200 and page.mimetype == 'text/html'
    assert "default-src 'self'" in page.headers['Content-Security-Policy']
  for name in ('studio.js', 'evolve.js', 'harmonize.js', 'studio.css'):
    assert client.get(f'/static/{name}').status_code == 200
  info = client.get('/api/info').json
  assert info['musicvae']['available'] and info['coconet']['available']
  assert info['coconet']['grid']['low'] == coconet_data.SOPRANO_RANGE[0]
  assert GIBBS in info['coconet']['gibbs_steps']


def test_sessions_are_separate(app):
  alice, bob = app.test_client(), app.test_client()
  first = alice.get('/api/evolve')
  assert 'HttpOnly' in first.headers['Set-Cookie']
  assert 'SameSite=Strict' in first.headers['Set-Cookie']
  a1 = alice.post('/api/evolve/next', json=dict(generation=0, selected=[1], sigma=0.2)).json
  b0 = bob.get('/api/evolve').json
  assert a1['generation'] == 1 and b0['generation'] == 0
  assert b0['seed'] != first.json['seed']
  alice_id = a1['population'][0]['id']
  assert alice.get(f'/out/{alice_id}.mid').status_code == 200
  _error(bob.get(f'/out/{alice_id}.mid'), 404)  # another session's output does not exist
  assert alice.get('/api/evolve').json['generation'] == 1  # bob did not move alice's session


def test_concurrent_requests(app):
  """Threads (as the threaded server runs them): sessions move independently, and two racing
  requests on one session's generation cannot both breed from it."""
  alice, bob = app.test_client(), app.test_client()
  alice.get('/api/evolve'), bob.get('/api/evolve')

  def breed(client, results):
    for generation in range(3):
      results.append(client.post('/api/evolve/next', json=dict(
          generation=generation, selected=[0, 1])).status_code)

  results = {'alice': [], 'bob': []}
  threads = [threading.Thread(target=breed, args=(c, results[n]))
             for n, c in (('alice', alice), ('bob', bob))]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert results == {'alice': [200] * 3, 'bob': [200] * 3}

  twin = app.test_client()  # a second tab: the same cookie
  twin.set_cookie(app_lib.COOKIE, alice.get_cookie(app_lib.COOKIE).value)
  statuses = []
  threads = [threading.Thread(target=lambda c=c: statuses.append(c.post(
      '/api/evolve/next', json=dict(generation=3, selected=[2])).status_code))
             for c in (alice, twin)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert sorted(statuses) == [200, 409]
  assert twin.get('/api/evolve').json['generation'] == 4


def test_evolve_next_undo_and_downloads(client):
  state = client.get('/api/evolve').json
  assert state['generation'] == 0 and not state['can_undo']
  assert len(state['population']) == 8
  assert len({c['id'] for c in state['population']}) == 8

  one = client.post('/api/evolve/next', json=dict(generation=0, selected=[0, 3], sigma=0.3)).json
  assert one['generation'] == 1 and one['can_undo'] and one['selected'] == [0, 3]
  assert one['last_sigma'] == 0.3
  assert {c['origin'] for c in one['population']} <= {'elite', 'child', 'mutant', 'foreign'}
  assert [c['parents'] for c in one['population'][:2]] == [[0, 0], [3, 3]]  # kept, maybe mutated
  for candidate in one['population']:
    assert set(candidate['parents']) <= {0, 3}

  back = client.post('/api/evolve/undo', json=dict(generation=1)).json
  assert back['generation'] == 0
  assert [c['id'] for c in back['population']] == [c['id'] for c in state['population']]
  # The same selection breeds the same generation again, and it decodes to the same notes.
  again = client.post('/api/evolve/next', json=dict(generation=0, selected=[0, 3], sigma=0.3)).json
  assert [c['notes'] for c in again['population']] == [c['notes'] for c in one['population']]

  candidate = again['population'][2]
  response = client.get(candidate['mid'])
  assert response.status_code == 200 and response.mimetype == 'audio/midi'
  assert response.headers['Content-Disposition'].startswith('attachment')
  notes = _notes_of_midi(response.data)
  assert [n.pitch for n in notes] == [n['pitch'] for n in candidate['notes']]

  wav = client.get(candidate['wav'])
  assert wav.status_code == 200 and wav.mimetype == 'audio/wav' and wav.data[:4] == b'RIFF'
  partial = client.get(candidate['wav'], headers={'Range': 'bytes=0-99'})
  assert partial.status_code == 206 and len(partial.data) == 100  # audio elements seek
  png = client.get(candidate['png'])
  assert png.status_code == 200 and png.data[:4] == b'\x89PNG'

  reset = client.post('/api/evolve/reset', json={}).json
  assert reset['generation'] == 0 and reset['seed'] != state['seed']
  assert client.get(candidate['mid']).status_code == 200  # old outputs stay downloadable


def test_evolve_rejects_bad_requests(client):
  state = client.get('/api/evolve').json
  generation = state['generation']
  assert 'JSON' in _error(client.post('/api/evolve/next', data='not json',
                                      content_type='application/json'), 400)
  _error(client.post('/api/evolve/next', data='[1, 2]', content_type='application/json'), 400)
  _error(client.post('/api/evolve/next', data='x=1'), 400)
  bad_bodies = [
      dict(generation=generation, selected=[]),
      dict(generation=generation),
      dict(generation=generation, selected=[8]),
      dict(generation=generation, selected=[-1]),
      dict(generation=generation, selected=[True]),
      dict(generation=generation, selected=['0']),
      dict(generation=generation, selected=[1, 1]),
      dict(generation=generation, selected=[0], sigma=1.5),
      dict(generation=generation, selected=[0], sigma='big'),
      dict(generation='0', selected=[0]),
  ]
  for body in bad_bodies:
    _error(client.post('/api/evolve/next', json=body), 400)
  message = _error(client.post('/api/evolve/next', data='{"generation": %d, "selected": [0], '
                               '"sigma": NaN}' % generation, content_type='application/json'),
                   400)
  assert 'sigma' in message
  assert 'reload' in _error(client.post('/api/evolve/next',
                                        json=dict(generation=generation + 5, selected=[0])), 409)
  assert 'nothing to undo' in _error(client.post('/api/evolve/undo',
                                                 json=dict(generation=generation)), 409)
  _error(client.get('/api/evolve/next'), 405)
  assert client.get('/api/evolve').json['generation'] == generation  # nothing moved


def test_harmonize_keeps_the_melody_in_the_soprano(client):
  response = client.post('/api/harmonize', json=dict(melody=MELODY, gibbs_steps=GIBBS, seed=1))
  assert response.status_code == 200, response.json
  result = response.json
  voices = np.array([[np.nan if p is None else p for p in row] for row in result['voices']],
                    float)
  want = np.repeat([np.nan if p is None else p for p in MELODY], 2)
  assert voices.shape == (len(MELODY) * 2, 4)
  np.testing.assert_array_equal(voices[:, 0], want)
  assert result['soprano'] == [None if np.isnan(p) else int(p) for p in want]
  assert result['transposed_by'] == 0 and result['gibbs_steps'] == GIBBS and result['seed'] == 1
  lower = voices[:, 1:]
  assert np.isfinite(lower).mean() > 0.9  # the model fills the lower voices
  assert np.all((lower[np.isfinite(lower)] >= 36) & (lower[np.isfinite(lower)] <= 81))

  seq = note_seq.midi_io.midi_to_note_sequence(client.get(result['mid']).data)
  sop = midi.quantize(seq, 4)
  soprano_notes = [n for n in sop.notes if n.instrument == 0]
  grid = np.full(len(want), np.nan)
  for n in soprano_notes:
    grid[n.quantized_start_step:n.quantized_end_step] = n.pitch
  np.testing.assert_array_equal(grid, want)
  assert client.get(result['png']).data[:4] == b'\x89PNG'
  assert client.get(result['wav']).mimetype == 'audio/wav'

  same = client.post('/api/harmonize', json=dict(melody=MELODY, gibbs_steps=GIBBS, seed=1)).json
  assert same['voices'] == result['voices']  # a seed makes it reproducible


def test_harmonize_out_of_range_melody(client):
  low = [55, 57, 59, 60] * 8  # G3..C4: below the soprano range (64 16ths, like the grid)
  message = _error(client.post('/api/harmonize', json=dict(melody=low, gibbs_steps=GIBBS)), 400)
  assert 'soprano range' in message and 'G3 (55) in column 1' in message
  result = client.post('/api/harmonize', json=dict(melody=low, gibbs_steps=GIBBS, transpose=True,
                                                   seed=0)).json
  assert result['transposed_by'] == 12
  assert [row[0] for row in result['voices']][::2] == [p + 12 for p in low]
  wide = [60, 96] * 16
  assert 'fits no octave' in _error(client.post(
      '/api/harmonize', json=dict(melody=wide, gibbs_steps=GIBBS, transpose=True)), 400)


def test_harmonize_rejects_bad_requests(client):
  bad_bodies = [
      dict(melody=[], gibbs_steps=GIBBS),
      dict(melody='C D E', gibbs_steps=GIBBS),
      dict(melody=[None, None], gibbs_steps=GIBBS),
      dict(melody=[60.5], gibbs_steps=GIBBS),
      dict(melody=[60, 200], gibbs_steps=GIBBS),
      dict(melody=[60], gibbs_steps=7),
      dict(melody=[60], gibbs_steps='eight'),
      dict(melody=[60], gibbs_steps=GIBBS, steps_per_note=0),
      dict(melody=[60], gibbs_steps=GIBBS, transpose='maybe'),
      dict(melody=[60] * 1000, gibbs_steps=GIBBS),
      dict(melody=[60], gibbs_steps=GIBBS, seed=-3),
  ]
  for body in bad_bodies:
    _error(client.post('/api/harmonize', json=body), 400)
  assert 'no notes' in _error(client.post('/api/harmonize', json=dict(
      melody=[None] * 4, gibbs_steps=GIBBS)), 400)


def _midi_bytes(pitches_T) -> bytes:
  seq = coconet_data.pitches_to_sequence(np.asarray(pitches_T, np.float32)[:, None])
  pm = note_seq.note_sequence_to_pretty_midi(seq)
  buffer = io.BytesIO()
  pm.write(buffer)
  return buffer.getvalue()


def test_harmonize_uploaded_midi(client):
  soprano = np.repeat([72, 71, 69, 67, 69, 71, 72, 72] * 2, 4)  # 64 16th steps
  form = dict(file=(io.BytesIO(_midi_bytes(soprano)), 'tune.mid'), gibbs_steps=str(GIBBS))
  result = client.post('/api/harmonize/upload', data=form,
                       content_type='multipart/form-data').json
  assert [row[0] for row in result['voices']] == soprano.tolist()

  low = _midi_bytes(soprano - 24)
  message = _error(client.post('/api/harmonize/upload', data=dict(
      file=(io.BytesIO(low), 'low.mid'), gibbs_steps=str(GIBBS)),
                               content_type='multipart/form-data'), 400)
  assert 'low.mid' in message and 'Transpose by octaves' in message
  shifted = client.post('/api/harmonize/upload', data=dict(
      file=(io.BytesIO(low), 'low.mid'), gibbs_steps=str(GIBBS), transpose='true'),
                        content_type='multipart/form-data').json
  assert shifted['transposed_by'] == 24


@pytest.mark.parametrize('data, words', [
    (b'hello, this is not MIDI', 'not a MIDI file'),
    (b'', 'empty file'),
    (b'MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\x00\x00\x01\x00\x90', 'truncated'),
])
def test_upload_of_a_corrupt_file_is_a_400(client, data, words):
  message = _error(client.post('/api/harmonize/upload', data=dict(
      file=(io.BytesIO(data), '../../etc/evil name.mid'), gibbs_steps=str(GIBBS)),
                               content_type='multipart/form-data'), 400)
  assert words in message and '/' not in message.split(':')[0]


def test_upload_limits_and_missing_parts(client):
  big = io.BytesIO(b'MThd' + b'\0' * (app_lib.MAX_UPLOAD_BYTES + 10))
  assert 'too large' in _error(client.post('/api/harmonize/upload', data=dict(
      file=(big, 'big.mid')), content_type='multipart/form-data'), 413)
  _error(client.post('/api/harmonize/upload', data=dict(gibbs_steps='8'),
                     content_type='multipart/form-data'), 400)
  _error(client.post('/api/harmonize/upload', data=dict(
      file=(io.BytesIO(_midi_bytes([72] * 32)), 'a.mid'), gibbs_steps='9'),
                     content_type='multipart/form-data'), 400)
  _error(client.post('/api/harmonize', data='{"melody": [60' + ', 60' * 400_000 + ']}',
                     content_type='application/json'), 413)


@pytest.mark.parametrize('path', [
    '/static/../studio/app.py', '/static/..%2Fapp.py', '/static/%2e%2e/%2e%2e/setup.py',
    '/static//etc/passwd', '/static/', '/static/evolve.html/..', '/static/./studio.js',
    '/out/../../setup.py', '/out/..%2F..%2Fsetup.py', '/out/%2Fetc%2Fpasswd',
    '/out/AAAAAAAAAAAAAAAAAAAAAA.mid', '/out/AAAAAAAAAAAAAAAAAAAAAA.txt', '/out/',
    '/out/%00.mid', '/etc/passwd', '/app.py', '/studio/app.py', '/../setup.py',
])
def test_paths_outside_the_app_are_404(client, path):
  client.get('/api/evolve')  # a session exists, so /out/ lookups reach the session's dict
  _error(client.get(path), 404)


def test_host_header_is_checked(client):
  assert client.get('/api/info', headers={'Host': 'localhost:8000'}).status_code == 200
  assert client.get('/api/info', headers={'Host': 'evil.example:8000'}).status_code == 400


def test_missing_musicvae_keeps_harmonize(tmp_path, studio_models):
  models = engine.load_models(str(tmp_path / 'nothing'), studio_models.coconet.workdir)
  assert models.musicvae is None and '--musicvae_workdir' in models.musicvae_message
  models.coconet = studio_models.coconet  # no second load
  client = app_lib.create_app(models).test_client()
  assert client.get('/').headers['Location'].endswith('/harmonize')
  assert '--musicvae_workdir' in _error(client.get('/api/evolve'), 503)
  assert not client.get('/api/info').json['musicvae']['available']
  assert client.get('/harmonize').status_code == 200
  with pytest.raises(UserError, match='config.json'):
    engine.load_models(str(tmp_path / 'nothing'), None, musicvae_required=True)
  with pytest.raises(UserError, match='no model'):
    engine.load_models('', '')


def test_session_store_makes_room_fresh_first_then_idle_then_the_newcomer(tmp_path):
  now = [0.0]
  store = sessions.SessionStore(max_sessions=2, seed=0, spill_dir=str(tmp_path),
                                active_seconds=60, clock=lambda: now[0])

  def added():
    session = store.new()
    return session, store.add(session)

  def come_back(session):
    store.release(store.checkout(session.id))

  (a, kept_a), (b, kept_b) = added(), added()
  assert kept_a and kept_b and len(store) == 2
  come_back(a)  # a is established; b stays fresh
  c, kept_c = added()
  assert kept_c and b.id not in store and store.expired(b.id) and store.checkout(b.id) is None
  d, kept_d = added()  # fresh c goes; established, active a stays
  assert kept_d and c.id not in store and a.id in store
  come_back(d)
  e, kept_e = added()  # a and d are active: the newcomer is the one dropped
  assert not kept_e and store.expired(e.id) and a.id in store and d.id in store

  now[0] = 61.0  # a and d are idle now: the least recently used one is spilled, not dropped
  f, kept_f = added()
  assert kept_f and a.id not in store and not store.expired(a.id)
  assert len(list(tmp_path.iterdir())) == 1 and a.id not in os.listdir(tmp_path)[0]
  restored = store.checkout(a.id)  # fresh f makes room for it
  assert restored is not a and restored.established and f.id not in store and len(store) == 2
  assert not list(tmp_path.iterdir())  # the session in memory is the one that counts
  g, kept_g = added()  # d is idle, a is in use: d is spilled
  assert kept_g and d.id not in store and restored.id in store
  store.release(restored)

  for bad in (None, '', '../../etc', 'x' * 32 + '/'):
    assert store.checkout(bad) is None and not store.expired(bad)


def test_a_spilled_session_keeps_its_evolution_exactly(tmp_path):
  session = sessions.Session('s' * 32, seed=5)
  session.new_seed()
  session.evolution = evolve.Evolution(4, 3, seed=7)
  session.evolution.next_generation([0, 2], sigma=0.3)
  state = json.loads(json.dumps(session.to_dict()))
  restored = sessions.Session.from_dict(session.id, state)
  assert restored.established and restored.generations == [None, None]
  assert restored.new_seed() == session.new_seed()
  assert restored.evolution.generation == 1
  np.testing.assert_array_equal(restored.evolution.population, session.evolution.population)
  np.testing.assert_array_equal(restored.evolution.next_generation([1]),
                                session.evolution.next_generation([1]))
  with pytest.raises(ValueError):
    sessions.Session.from_dict('s' * 32, dict(state, version=99))


def test_render_cache_is_bounded(monkeypatch):
  monkeypatch.setattr(sessions, 'CACHE_BYTES', 100)
  session = app_lib.Session('x' * 32, 0)
  ids = [session.add_output(app_lib.Output(seq=None, name='n', title='t')) for _ in range(3)]
  for output_id in ids:
    session.remember(output_id, 'wav', b'.' * 60)
  assert session.cache_bytes == 60 and 'wav' in session.outputs[ids[2]].rendered
  assert not session.outputs[ids[0]].rendered
  session.drop_output(ids[2])
  assert session.cache_bytes == 0 and math.isclose(len(session.outputs), 2)
