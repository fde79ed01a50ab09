"""Tests for common/midi.py: MIDI round trip, every bad-file case, MusicXML, quantization."""

import os
import pickle

import mido
import pretty_midi
import pytest

from common import midi
from common.errors import UserError

TPQ = 220
QPM = 100.0
TICK_SECONDS = 60.0 / (QPM * TPQ)
BACH_MXL = 'bach/bwv10.7.mxl'  # a 4-part chorale that music21 ships


def _sequence(notes, qpm=QPM, tpq=TPQ):
  """notes: (pitch, start, end, velocity, instrument, program, is_drum)."""
  seq = midi.NoteSequence(ticks_per_quarter=tpq)
  seq.tempos.add(time=0.0, qpm=qpm)
  for pitch, start, end, velocity, instrument, program, is_drum in notes:
    seq.notes.add(pitch=pitch, start_time=start, end_time=end, velocity=velocity,
                  instrument=instrument, program=program, is_drum=is_drum)
  seq.total_time = max((n[2] for n in notes), default=0.0)
  return seq


BAND = [  # piano, bass and drums; times off the tick grid on purpose
    (60, 0.0, 0.5, 80, 0, 0, False),
    (64, 0.5, 1.013, 90, 0, 0, False),
    (67, 0.5, 1.013, 91, 0, 0, False),
    (40, 0.1, 1.9, 70, 1, 33, False),
    (36, 0.0, 0.1, 100, 2, 0, True),
    (42, 0.25, 0.3, 60, 2, 0, True),
]


def _midi_bytes(tmp_path, notes=BAND, **kwargs) -> bytes:
  path = tmp_path / 'fixture.mid'
  midi.write_midi(_sequence(notes, **kwargs), str(path))
  return path.read_bytes()


def _key(note):
  return (note.instrument, note.is_drum, round(note.start_time, 2), note.pitch)


def test_round_trip_keeps_pitches_times_velocities_programs_drums(tmp_path):
  path = str(tmp_path / 'out' / 'band.mid')  # the folder does not exist yet
  original = _sequence(BAND)
  midi.write_midi(original, path)
  back = midi.read_midi(path)

  assert back.filename == path
  assert len(back.notes) == len(original.notes)
  for want, got in zip(sorted(original.notes, key=_key), sorted(back.notes, key=_key)):
    assert (got.pitch, got.velocity, got.program, got.is_drum, got.instrument) == (
        want.pitch, want.velocity, want.program, want.is_drum, want.instrument)
    assert abs(got.start_time - want.start_time) <= TICK_SECONDS
    assert abs(got.end_time - want.end_time) <= TICK_SECONDS
  assert back.tempos[0].qpm == pytest.approx(QPM)
  assert os.listdir(tmp_path / 'out') == ['band.mid']  # no temp file left behind


def test_write_midi_failure_keeps_the_old_file(tmp_path):
  path = tmp_path / 'keep.mid'
  midi.write_midi(_sequence(BAND), str(path))
  before = path.read_bytes()
  bad = _sequence([(200, 0.0, 1.0, 80, 0, 0, False)])
  with pytest.raises(midi.MidiError, match='keep.mid.*pitch'):
    midi.write_midi(bad, str(path))
  silent = _sequence([(60, 0.0, 1.0, 0, 0, 0, False)])  # velocity 0 would vanish from the file
  with pytest.raises(midi.MidiError, match='velocity 0'):
    midi.write_midi(silent, str(path))
  assert path.read_bytes() == before
  assert os.listdir(tmp_path) == ['keep.mid']


def _raw_midi(tmp_path, name, events, ticks_per_beat=TPQ) -> str:
  """A type-0 MIDI file from mido messages, for faults note_seq would never write."""
  mf = mido.MidiFile(type=0, ticks_per_beat=ticks_per_beat)
  mf.tracks.append(mido.MidiTrack(events))
  path = str(tmp_path / name)
  mf.save(path)
  return path


def _note_events(pitch=60, ticks=TPQ):
  return [mido.Message('note_on', note=pitch, velocity=80, time=0),
          mido.Message('note_off', note=pitch, velocity=0, time=ticks)]


