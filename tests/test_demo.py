"""`make demo`: every model writes MIDI that parses, WAV and PNG from the shipped checkpoints."""

import glob
import os
import subprocess
import sys

import note_seq

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_writes_music_for_every_model(tmp_path):
  out = tmp_path / 'demo'
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.demo', f'--out_dir={out}', '--num_samples=1',
       '--piano_seconds=2', '--cp_words=96'],
      cwd=REPO, capture_output=True, text=True, timeout=600,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'python -m experiments.studio' in result.stdout
  for model in ('coconet', 'musicvae', 'pianonet', 'cpword'):
    midis = sorted(glob.glob(str(out / model / '*.mid')))
    assert midis, f'{model}: no MIDI written'
    for path in midis:
      assert note_seq.midi_file_to_note_sequence(path).notes, path
      stem = os.path.splitext(path)[0]
      assert os.path.getsize(stem + '.wav') > 44 and os.path.getsize(stem + '.png') > 0
  # MusicVAE's interpolation reads the bundled melodies (no track named MELODY in them).
  assert len(glob.glob(str(out / 'musicvae' / 'interpolation_*.mid'))) == 5
