"""NoteSequence I/O: MIDI and MusicXML in, MIDI out; validation names the file and the fault.

Every way a file can be bad ends in one `MidiError` whose message is "<path>: <reason>" and whose
`kind` is a short category ('not a MIDI file', 'truncated', 'no notes', ...) that folder scans
use to count skips. Reading goes through note_seq (pretty_midi underneath); MusicXML falls back
to music21 when note_seq cannot read a file.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import struct
import types
import warnings

from common import files
from common.errors import UserError

MIDI_EXTENSIONS = ('.mid', '.midi')
MUSICXML_EXTENSIONS = ('.xml', '.musicxml', '.mxl')
DEFAULT_MAX_SECONDS = 6 * 3600
MAX_QPM = 1000.0
# pretty_midi allocates a float64 tick->time table as long as the largest tick; a corrupt delta time
# could ask for tens of GB. 1e8 ticks (800 MB) is far beyond any real file (a 6 h piece at 960 ppq
# and 200 qpm has 7e7 ticks). note_seq itself raises pretty_midi's limit to 1e10.
_MAX_TICK = 1e8


@functools.cache
def _libs() -> types.SimpleNamespace:
  """note_seq and pretty_midi, imported on first use: note_seq's import takes most of a second
  (it pulls in bokeh, pandas and scipy), and a file that fails the byte-level checks needs
  neither, so a command given a bad file answers at once."""
  with warnings.catch_warnings():
    # note_seq imports pydub, which warns about ffmpeg at import time; we never decode audio.
    warnings.filterwarnings('ignore', message='.*ffmpeg.*', category=RuntimeWarning)
    import note_seq  # pylint: disable=g-import-not-at-top
    from note_seq import musicxml_reader  # pylint: disable=g-import-not-at-top
    from note_seq import sequences_lib  # pylint: disable=g-import-not-at-top
    from note_seq.protobuf import music_pb2  # pylint: disable=g-import-not-at-top
  import pretty_midi  # pylint: disable=g-import-not-at-top
  return types.SimpleNamespace(note_seq=note_seq, musicxml_reader=musicxml_reader,
                               sequences_lib=sequences_lib, music_pb2=music_pb2,
                               pretty_midi=pretty_midi)


def __getattr__(name: str):
  # `midi.NoteSequence` (the proto class) and the libraries load note_seq when first used.
  if name == 'NoteSequence':
    return _libs().music_pb2.NoteSequence
  if name in ('note_seq', 'musicxml_reader', 'sequences_lib', 'music_pb2', 'pretty_midi'):
    return getattr(_libs(), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


class MidiError(UserError):
  """A music file that cannot be used; the message is "<path>: <reason>"."""

  def __init__(self, path: str, reason: str, kind: str = 'bad file'):
    super().__init__(f'{path}: {reason}')
    self.path = path
    self.reason = reason
    self.kind = kind

  def __reduce__(self):
    return (MidiError, (self.path, self.reason, self.kind))


@contextlib.contextmanager
def _pretty_midi_reading():
  """Silences pretty_midi's per-file warnings and bounds its tick table while reading."""
  pretty_midi = _libs().pretty_midi
  old_max_tick = pretty_midi.pretty_midi.MAX_TICK
  pretty_midi.pretty_midi.MAX_TICK = _MAX_TICK
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      yield
  finally:
    pretty_midi.pretty_midi.MAX_TICK = old_max_tick


def _parse_midi(data: bytes, name: str) -> NoteSequence:
  """Bytes -> unvalidated NoteSequence; every failure becomes a MidiError with a kind."""
  if not data:
    raise MidiError(name, 'empty file (0 bytes)', 'empty file')
  if data[:4] != b'MThd':
    raise MidiError(name, f'not a MIDI file (starts with {data[:4]!r}, not b\'MThd\')',
                    'not a MIDI file')
  if len(data) < 14:
    raise MidiError(name, f'truncated MIDI header ({len(data)} bytes)', 'truncated')
  (division,) = struct.unpack('>h', data[12:14])
  if division <= 0:
    why = 'SMPTE time division' if division < 0 else 'a time division of 0 ticks per quarter'
    raise MidiError(name, f'unsupported MIDI file: {why}', 'unsupported MIDI')
  if data[10:12] == b'\x00\x00':  # mido reads as many tracks as the header says
    raise MidiError(name, 'no notes (the header says the file has 0 tracks)', 'no notes')
  try:
    with _pretty_midi_reading():
      pm = _libs().pretty_midi.PrettyMIDI(io.BytesIO(data))
  except EOFError:
    raise MidiError(name, 'truncated MIDI file (ends in the middle of a track)',
                    'truncated') from None
  except ZeroDivisionError:
    raise MidiError(name, 'absurd tempo (a tempo event of 0 microseconds per quarter)',
                    'absurd tempo') from None
  except Exception as e:  # pylint: disable=broad-except
    # mido and pretty_midi raise OSError, ValueError, KeyError, IndexError... on corrupt data.
    if 'largest tick' in str(e):
      raise MidiError(name, f'absurd length (largest tick is beyond {_MAX_TICK:.0e})',
                      'too long') from None
    raise MidiError(name, f'corrupt MIDI file ({type(e).__name__}: {e})', 'corrupt MIDI') from None
  try:
    seq = _libs().note_seq.midi_to_note_sequence(pm)
  except Exception as e:  # pylint: disable=broad-except
    raise MidiError(name, f'corrupt MIDI file ({e})', 'corrupt MIDI') from None
  seq.filename = name
  return seq