def _bad_file(tmp_path, case: str) -> tuple[str, str]:
  """Writes a file broken in the way `case` names; returns (path, expected MidiError.kind)."""
  path = tmp_path / f'bad_{case}.mid'
  good = _midi_bytes(tmp_path)
  if case == 'empty':
    path.write_bytes(b'')
    return str(path), 'empty file'
  if case == 'text':
    path.write_text('These are my notes, not a MIDI file.\n')
    return str(path), 'not a MIDI file'
  if case == 'random_bytes':
    path.write_bytes(bytes(range(7, 250, 3)) * 3)
    return str(path), 'not a MIDI file'
  if case == 'truncated':
    path.write_bytes(good[:len(good) - 20])
    return str(path), 'truncated'
  if case == 'corrupt_track':  # a valid header, then a track of garbage
    path.write_bytes(good[:22] + bytes([0x00, 0x90, 0xC8, 0xC8]) + good[26:])
    return str(path), 'corrupt MIDI'
  if case == 'smpte':
    path.write_bytes(good[:12] + bytes([0xE7, 0x28]) + good[14:])
    return str(path), 'unsupported MIDI'
  if case == 'no_notes':
    return _raw_midi(tmp_path, path.name, [mido.MetaMessage('set_tempo', tempo=500000)]), 'no notes'
  if case == 'zero_tempo':
    return _raw_midi(tmp_path, path.name,
                     [mido.MetaMessage('set_tempo', tempo=0)] + _note_events()), 'absurd tempo'
  if case == 'fast_tempo':  # 2000 qpm
    return _raw_midi(tmp_path, path.name,
                     [mido.MetaMessage('set_tempo', tempo=30000)] + _note_events()), 'absurd tempo'
  if case == 'seven_hours':  # one note that ends after 7 h at 120 qpm
    return _raw_midi(tmp_path, path.name, _note_events(ticks=7 * 3600 * 2 * TPQ)), 'too long'
  raise ValueError(case)


BAD_CASES = ['empty', 'text', 'random_bytes', 'truncated', 'corrupt_track', 'smpte', 'no_notes',
             'zero_tempo', 'fast_tempo', 'seven_hours']


@pytest.mark.parametrize('case', BAD_CASES)
def test_bad_midi_file_raises_midi_error_naming_the_file(tmp_path, case):
  path, kind = _bad_file(tmp_path, case)
  with pytest.raises(midi.MidiError) as info:
    midi.read_midi(path)
  assert str(info.value).startswith(f'{path}: ')
  assert info.value.kind == kind
  assert isinstance(info.value, UserError)
  with pytest.raises(midi.MidiError, match=f'^in_memory_{case}: '):
    with open(path, 'rb') as f:
      midi.midi_bytes_to_sequence(f.read(), f'in_memory_{case}')


def test_missing_file_raises_midi_error(tmp_path):
  with pytest.raises(midi.MidiError, match='nope.mid: cannot read file'):
    midi.read_midi(str(tmp_path / 'nope.mid'))


@pytest.mark.parametrize('notes, kind, words', [
    ([(128, 0.0, 1.0, 80, 0, 0, False)], 'pitch out of range', 'pitch outside 0..127'),
    ([(-1, 0.0, 1.0, 80, 0, 0, False)], 'pitch out of range', 'pitch outside 0..127'),
    ([(60, 1.0, 0.5, 80, 0, 0, False)], 'note ends before start', 'ends before it starts'),
    ([(60, -0.5, 0.5, 80, 0, 0, False)], 'negative time', 'starts before 0'),
    ([(60, 0.0, 1.0, 300, 0, 0, False)], 'velocity out of range', 'velocity 300'),
    ([(60, 1.0, 1.0, 80, 0, 0, False)], 'no notes', 'zero length'),
    ([], 'no notes', 'no notes'),
])
def test_validate_rejects_bad_sequences(notes, kind, words):
  with pytest.raises(midi.MidiError, match=f'^song.mid: .*{words}') as info:
    midi.validate(_sequence(notes), 'song.mid')
  assert info.value.kind == kind


def test_validate_limits_tempo_and_length():
  with pytest.raises(midi.MidiError, match='absurd tempo: 1001 qpm'):
    midi.validate(_sequence(BAND, qpm=1001), 'x')
  with pytest.raises(midi.MidiError, match='absurd tempo: 0 qpm'):
    midi.validate(_sequence(BAND, qpm=0), 'x')
  assert midi.validate(_sequence(BAND, qpm=1000), 'x')
  with pytest.raises(midi.MidiError, match='absurd length') as info:
    midi.validate(_sequence(BAND), 'x', max_seconds=1.5)  # the bass ends at 1.9 s
  assert info.value.kind == 'too long'


def test_validate_drops_zero_length_notes_without_touching_the_input():
  seq = _sequence([(60, 0.0, 1.0, 80, 0, 0, False), (62, 0.5, 0.5, 80, 0, 0, False),
                   (64, 1.0, 2.0, 80, 0, 0, False)])
  out = midi.validate(seq, 'x')
  assert [n.pitch for n in out.notes] == [60, 64]
  assert len(seq.notes) == 3
  clean = _sequence(BAND)
  assert midi.validate(clean, 'x') is clean


def test_midi_error_pickles():  # worker processes send errors to the parent
  e = pickle.loads(pickle.dumps(midi.MidiError('a.mid', 'no notes', 'no notes')))
  assert (str(e), e.path, e.reason, e.kind) == ('a.mid: no notes', 'a.mid', 'no notes', 'no notes')


