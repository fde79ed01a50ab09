r"""Writes tests/pianonet/fixtures/original_encoding.npz: MIDI files and the piano rolls that the
original PianoNet's own code makes of them.

  .venv-originals/bin/python tests/pianonet/make_encoding_fixture.py \
      --pianonet=SRC/angsten-pianonet --pypianoroll=SRC/pypianoroll-0.5.0

SRC/angsten-pianonet: github.com/angsten/pianonet at b092739e5fd4036821ce37e90e88c2d25838bf74 (MIT);
SRC/pypianoroll-0.5.0: github.com/salu133445/pypianoroll tag v0.5.0 (the version its
requirements.txt pins), both as source trees (the folders that hold pianonet/ and pypianoroll/).
The original turns a MIDI file into training data with `Pianoroll(path)` (pypianoroll's
Multitrack: pretty_midi notes on 24 steps per beat of the file's tempo map, tracks merged with
max, binarised) and then `trim_silence_off_ends()` (master_note_array.py:101-103); time-stretch
augmentation is `Pianoroll.get_stretched` (master_note_array.py:114). Both are run here on:

- six small MIDI files written below with mido, each aimed at one rule: re-struck keys and
  one-step notes, a tempo map with a 3/4 -> 6/8 change, a file without a time signature (the
  first beat is then estimated from the onsets), a drum track, notes outside the key window,
  and onsets on half steps (rounding);
- two real files: piano-midi.de's chpn-p7.mid (Chopin, Prelude op. 28 no. 7; a tempo map;
  piano-midi.de: for study and research only) and the smallest MAESTRO v2 file (CC BY-NC-SA 4.0;
  a sustain pedal, which the original ignores), from /work/shared/data.

Keys: midi/<case> (uint8 file bytes), roll/<case> (uint8 (T, 128): the trimmed roll),
stretched/<case>/<factor> (uint8 (T', 128)), meta (JSON: cases, factors, sources).
pygame (imported by the original only to play MIDI) is stubbed.
"""

import argparse
import io
import json
import os
import sys
import types

import mido
import numpy as np

CASES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')
SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'shared',
                      'data')
REAL_FILES = {
    'chopin_prelude_7': os.path.join(SHARED, 'piano-midi-de', 'midis', 'Chopin', 'chpn-p7.mid'),
    'maestro_small': os.path.join(
        SHARED, 'maestro-v2', '2011',
        'MIDI-Unprocessed_22_R1_2011_MID--AUDIO_R1-D8_12_Track12_wav.midi'),
}
STRETCH_FACTORS = (0.87, 1.13)
PPQ = 480


def _midi(events_by_track, tempos=((0, 120.0),), time_signatures=((0, 4, 4),)):
  """events_by_track: per track a list of (tick, message); the first track also gets the tempos
  (tick, qpm) and time signatures (tick, numerator, denominator)."""
  f = mido.MidiFile(ticks_per_beat=PPQ)
  for i, events in enumerate(events_by_track):
    events = list(events)
    if i == 0:
      events += [(tick, mido.MetaMessage('set_tempo', tempo=mido.bpm2tempo(qpm)))
                 for tick, qpm in tempos]
      events += [(tick, mido.MetaMessage('time_signature', numerator=n, denominator=d))
                 for tick, n, d in time_signatures]
    events.sort(key=lambda e: (e[0], e[1].type != 'set_tempo' and e[1].type != 'time_signature',
                               e[1].type == 'note_on' and e[1].velocity > 0))
    track = mido.MidiTrack()
    last = 0
    for tick, msg in events:
      track.append(msg.copy(time=tick - last))
      last = tick
    f.tracks.append(track)
  out = io.BytesIO()
  f.save(file=out)
  return out.getvalue()


def _notes(notes, channel=0):
  """(pitch, start tick, end tick[, velocity]) -> note_on/note_off events."""
  events = []
  for pitch, start, end, *velocity in notes:
    events.append((start, mido.Message('note_on', note=pitch, velocity=(velocity or [90])[0],
                                       channel=channel)))
    events.append((end, mido.Message('note_off', note=pitch, velocity=0, channel=channel)))
  return events