def midi_bytes_to_sequence(data: bytes, name: str, *,
                           max_seconds: float = DEFAULT_MAX_SECONDS) -> NoteSequence:
  """Parses and validates the bytes of a MIDI file; `name` is used in error messages."""
  return validate(_parse_midi(data, name), name, max_seconds=max_seconds)


def _read_bytes(path: str) -> bytes:
  try:
    with open(path, 'rb') as f:
      return f.read()
  except OSError as e:
    raise MidiError(path, f'cannot read file ({e.strerror or e})', 'unreadable') from None


def read_midi(path: str, *, max_seconds: float = DEFAULT_MAX_SECONDS) -> NoteSequence:
  """Reads and validates one MIDI file."""
  return midi_bytes_to_sequence(_read_bytes(path), path, max_seconds=max_seconds)


def _music21_to_sequence(path: str) -> NoteSequence:
  """MusicXML -> NoteSequence via music21 (parse, render to MIDI bytes, read those)."""
  import music21  # pylint: disable=g-import-not-at-top  (slow import, rarely needed)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    score = music21.converter.parse(path, forceSource=True)
    data = music21.midi.translate.streamToMidiFile(score).writestr()
  return _parse_midi(data, path)


def _describe(e: Exception) -> str:
  return str(e) or type(e).__name__


def _read_musicxml(path: str) -> NoteSequence:
  if not os.path.isfile(path):
    _read_bytes(path)  # raises the OS's reason (missing, a folder, no permission)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      seq = _libs().musicxml_reader.musicxml_file_to_sequence_proto(path)
  except Exception as note_seq_error:  # pylint: disable=broad-except
    try:
      seq = _music21_to_sequence(path)
    except Exception as music21_error:  # pylint: disable=broad-except
      raise MidiError(path, f'cannot read MusicXML (note_seq: {_describe(note_seq_error)}; '
                      f'music21: {_describe(music21_error)})', 'corrupt MusicXML') from None
  seq.filename = path
  return seq


def read_music(path: str, *, max_seconds: float = DEFAULT_MAX_SECONDS) -> NoteSequence:
  """Reads a .mid/.midi/.xml/.musicxml/.mxl file (by extension) into a validated NoteSequence."""
  ext = os.path.splitext(path)[1].lower()
  if ext in MIDI_EXTENSIONS:
    return read_midi(path, max_seconds=max_seconds)
  if ext in MUSICXML_EXTENSIONS:
    return validate(_read_musicxml(path), path, max_seconds=max_seconds)
  raise MidiError(path, f'unsupported file type {ext or "(no extension)"!r}; expected one of '
                  f'{", ".join(MIDI_EXTENSIONS + MUSICXML_EXTENSIONS)}', 'unsupported file type')


def _note_str(i: int, note) -> str:
  return f'note {i} (pitch {note.pitch}, {note.start_time:.3f}-{note.end_time:.3f} s)'


def validate(seq: NoteSequence, name: str, *,
             max_seconds: float = DEFAULT_MAX_SECONDS) -> NoteSequence:
  """Checks that `seq` is usable music; raises MidiError naming `name` and the fault.

  Faults: no notes, a tempo outside (0, 1000] qpm, notes beyond `max_seconds`, pitches or velocities
  outside 0..127, negative times, notes that end before they start. Zero-length notes are not a
  fault: they are dropped. Returns `seq` itself when nothing is dropped, else a trimmed copy (the
  input is never modified).
  """
  for tempo in seq.tempos:
    if not 0 < tempo.qpm <= MAX_QPM:  # also catches NaN
      raise MidiError(name, f'absurd tempo: {tempo.qpm:g} qpm at {tempo.time:.2f} s '
                      f'(allowed: above 0, at most {MAX_QPM:g})', 'absurd tempo')
  if not seq.notes:
    raise MidiError(name, 'no notes', 'no notes')
  zero_length = []
  max_end = 0.0
  for i, note in enumerate(seq.notes):
    if not 0 <= note.pitch <= 127:
      raise MidiError(name, f'{_note_str(i, note)}: pitch outside 0..127', 'pitch out of range')
    if not 0 <= note.velocity <= 127:
      raise MidiError(name, f'{_note_str(i, note)}: velocity {note.velocity} outside 0..127',
                      'velocity out of range')
    if not (math.isfinite(note.start_time) and math.isfinite(note.end_time)):
      raise MidiError(name, f'{_note_str(i, note)}: time is not finite', 'bad time')
    if note.start_time < 0:
      raise MidiError(name, f'{_note_str(i, note)}: starts before 0 s', 'negative time')
    if note.end_time < note.start_time:
      raise MidiError(name, f'{_note_str(i, note)}: ends before it starts',
                      'note ends before start')
    if note.end_time == note.start_time:
      zero_length.append(i)
    max_end = max(max_end, note.end_time)
  if max_end > max_seconds:
    raise MidiError(name, f'absurd length: notes last until {max_end / 3600:.2f} h, more than the '
                    f'{max_seconds / 3600:.2f} h limit', 'too long')
  if len(zero_length) == len(seq.notes):
    raise MidiError(name, f'no notes (all {len(seq.notes)} notes have zero length)', 'no notes')
  if not zero_length:
    return seq
  out = _libs().music_pb2.NoteSequence()
  out.CopyFrom(seq)
  drop = set(zero_length)
  kept = [note for i, note in enumerate(seq.notes) if i not in drop]
  del out.notes[:]
  out.notes.extend(kept)
  out.total_time = max(note.end_time for note in kept)
  return out


