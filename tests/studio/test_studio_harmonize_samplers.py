"""The Harmonize page's sampler choice: Gibbs (default), chronological ancestral, independent."""

import io

import numpy as np
import pytest

from studio import app as app_lib
from studio import engine

MELODY = [72, 71, 69, 67, None, 67, 69, 71] * 2  # eighth-note grid columns, soprano range


@pytest.fixture(scope='module')
def client(studio_models):
  return app_lib.create_app(studio_models, seed=0).test_client()


@pytest.mark.parametrize('sampler', engine.SAMPLERS)
def test_each_sampler_harmonizes_and_keeps_the_soprano(client, sampler):
  response = client.post('/api/harmonize', json=dict(melody=MELODY, gibbs_steps=8, seed=3,
                                                     sampler=sampler))
  assert response.status_code == 200, response.json
  result = response.json
  assert result['sampler'] == sampler
  voices = np.array([[np.nan if p is None else p for p in row] for row in result['voices']],
                    float)
  want = np.repeat([np.nan if p is None else p for p in MELODY], 2)
  np.testing.assert_array_equal(voices[:, 0], want)
  assert np.isfinite(voices[:, 1:]).all()


def test_default_sampler_is_gibbs_and_a_bad_one_is_refused(client):
  result = client.post('/api/harmonize', json=dict(melody=MELODY, gibbs_steps=8, seed=3)).json
  assert result['sampler'] == 'gibbs'
  response = client.post('/api/harmonize', json=dict(melody=MELODY, gibbs_steps=8,
                                                     sampler='nade'))
  assert response.status_code == 400 and 'sampler must be one of' in response.json['error']
  response = client.post('/api/harmonize/upload', data=dict(
      file=(io.BytesIO(b'MThd'), 'x.mid'), gibbs_steps='8', sampler='nade'),
                         content_type='multipart/form-data')
  assert response.status_code == 400 and 'sampler' in response.json['error']
