"""PianoNet's default encoding equals the original's: the rolls that angsten/pianonet's own code
(Pianoroll over pypianoroll 0.5.0) made of eight MIDI files, and its time stretch; the earlier
encoding, which pretrained/pianonet_small was trained on, is unchanged under its recorded config.

fixtures/original_encoding.npz: tests/pianonet/make_encoding_fixture.py (its docstring says how).
fixtures/legacy_encoding.npz: pianonet/data.py at commit 6001d9f (sequence_to_roll, stretch_roll)
with pretrained/pianonet_small's encoding, on the same MIDI files.
"""

import json
import os

import numpy as np
import pytest

from common import configs as common_configs
from common import midi
from pianonet import data

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures')
PIANONET_SMALL = os.path.join(os.path.dirname(__file__), '..', '..', 'pretrained',
                              'pianonet_small')


def _load(name):
  with np.load(os.path.join(FIXTURES, name)) as npz:
    return {k: npz[k] for k in npz.files}


ORIGINAL = _load('original_encoding.npz')
LEGACY = _load('legacy_encoding.npz')
CASES = json.loads(str(ORIGINAL['meta']))['cases']
FACTORS = json.loads(str(ORIGINAL['meta']))['stretch_factors']


def sequence(case):
  return midi.midi_bytes_to_sequence(ORIGINAL[f'midi/{case}'].tobytes(), case)


@pytest.mark.parametrize('case', CASES)
def test_default_encoding_gives_the_originals_roll(case):
  enc = data.Encoding()  # the original's: 72 keys from MIDI 31, 24 steps per beat
  roll_TK, stats = data.sequence_to_roll(sequence(case), enc)
  want_TK = ORIGINAL[f'roll/{case}'][:, enc.lowest_key:enc.lowest_key + enc.num_keys]
  np.testing.assert_array_equal(roll_TK, want_TK)
  assert stats.key_down == int(want_TK.sum())


@pytest.mark.parametrize('case', CASES)
def test_row_stretch_is_the_originals(case):
  roll_TK = ORIGINAL[f'roll/{case}']
  for factor in FACTORS:
    np.testing.assert_array_equal(data.stretch_roll(roll_TK, factor),
                                  ORIGINAL[f'stretched/{case}/{factor}'])


def test_the_cases_exercise_the_rules():
  """The fixture's files differ from the earlier encoding where the rules differ."""
  earlier = data.Encoding(time_grid='seconds', note_rules='separate', note_end='round',
                          trim='window')
  for case in ('restrike', 'tempo_map', 'out_of_window', 'drums', 'chopin_prelude_7'):
    want_TK = ORIGINAL[f'roll/{case}'][:, 31:103]
    got_TK = data.sequence_to_roll(sequence(case), earlier)[0]
    assert got_TK.shape != want_TK.shape or not np.array_equal(got_TK, want_TK), case


@pytest.mark.parametrize('case', CASES)
def test_pianonet_small_keeps_the_encoding_it_was_trained_on(case):
  config = common_configs.read_config(PIANONET_SMALL)
  enc = data.encoding_from_config(config)
  assert (enc.time_grid, enc.sustain, enc.note_rules) == ('seconds', True, 'separate')
  roll_TK = data.sequence_to_roll(sequence(case), enc)[0]
  np.testing.assert_array_equal(roll_TK, LEGACY[f'roll/{case}'])
  aug = data.augmentation_from_config(config, 'train')
  for factor in FACTORS:
    np.testing.assert_array_equal(data.stretch_roll(roll_TK, factor, aug.stretch_method),
                                  LEGACY[f'stretched/{case}/{factor}'])