def pitched_notes(seq: NoteSequence, name: str) -> list:
  """The notes of `seq` that are not drums; MidiError naming `name` when there are none, saying
  how many drum notes there were ("no pitched notes (64 drum notes)")."""
  notes = [note for note in seq.notes if not note.is_drum]
  if not notes:
    drums = len(seq.notes)
    detail = f' ({drums} drum note{"s" if drums != 1 else ""})' if drums else ''
    raise MidiError(name, f'no pitched notes{detail}', 'no pitched notes')
  return notes


def _check_writable(seq: NoteSequence, path: str) -> None:
  for i, note in enumerate(seq.notes):
    if not 0 <= note.pitch <= 127:
      raise MidiError(path, f'cannot write {_note_str(i, note)}: pitch outside 0..127',
                      'cannot write')
    # Velocity 0 is a note-off in MIDI: the note would silently vanish from the file.
    if not 1 <= note.velocity <= 127:
      raise MidiError(path, f'cannot write {_note_str(i, note)}: velocity {note.velocity} outside '
                      '1..127 (set NoteSequence note velocities)', 'cannot write')
    if not 0 <= note.start_time <= note.end_time:
      raise MidiError(path, f'cannot write {_note_str(i, note)}: bad times', 'cannot write')
  for tempo in seq.tempos:
    if not 0 < tempo.qpm <= MAX_QPM:
      raise MidiError(path, f'cannot write a tempo of {tempo.qpm:g} qpm', 'cannot write')


def write_midi(seq: NoteSequence, path: str) -> None:
  """Writes `seq` as a MIDI file atomically (temp file in the same folder, then os.replace)."""
  _check_writable(seq, path)
  try:
    pm = _libs().note_seq.note_sequence_to_pretty_midi(seq)
    files.atomic_write(path, pm.write)
  except OSError as e:
    raise MidiError(path, f'cannot write MIDI file ({e.strerror or e})', 'cannot write') from None
  except (ValueError, IndexError) as e:
    raise MidiError(path, f'cannot write MIDI file ({e})', 'cannot write') from None


_FIRST_SECTION_HINT = ('use the part before the first change (--first_section on the command line, '
                       'common.midi.first_section in code)')


def first_section(seq: NoteSequence) -> NoteSequence:
  """The part of `seq` before its first tempo or time-signature change (all of it when nothing
  changes), with its notes cut off at the change; MidiError when that part holds no notes."""
  sequences_lib = _libs().sequences_lib
  sections = sequences_lib.split_note_sequence_on_time_changes(seq, skip_splits_inside_notes=False)
  first = sections[0] if sections else seq
  first.filename = seq.filename
  if not first.notes:
    name = seq.filename or seq.id or 'NoteSequence'
    raise MidiError(name, 'no notes before the first tempo or time-signature change', 'no notes')
  return first


def quantize(seq: NoteSequence, steps_per_quarter: int) -> NoteSequence:
  """Quantizes `seq` relative to its tempo (note_seq.quantize_note_sequence).

  note_seq needs one tempo and one time signature for the whole sequence; a sequence that changes
  either raises MidiError (first_section() keeps the part before the first change).
  """
  if steps_per_quarter < 1:
    raise ValueError(f'steps_per_quarter must be >= 1, got {steps_per_quarter}')
  name = seq.filename or seq.id or 'NoteSequence'
  sequences_lib = _libs().sequences_lib
  try:
    return sequences_lib.quantize_note_sequence(seq, steps_per_quarter)
  except sequences_lib.MultipleTempoError as e:
    reason = f'cannot quantize: tempo changes ({e}); {_FIRST_SECTION_HINT}'
  except sequences_lib.MultipleTimeSignatureError as e:
    reason = f'cannot quantize: time signature changes ({e}); {_FIRST_SECTION_HINT}'

  except sequences_lib.BadTimeSignatureError as e:
    reason = f'cannot quantize: bad time signature ({e})'
  except sequences_lib.NegativeTimeError as e:
    reason = f'cannot quantize: negative time ({e})'
  raise MidiError(name, reason, 'cannot quantize')