def synthetic_cases():
  """The rule-by-rule MIDI files. At 120 qpm and 480 ticks per beat one step is 20 ticks."""
  s = 20  # one step at 24 per beat
  restrike = _midi([
      _notes([(60, 0, 48 * s), (60, 24 * s, 72 * s),            # re-struck while down
              (62, 0, 1 * s), (62, 1 * s, 24 * s),               # a one-step note, then the key
              (64, 0, 24 * s), (64, 24 * s, 48 * s),             # touching notes
              (66, 10 * s, 11 * s), (66, 12 * s, 13 * s),        # one-step notes a step apart
              (67, 7 * s + 13, 19 * s + 7),                      # off the grid: round / floor
              (69, 30 * s, 40 * s), (69, 30 * s, 35 * s)]) +     # equal starts on one key
      [(5 * s, mido.Message('control_change', control=64, value=127)),
       (60 * s, mido.Message('control_change', control=64, value=0))],
      _notes([(65, 0, 48 * s), (65, 0, 12 * s), (67, 19 * s, 30 * s)]),   # a second track
  ])
  half_steps = _midi([_notes([(60 + i, 10 + 20 * i, 10 + 20 * i + 40 + 10 * (i % 3))
                              for i in range(12)] + [(72, 0, 20), (73, 900, 1500)])])
  tempo_map = _midi(
      [_notes([(60 + i % 12, i * 150, i * 150 + 230 + 37 * (i % 5)) for i in range(40)] +
              [(48, 0, 40 * 150), (48, 20 * 150, 41 * 150)])],
      tempos=((0, 90.0), (4 * PPQ, 60.0), (10 * PPQ + 240, 150.0), (20 * PPQ, 72.5)),
      time_signatures=((0, 3, 4), (9 * PPQ, 6, 8)))
  no_time_signature = _midi(
      [_notes([(55 + i % 7, 300 + i * 240, 300 + i * 240 + 200) for i in range(24)])],
      tempos=((0, 100.0),), time_signatures=())
  out_of_window = _midi([_notes([(110, 0, 100), (50, 200, 700), (60, 300, 900),
                                 (20, 1200, 1500)])])
  drums = _midi([_notes([(60, 0, 480), (64, 480, 960)]),
                 _notes([(36, 0, 30), (38, 480, 500), (42, 1400, 1410)], channel=9)])
  return {'restrike': restrike, 'half_steps': half_steps, 'tempo_map': tempo_map,
          'no_time_signature': no_time_signature, 'out_of_window': out_of_window,
          'drums': drums}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--pianonet', required=True, help='source tree of angsten/pianonet')
  parser.add_argument('--pypianoroll', required=True, help='source tree of pypianoroll 0.5.0')
  args = parser.parse_args()
  sys.modules['pygame'] = types.ModuleType('pygame')
  sys.path[:0] = [args.pypianoroll, args.pianonet]
  import pypianoroll  # pylint: disable=g-import-not-at-top
  from pianonet.core.pianoroll import Pianoroll  # pylint: disable=g-import-not-at-top
  assert pypianoroll.__version__ == '0.5.0', pypianoroll.__version__

  cases = synthetic_cases()
  for name, path in REAL_FILES.items():
    with open(path, 'rb') as f:
      cases[name] = f.read()
  arrays, tmp = {}, os.path.join(CASES_DIR, 'tmp.mid')
  os.makedirs(CASES_DIR, exist_ok=True)
  for name, midi_bytes in cases.items():
    with open(tmp, 'wb') as f:
      f.write(midi_bytes)
    roll = Pianoroll(tmp)
    roll.trim_silence_off_ends()
    arrays[f'midi/{name}'] = np.frombuffer(midi_bytes, np.uint8)
    arrays[f'roll/{name}'] = roll.array.astype(np.uint8)
    for factor in STRETCH_FACTORS:
      arrays[f'stretched/{name}/{factor}'] = roll.get_stretched(factor).array.astype(np.uint8)
    print(f'{name}: {roll.array.shape[0]} steps, {int(roll.array.sum())} key states down')
  os.remove(tmp)
  meta = {'cases': list(cases), 'stretch_factors': list(STRETCH_FACTORS),
          'real_files': {k: os.path.relpath(v, SHARED) for k, v in REAL_FILES.items()},
          'made_by': 'tests/pianonet/make_encoding_fixture.py: pianonet.core.pianoroll.Pianoroll '
                     '(angsten/pianonet b092739) over pypianoroll 0.5.0, pretty_midi '
                     f'{__import__("pretty_midi").__version__}'}
  arrays['meta'] = np.array(json.dumps(meta))
  np.savez_compressed(os.path.join(CASES_DIR, 'original_encoding.npz'), **arrays)


if __name__ == '__main__':
  main()
