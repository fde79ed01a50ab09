"""Coconet trains on any folder of MIDI files (--config.dataset=midi_dir --config.data_dir=DIR):
four-part pieces become chorales, everything else is skipped with a counted reason."""

import os

from absl import logging
import note_seq
import numpy as np
import pytest

from common import datasets
from common import training
from common.errors import UserError
from coconet import configs
from coconet import data
from coconet import train
from tests.coconet.helpers import make_piece


def _names(split: str, count: int, stem: str) -> list[str]:
  """File names that common.datasets puts in `split` (it splits midi_dir on the path's hash)."""
  names = (f'{stem}{i}.mid' for i in range(1000))
  return [n for n in names if datasets.hash_split(n) == split][:count]


def _write(path: str, seq) -> None:
  note_seq.sequence_proto_to_midi_file(seq, path)


def _melody(seed: int):
  pitches = np.full((16, 1), np.nan, np.float32)
  pitches[:, 0] = np.repeat(np.random.default_rng(seed).integers(60, 80, 4), 4)
  return data.pitches_to_sequence(pitches, programs=(0, 0, 0, 0))


@pytest.fixture
def midi_folder(tmp_path, monkeypatch):
  monkeypatch.setenv(datasets.CACHE_DIR_ENV, str(tmp_path / 'cache'))
  folder = tmp_path / 'midi'
  folder.mkdir()
  chorales, melodies = _names('train', 3, 'chorale'), _names('train', 2, 'melody')
  for i, name in enumerate(chorales):
    pitches = make_piece(24, seed=i)
    if i == 2:
      pitches += 12  # the soprano above 81: the piece is moved down an octave
    _write(str(folder / name), data.pitches_to_sequence(pitches, programs='piano'))
  for i, name in enumerate(melodies):
    _write(str(folder / name), _melody(i))
  (folder / _names('train', 1, 'broken')[0]).write_bytes(b'MThd not really a MIDI file')
  return str(folder)


def _config(folder: str):
  config = configs.get_config('tiny')
  config.dataset, config.data_dir, config.max_pieces = 'midi_dir', folder, None
  config.crop_len = 8
  return config


def test_four_part_pitches_and_the_reasons_for_skipping():
  piece = make_piece(8)
  piece = piece[:, np.argsort(-np.nanmean(piece, axis=0))]  # parts go soprano to bass by mean
  seq = data.pitches_to_sequence(piece, programs='piano')
  np.testing.assert_array_equal(data.four_part_pitches(seq), piece)
  high = data.pitches_to_sequence(piece + 12, programs='piano')
  assert np.nanmax(piece + 12) > data.MAX_PITCH
  np.testing.assert_array_equal(data.four_part_pitches(high), piece)  # an octave down
  with pytest.raises(UserError, match='1 part, not 4'):
    data.four_part_pitches(_melody(0), name='tune.mid')
  with pytest.raises(UserError, match='no pitched notes'):
    data.four_part_pitches(note_seq.NoteSequence())


def test_load_pieces_keeps_chorales_and_counts_the_rest(midi_folder, monkeypatch):
  train._load.cache_clear()
  warnings = []
  monkeypatch.setattr(logging, 'warning', lambda fmt, *args: warnings.append(fmt % args))
  pieces = train.load_pieces(_config(midi_folder), 'train')
  assert len(pieces) == 3 and all(p.shape == (24, 4) for p in pieces)
  assert all(np.nanmax(p) <= data.MAX_PITCH for p in pieces)
  assert len(warnings) == 1
  assert '3 of 6 pieces are four-part chorales' in warnings[0]
  assert '2 not four parts' in warnings[0] and '1 unreadable' in warnings[0]


def test_a_folder_of_melodies_is_refused_in_one_line(tmp_path, monkeypatch):
  monkeypatch.setenv(datasets.CACHE_DIR_ENV, str(tmp_path / 'cache'))
  folder = tmp_path / 'melodies'
  folder.mkdir()
  for i, name in enumerate(_names('train', 2, 'tune')):
    _write(str(folder / name), _melody(i))
  train._load.cache_clear()
  with pytest.raises(UserError, match='no four-part pieces .* 2 not four parts'):
    train.load_pieces(_config(str(folder)), 'train')


@pytest.mark.slow
def test_tiny_trains_on_a_midi_folder(midi_folder, tmp_path):
  train._load.cache_clear()
  config = _config(midi_folder)
  config.update(num_train_steps=2, log_every_steps=1, eval_every_steps=2,
                checkpoint_every_steps=2, sample_every_steps=100)
  config.model.num_filters = 8
  workdir = str(tmp_path / 'run')
  training.train_and_evaluate(train.get_task(config), config, workdir)
  assert os.path.isdir(os.path.join(workdir, 'checkpoints'))