def _corpus_path(name):
  from music21 import corpus  # pylint: disable=g-import-not-at-top
  return str(corpus.getWork(name))


def test_read_music_reads_compressed_musicxml():
  seq = midi.read_music(_corpus_path(BACH_MXL))
  assert len({n.part for n in seq.notes}) == 4
  assert len(seq.notes) > 100
  assert 36 <= min(n.pitch for n in seq.notes) and max(n.pitch for n in seq.notes) <= 81


def test_read_music_falls_back_to_music21(monkeypatch):
  path = _corpus_path(BACH_MXL)
  direct = midi.read_music(path)

  def broken(_):
    raise midi.musicxml_reader.MusicXMLConversionError('simulated failure')
  monkeypatch.setattr(midi.musicxml_reader, 'musicxml_file_to_sequence_proto', broken)
  fallback = midi.read_music(path)
  # music21's MIDI merges tied notes and note_seq does not, so compare sounding time per pitch.
  assert _seconds_per_pitch(fallback) == pytest.approx(_seconds_per_pitch(direct), abs=1e-3)
  assert fallback.filename == path


def _seconds_per_pitch(seq):
  total = {}
  for n in seq.notes:
    total[n.pitch] = total.get(n.pitch, 0.0) + n.end_time - n.start_time
  return total


def test_read_music_rejects_bad_and_unknown_files(tmp_path):
  bad = tmp_path / 'broken.mxl'
  bad.write_bytes(b'PK\x03\x04 not really a zip')
  with pytest.raises(midi.MidiError, match='broken.mxl: cannot read MusicXML') as info:
    midi.read_music(str(bad))
  assert info.value.kind == 'corrupt MusicXML'
  with pytest.raises(midi.MidiError, match="song.wav: unsupported file type '.wav'"):
    midi.read_music(str(tmp_path / 'song.wav'))
  (tmp_path / 'UPPER.MID').write_bytes(_midi_bytes(tmp_path))
  assert midi.read_music(str(tmp_path / 'UPPER.MID')).notes


def test_quantize_snaps_to_steps():
  seq = _sequence([(60, 0.0, 0.3, 80, 0, 0, False), (62, 0.3, 0.62, 80, 0, 0, False)], qpm=100)
  q = midi.quantize(seq, steps_per_quarter=4)  # a step is 0.15 s
  assert [(n.quantized_start_step, n.quantized_end_step) for n in q.notes] == [(0, 2), (2, 4)]
  assert q.quantization_info.steps_per_quarter == 4
  assert not seq.notes[0].quantized_end_step  # the input is untouched


def test_quantize_raises_midi_error_on_tempo_or_meter_change():
  seq = _sequence(BAND)
  seq.filename = 'changes.mid'
  seq.tempos.add(time=1.0, qpm=60)
  with pytest.raises(midi.MidiError, match='^changes.mid: cannot quantize: tempo change'):
    midi.quantize(seq, 4)
  seq = _sequence(BAND)
  seq.time_signatures.add(time=0.0, numerator=4, denominator=4)
  seq.time_signatures.add(time=1.0, numerator=3, denominator=4)
  with pytest.raises(midi.MidiError, match='time signature change.*--first_section'):
    midi.quantize(seq, 4)


def test_first_section_keeps_the_part_before_the_first_change():
  seq = _sequence(BAND)
  seq.filename = 'changes.mid'
  seq.time_signatures.add(time=0.0, numerator=4, denominator=4)
  seq.time_signatures.add(time=1.0, numerator=3, denominator=4)
  first = midi.first_section(seq)
  assert first.filename == 'changes.mid' and first.notes
  assert max(note.end_time for note in first.notes) <= 1.0 + 1e-9
  assert len(midi.quantize(first, 4).notes) == len(first.notes)
  unchanged = _sequence(BAND)
  assert len(midi.first_section(unchanged).notes) == len(unchanged.notes)


def test_pitched_notes_says_how_many_drum_notes_there_were():
  seq = _sequence(BAND)
  for note in seq.notes:
    note.is_drum = True
  expected = rf'^x.mid: no pitched notes \({len(seq.notes)} drum notes\)$'
  with pytest.raises(midi.MidiError, match=expected):
    midi.pitched_notes(seq, 'x.mid')


def test_quantize_rejects_bad_step_count():
  with pytest.raises(ValueError):
    midi.quantize(_sequence(BAND), 0)


def test_pretty_midi_tick_limit_is_restored(tmp_path):
  before = pretty_midi.pretty_midi.MAX_TICK
  midi.midi_bytes_to_sequence(_midi_bytes(tmp_path), 'x.mid')
  assert pretty_midi.pretty_midi.MAX_TICK == before
