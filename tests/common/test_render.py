"""Tests for common/render.py: piano-roll PNGs and WAVs (built-in synth; fluidsynth faked)."""

import os
import stat
import sys
import wave

import note_seq
from note_seq import sequences_lib
import numpy as np
import pytest

from common import render
from common.errors import UserError

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _sequence(with_drums: bool = True) -> note_seq.NoteSequence:
  seq = note_seq.NoteSequence(ticks_per_quarter=220)
  seq.tempos.add(qpm=120)
  for i, pitch in enumerate([60, 64, 67, 72]):
    seq.notes.add(pitch=pitch, start_time=0.5 * i, end_time=0.5 * i + 0.75, velocity=90,
                  instrument=i % 2, program=0)
  if with_drums:
    for i, pitch in enumerate([36, 42, 38, 42]):
      seq.notes.add(pitch=pitch, start_time=0.5 * i, end_time=0.5 * i + 0.1, velocity=100,
                    instrument=9, is_drum=True)
  seq.total_time = max(n.end_time for n in seq.notes)
  return seq


def _read_wav(path):
  with wave.open(path, 'rb') as f:
    assert f.getnchannels() == 1 and f.getsampwidth() == 2
    frames = np.frombuffer(f.readframes(f.getnframes()), '<i2')
    return frames.astype(np.float64) / 32767, f.getframerate()


def _no_leftovers(directory):
  return [name for name in os.listdir(directory) if name.startswith('.tmp-')] == []


@pytest.mark.parametrize('quantized', [False, True])
def test_piano_roll_png_is_a_png(tmp_path, quantized):
  seq = _sequence()
  if quantized:
    seq = sequences_lib.quantize_note_sequence(seq, 4)
  path = tmp_path / 'sub' / 'roll.png'
  old_umask = os.umask(0o022)
  try:
    render.piano_roll_png(seq, str(path), title='four voices')
  finally:
    os.umask(old_umask)
  data = path.read_bytes()
  assert data.startswith(PNG_MAGIC) and len(data) > 1000
  assert _no_leftovers(path.parent)
  assert os.stat(path).st_mode & stat.S_IROTH  # the usual permissions, not a private temp file


def test_piano_roll_empty_sequence(tmp_path):
  path = tmp_path / 'empty.png'
  render.piano_roll_png(note_seq.NoteSequence(), str(path))
  assert path.read_bytes().startswith(PNG_MAGIC)


def test_piano_roll_failure_keeps_old_file(tmp_path, monkeypatch):
  path = tmp_path / 'roll.png'
  path.write_bytes(b'old')
  monkeypatch.setattr(render, '_voice_label', lambda *a: 1 / 0)
  with pytest.raises(ZeroDivisionError):
    render.piano_roll_png(_sequence(), str(path))
  assert path.read_bytes() == b'old'
  assert _no_leftovers(tmp_path)


def test_note_names():
  assert render.note_name(60) == 'C4'
  assert render.note_name(69) == 'A4'
  assert render.note_name(21) == 'A0'
  assert render.note_name(61) == 'C#4'


def test_builtin_wav_duration_rate_and_level(tmp_path):
  seq = _sequence()
  path = str(tmp_path / 'out.wav')
  assert render.render_wav(seq, path, sample_rate=16000, synth='builtin') == 'builtin'
  audio, rate = _read_wav(path)
  assert rate == 16000
  expected = (seq.total_time + render.RELEASE_SECONDS) * 16000
  assert abs(len(audio) - expected) <= 1
  assert np.max(np.abs(audio)) <= 1.0
  assert np.max(np.abs(audio)) > 0.5  # normalised, not silent
  assert np.sqrt(np.mean(audio[:8000] ** 2)) > 0.05  # sound where the notes are
  assert np.abs(audio[-5:]).max() < 0.01  # released to silence at the end
  assert _no_leftovers(tmp_path)


def test_builtin_wav_forced_by_env_and_pitch_is_right(tmp_path, monkeypatch):
  monkeypatch.setenv(render.SYNTH_ENV, 'builtin')
  seq = note_seq.NoteSequence()
  seq.notes.add(pitch=69, start_time=0.0, end_time=1.0, velocity=100)
  seq.total_time = 1.0
  path = str(tmp_path / 'a440.wav')
  assert render.render_wav(seq, path) == 'builtin'
  audio, rate = _read_wav(path)
  assert rate == 22050
  spectrum = np.abs(np.fft.rfft(audio[:rate]))
  peak_hz = np.argmax(spectrum)  # a 1 s window: bin k is k Hz
  assert abs(peak_hz - 440) <= 2


def test_velocity_sets_loudness():
  seq = note_seq.NoteSequence()
  seq.notes.add(pitch=60, start_time=0.0, end_time=1.0, velocity=30)  # C4, 261.6 Hz
  seq.notes.add(pitch=66, start_time=0.0, end_time=1.0, velocity=120)  # F#4, 370.0 Hz
  seq.total_time = 1.0
  audio = render.synthesize(seq, 8000)
  spectrum = np.abs(np.fft.rfft(audio[:8000]))  # a 1 s window: bin k is k Hz
  level = lambda hz: spectrum[round(hz) - 2:round(hz) + 3].sum()
  assert level(370.0) > 3 * level(261.6) > 0


