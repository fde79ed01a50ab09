"""Song lengths in CP words and REMI events, and experiments/token_lengths.py."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from common.errors import UserError
from cpword import configs
from cpword import lengths
from cpword import train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_lengths_match_the_training_tokenisation():
  stats = lengths.token_lengths('valid', variant='tiny')
  config = configs.get_config('tiny')
  cp = [len(s) for s in train.tokenized_dataset(config, 'valid')]
  config.representation = 'remi'
  remi = [len(s) for s in train.tokenized_dataset(config, 'valid')]
  assert stats['songs'] == len(cp) == 4
  assert stats['cp_words'] == {'mean': np.mean(cp), 'median': np.median(cp), 'max': max(cp),
                               'min': min(cp), 'total': sum(cp)}
  assert stats['remi_events']['total'] == sum(remi) and stats['remi_events']['max'] == max(remi)
  assert stats['remi_per_cp'] == pytest.approx(sum(remi) / sum(cp))
  assert 1 < stats['remi_per_cp'] < 3  # notes are 3 events but 1 word
  assert stats['notes']['total'] == sum(len(p.notes) for p in train.synthetic_pieces(4, seed=1))
  text = lengths.format_table(stats)
  assert 'CP words' in text and 'REMI / CP' in text


def test_bad_options_are_user_errors():
  with pytest.raises(UserError):
    lengths.token_lengths('train', variant='huge')
  with pytest.raises(UserError):
    lengths.token_lengths('train', variant='tiny', limit=0)


def test_command_line_writes_json(tmp_path):
  out = tmp_path / 'lengths.json'
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  run = subprocess.run(
      [sys.executable, '-m', 'experiments.token_lengths', '--variant=tiny', '--data=synthetic',
       '--split=test', '--limit=3', f'--output={out}'],
      cwd=REPO, env=env, check=True, capture_output=True, text=True)
  assert 'synthetic test: 3 songs' in run.stdout
  assert json.loads(out.read_text())['songs'] == 3
