"""`--task=attribute` with the shipped model works offline: the attribute vectors ship beside
the checkpoint (pretrained/mel_2bar_small/attribute_vectors.npz), so no data set is read."""

import os
import shutil
import subprocess
import sys

from common import midi
from musicvae import data

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRETRAINED = os.path.join(REPO, 'pretrained', 'mel_2bar_small')


def _generate(tmp_path, workdir, *flags):
  melody = str(tmp_path / 'melody.mid')
  midi.write_midi(data.synthetic_melodies(1, num_bars=2, seed=4)[0], melody)
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu',
             MUSICGEN_DATA_DIR=str(tmp_path / 'no_data_here'))  # any data read would fail
  return subprocess.run(
      [sys.executable, '-m', 'experiments.generate', f'--workdir={workdir}', '--task=attribute',
       f'--inputs={melody}', '--attribute=note_density', '--attribute_scale=1.5',
       f'--out_dir={tmp_path / "out"}', *flags],
      env=env, capture_output=True, text=True, cwd=REPO, timeout=300)


def test_attribute_task_with_the_shipped_vectors_and_no_data_set(tmp_path):
  assert os.path.exists(os.path.join(PRETRAINED, 'attribute_vectors.npz'))
  result = _generate(tmp_path, PRETRAINED)
  assert result.returncode == 0, result.stderr[-2000:]
  written = sorted(os.listdir(tmp_path / 'out'))
  assert written == ['note_density_+1.5_000.mid'], written

  # Without the file: one line that says how to make it (no flag that does not exist).
  bare = tmp_path / 'bare'
  shutil.copytree(PRETRAINED, bare)
  os.remove(bare / 'attribute_vectors.npz')
  result = _generate(tmp_path, str(bare))
  assert result.returncode != 0
  lines = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1 and 'Traceback' not in result.stderr, result.stderr[-2000:]
  assert 'attribute_vectors.npz' in lines[0] and 'experiments.export --workdir=' in lines[0]
  assert '--attribute_vectors' not in lines[0]