def test_drums_are_noise_bursts():
  seq = note_seq.NoteSequence()
  seq.notes.add(pitch=42, start_time=0.0, end_time=0.05, velocity=100, is_drum=True)
  seq.total_time = 0.05
  audio = render.synthesize(seq, 22050)
  assert np.max(np.abs(audio)) > 0.5
  # A closed hi-hat is bright: most energy above 2 kHz.
  spectrum = np.abs(np.fft.rfft(audio)) ** 2
  freqs = np.fft.rfftfreq(len(audio), 1 / 22050)
  assert spectrum[freqs > 2000].sum() > spectrum[freqs <= 2000].sum()


def test_empty_sequence_gives_short_silent_wav(tmp_path):
  path = str(tmp_path / 'empty.wav')
  assert render.render_wav(note_seq.NoteSequence(), path, synth='builtin') == 'builtin'
  audio, rate = _read_wav(path)
  assert 0 < len(audio) <= rate
  assert not audio.any()


def test_bad_synth_name(tmp_path):
  with pytest.raises(UserError, match='synth'):
    render.render_wav(_sequence(), str(tmp_path / 'x.wav'), synth='timidity')


def _fake_fluidsynth(tmp_path, exit_code=0):
  """An executable named fluidsynth that logs its arguments and writes a tiny WAV to -F."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  script = bin_dir / 'fluidsynth'
  script.write_text(f'''#!{sys.executable}
import sys, wave
args = sys.argv[1:]
open({str(tmp_path / 'args.txt')!r}, 'w').write('\\n'.join(args))
if {exit_code}:
  print('fluidsynth: error: broken soundfont', file=sys.stderr)
  sys.exit({exit_code})
out, rate = args[args.index('-F') + 1], int(args[args.index('-r') + 1])
with wave.open(out, 'wb') as f:
  f.setnchannels(2); f.setsampwidth(2); f.setframerate(rate); f.writeframes(b'\\0\\0' * 2 * rate)
''')
  script.chmod(0o755)
  soundfont = tmp_path / 'gm.sf2'
  soundfont.write_bytes(b'RIFF')
  return bin_dir, soundfont


def test_fluidsynth_command_line(tmp_path, monkeypatch):
  bin_dir, soundfont = _fake_fluidsynth(tmp_path)
  monkeypatch.setenv('PATH', str(bin_dir))
  monkeypatch.setenv(render.SOUNDFONT_ENV, str(soundfont))
  monkeypatch.delenv(render.SYNTH_ENV, raising=False)
  path = str(tmp_path / 'out.wav')
  assert render.render_wav(_sequence(), path, sample_rate=16000) == 'fluidsynth'
  args = (tmp_path / 'args.txt').read_text().split('\n')
  assert args[0] == '-ni'
  assert args[args.index('-r') + 1] == '16000'
  assert args[-2] == str(soundfont) and args[-1].endswith('.mid')
  with wave.open(path, 'rb') as f:
    assert f.getframerate() == 16000
  assert _no_leftovers(tmp_path)
  # The built-in synth can still be forced.
  assert render.render_wav(_sequence(), path, synth='builtin') == 'builtin'


def test_fluidsynth_failure_falls_back_or_raises(tmp_path, monkeypatch):
  bin_dir, soundfont = _fake_fluidsynth(tmp_path, exit_code=3)
  monkeypatch.setenv('PATH', str(bin_dir))
  monkeypatch.setenv(render.SOUNDFONT_ENV, str(soundfont))
  path = str(tmp_path / 'out.wav')
  assert render.render_wav(_sequence(), path) == 'builtin'
  assert _read_wav(path)[0].any()
  with pytest.raises(UserError, match='broken soundfont'):
    render.render_wav(_sequence(), path, synth='fluidsynth')
  assert _no_leftovers(tmp_path)


def test_fluidsynth_required_but_missing(tmp_path, monkeypatch):
  monkeypatch.setenv('PATH', str(tmp_path))
  assert render.find_fluidsynth() is None
  with pytest.raises(UserError, match='soundfont'):
    render.render_wav(_sequence(), str(tmp_path / 'x.wav'), synth='fluidsynth')


def test_builtin_synth_applies_sustain_pedal():
  seq = note_seq.NoteSequence()
  seq.notes.add(pitch=60, start_time=0.0, end_time=0.2, velocity=80)
  seq.total_time = 1.0
  dry = render.synthesize(seq, 8000)
  seq.control_changes.add(time=0.0, control_number=64, control_value=127)
  seq.control_changes.add(time=1.0, control_number=64, control_value=0)
  wet = render.synthesize(seq, 8000)
  assert len(dry) == len(wet) == round(1.25 * 8000)
  assert np.abs(dry[6000:7000]).max() < 1e-6  # released after 0.2 + 0.25 s
  assert np.abs(wet[6000:7000]).max() > 0.1  # held by the pedal until 1.0 s
