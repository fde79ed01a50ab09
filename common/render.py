"""Render NoteSequences for people: a piano-roll PNG and a WAV file.

WAV rendering uses the `fluidsynth` program with a General MIDI soundfont when both are installed
(Debian: `apt install fluidsynth fluid-soundfont-gm`, or point $MUSICGEN_SOUNDFONT at an .sf2), and
otherwise a small additive synthesizer in numpy, so that a WAV can always be made.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import wave

from absl import logging
import numpy as np

from common import files
from common import midi
from common.errors import UserError


SOUNDFONT_ENV = 'MUSICGEN_SOUNDFONT'
# 'builtin' or 'fluidsynth' forces a synthesizer; unset or 'auto' prefers fluidsynth.
SYNTH_ENV = 'MUSICGEN_SYNTH'
SOUNDFONT_PATHS = (
    '/usr/share/sounds/sf2/FluidR3_GM.sf2',  # Debian/Ubuntu fluid-soundfont-gm
    '/usr/share/soundfonts/FluidR3_GM.sf2',  # Arch, Fedora
    '/usr/share/sounds/sf2/default-GM.sf2',
)
# The built-in synth lets every note ring this long after its end; the WAV lasts
# total_time + RELEASE_SECONDS.
RELEASE_SECONDS = 0.25
_PEAK = 0.9  # normalise to this, leaving headroom below full scale
_FLUIDSYNTH_TIMEOUT_SECONDS = 600

_NOTE_NAMES = ('C', 'C#', 'D', 'D#', 'E', 'F', 'F#', 'G', 'G#', 'A', 'A#', 'B')


def note_name(pitch: int) -> str:
  """MIDI pitch -> scientific pitch name (60 -> 'C4')."""
  return f'{_NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}'


# ----------------------------------------------------------------------------- piano roll


def _note_times(seq: midi.NoteSequence) -> tuple[np.ndarray, np.ndarray, str]:
  """(starts, ends, unit) per note: beats for quantized sequences, else seconds."""
  notes = seq.notes
  quantized = midi.sequences_lib.is_quantized_sequence(seq)
  if quantized and seq.quantization_info.steps_per_quarter > 0:
    steps_per_quarter = seq.quantization_info.steps_per_quarter
    starts = np.array([n.quantized_start_step for n in notes], float) / steps_per_quarter
    ends = np.array([n.quantized_end_step for n in notes], float) / steps_per_quarter
    return starts, ends, 'beats'
  starts = np.array([n.start_time for n in notes], float)
  ends = np.array([n.end_time for n in notes], float)
  return starts, ends, 'seconds'


def _voice_label(seq: midi.NoteSequence, instrument: int, program: int, is_drum: bool) -> str:
  names = {info.instrument: info.name for info in seq.instrument_infos if info.name}
  if instrument in names:
    return names[instrument]
  return f'drums (inst {instrument})' if is_drum else f'inst {instrument}, program {program}'


def piano_roll_png(seq: midi.NoteSequence, path: str, title: str | None = None) -> None:
  """Draws `seq` as a piano roll: one colour per voice, drums as crosses; written atomically."""
  # Figure + the Agg canvas directly: no pyplot global state and no display needed.
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.collections import PolyCollection  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  starts, ends, unit = _note_times(seq)
  pitches = np.array([n.pitch for n in seq.notes], int)
  velocities = np.array([n.velocity for n in seq.notes], float)
  voice_keys = [(n.instrument, n.program, n.is_drum) for n in seq.notes]
  voices = sorted(set(voice_keys), key=lambda k: (k[2], k[0], k[1]))
  duration = float(ends.max()) if len(ends) else 0.0

  width = float(np.clip(3 + 0.25 * duration, 6, 30))
  pitch_lo, pitch_hi = (int(pitches.min()), int(pitches.max())) if len(pitches) else (60, 72)
  height = float(np.clip(2 + 0.08 * (pitch_hi - pitch_lo), 3, 10))
  fig = Figure(figsize=(width, height), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  palette = colormaps['tab10']
  voice_index = {key: i for i, key in enumerate(voices)}
  note_voice = np.array([voice_index[k] for k in voice_keys], int)

  for i, (instrument, program, is_drum) in enumerate(voices):
    idx = np.flatnonzero(note_voice == i)
    color = palette(i % 10)
    label = _voice_label(seq, instrument, program, is_drum)
    if is_drum:
      # Drum notes have no meaningful length: mark the onsets.
      ax.scatter(starts[idx], pitches[idx], marker='x', s=18, color=color, linewidths=1.0,
                 label=label, zorder=3)
      continue
    s, e, p = starts[idx], np.maximum(ends[idx], starts[idx] + 1e-3), pitches[idx]
    verts = np.stack([np.stack([s, p - 0.4], -1), np.stack([e, p - 0.4], -1),
                      np.stack([e, p + 0.4], -1), np.stack([s, p + 0.4], -1)], axis=1)
    facecolors = np.tile(np.array(color), (len(idx), 1))
    facecolors[:, 3] = 0.35 + 0.65 * velocities[idx] / 127.0  # louder notes more opaque
    ax.add_collection(PolyCollection(verts, facecolors=facecolors, edgecolors=[color],
                                     linewidths=0.5, label=label))

  ax.set_xlim(0, max(duration, 1e-3) * 1.01)
  ax.set_ylim(pitch_lo - 1.5, pitch_hi + 1.5)
  visible = range(pitch_lo - 1, pitch_hi + 2)
  # Name every semitone in a narrow range, otherwise only the Cs; shade the black keys.
  ticks = [p for p in visible if pitch_hi - pitch_lo <= 24 or p % 12 == 0]
  ax.set_yticks(ticks, [note_name(p) for p in ticks])
  ax.set_yticks(list(visible), minor=True)
  for p in visible:
    if _NOTE_NAMES[p % 12].endswith('#'):
      ax.axhspan(p - 0.5, p + 0.5, color='0.94', linewidth=0, zorder=0)
  ax.set_axisbelow(True)
  ax.set_xlabel(f'time ({unit})')
  ax.set_ylabel('pitch')
  if not len(pitches):
    ax.text(0.5, 0.5, '(no notes)', transform=ax.transAxes, ha='center', va='center')
  if len(voices) > 1 or any(is_drum for _, _, is_drum in voices):
    ax.legend(loc='upper left', bbox_to_anchor=(1.01, 1.0), fontsize='small', frameon=False)
  if title:
    ax.set_title(title)
  fig.tight_layout()
  with files.atomic_path(path) as tmp_path:
    fig.savefig(tmp_path, format='png')


# ----------------------------------------------------------------------------- WAV


def find_fluidsynth() -> tuple[str, str] | None:
  """(fluidsynth executable, GM soundfont) when both are installed, else None."""
  executable = shutil.which('fluidsynth')
  if executable is None:
    return None
  candidates = [os.environ[SOUNDFONT_ENV]] if os.environ.get(SOUNDFONT_ENV) else []
  for soundfont in candidates + list(SOUNDFONT_PATHS):
    if os.path.isfile(soundfont):
      return executable, soundfont
  return None


def render_wav(seq: midi.NoteSequence, path: str, sample_rate: int = 22050, *,
               synth: str | None = None) -> str:
  """Writes `seq` as a WAV file; returns the synthesizer used, 'fluidsynth' or 'builtin'.

  Args:
    seq: the music.
    path: the WAV file to write (atomically).
    sample_rate: in Hz.
    synth: 'auto' (fluidsynth when installed, else builtin), 'fluidsynth' (fail if missing) or
      'builtin'; default: $MUSICGEN_SYNTH, else 'auto'.
  """
  synth = synth or os.environ.get(SYNTH_ENV) or 'auto'
  if synth not in ('auto', 'fluidsynth', 'builtin'):
    raise UserError(f"render_wav: synth must be 'auto', 'fluidsynth' or 'builtin', got {synth!r}.")
  if sample_rate < 1000:
    raise UserError(f'render_wav: sample rate {sample_rate} Hz is too low.')
  if synth != 'builtin':
    found = find_fluidsynth()
    if found is None and synth == 'fluidsynth':
      raise UserError(f'render_wav: fluidsynth needs the `fluidsynth` program and a GM soundfont '
                      f'(${SOUNDFONT_ENV} or one of {", ".join(SOUNDFONT_PATHS)}).')
    # An empty sequence is a silent WAV either way; fluidsynth may refuse an empty MIDI file.
    if found is not None and seq.notes:
      try:
        _render_with_fluidsynth(seq, path, sample_rate, *found)
        logging.info('render_wav: %s rendered with fluidsynth (%s).', path, found[1])
        return 'fluidsynth'
      except (OSError, subprocess.SubprocessError) as e:
        if synth == 'fluidsynth':
          raise UserError(f'render_wav: fluidsynth failed for {path}: {e}') from e
        logging.warning('render_wav: fluidsynth failed (%s); using the built-in synth.', e)
  audio = synthesize(seq, sample_rate)
  write_wav(audio, path, sample_rate)
  logging.info('render_wav: %s rendered with the built-in synth.', path)
  return 'builtin'


def _render_with_fluidsynth(seq: midi.NoteSequence, path: str, sample_rate: int, executable: str,
                            soundfont: str) -> None:
  with tempfile.TemporaryDirectory() as tmp_dir, files.atomic_path(path) as tmp_wav:
    midi_path = os.path.join(tmp_dir, 'in.mid')
    midi.note_seq.sequence_proto_to_midi_file(seq, midi_path)
    # -n: no MIDI input, -i: no shell, -F: render as fast as possible into a file.
    command = [executable, '-ni', '-F', tmp_wav, '-T', 'wav', '-r', str(sample_rate),
               soundfont, midi_path]
    result = subprocess.run(command, capture_output=True, text=True, check=False,
                            timeout=_FLUIDSYNTH_TIMEOUT_SECONDS)
    if result.returncode != 0 or os.path.getsize(tmp_wav) == 0:
      message = (result.stderr or result.stdout).strip().splitlines()[-1:] or ['no output']
      raise subprocess.SubprocessError(f'exit status {result.returncode}: {message[0]}')


def write_wav(audio: np.ndarray, path: str, sample_rate: int) -> None:
  """Writes mono float audio in [-1, 1] as 16-bit PCM, atomically."""
  pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767).astype('<i2')
  with files.atomic_path(path) as tmp_path:
    with wave.open(tmp_path, 'wb') as f:
      f.setnchannels(1)
      f.setsampwidth(2)
      f.setframerate(sample_rate)
      f.writeframes(pcm.tobytes())


def _with_sustain(seq: midi.NoteSequence) -> midi.NoteSequence:
  """Lengthens notes held by the sustain pedal (performance MIDI sounds dry without it)."""
  has_pedal = any(cc.control_number == 64 for cc in seq.control_changes)
  if not has_pedal or midi.sequences_lib.is_quantized_sequence(seq):
    return seq
  try:
    return midi.sequences_lib.apply_sustain_control_changes(seq)
  except Exception as e:  # pylint: disable=broad-except
    # Odd pedal data is not worth losing the audio over.
    logging.warning('render_wav: ignoring the sustain pedal (%s).', e)
    return seq


def synthesize(seq: midi.NoteSequence, sample_rate: int = 22050) -> np.ndarray:
  """Built-in synth: float32 mono audio lasting total_time + RELEASE_SECONDS, peak <= 0.9."""
  seq = _with_sustain(seq)
  out = np.zeros(num_samples_for(seq, sample_rate), np.float64)
  release_len = int(round(RELEASE_SECONDS * sample_rate))

  pitched = [n for n in seq.notes if not n.is_drum]
  # One waveform per pitch, as long as its longest note: the harmonics are computed once.
  longest = {}
  for n in pitched:
    length = _note_len(n, sample_rate) + release_len
    longest[n.pitch] = max(longest.get(n.pitch, 0), length)
  waves = {pitch: _tone(pitch, length, sample_rate) for pitch, length in longest.items()}

  held = _held_envelope(max([_note_len(n, sample_rate) for n in pitched], default=1), sample_rate)
  release = np.linspace(1.0, 0.0, release_len, endpoint=False)
  for n in pitched:
    start = int(round(n.start_time * sample_rate))
    on_len = _note_len(n, sample_rate)
    tone = waves[n.pitch][:on_len + release_len] * _amplitude(n.velocity)
    _mix(out, start, tone[:on_len] * held[:on_len])
    _mix(out, start + on_len, tone[on_len:] * (held[on_len - 1] * release))
  for n in seq.notes:
    if n.is_drum:
      start = int(round(n.start_time * sample_rate))
      _mix(out, start, _drum(n.pitch, sample_rate) * _amplitude(n.velocity))

  peak = np.max(np.abs(out)) if len(out) else 0.0
  if peak > 0:
    out *= _PEAK / peak
  return out.astype(np.float32)


def _note_len(note, sample_rate: int) -> int:
  return max(int(round((note.end_time - note.start_time) * sample_rate)), 1)


def _amplitude(velocity: int) -> float:
  # Perceived loudness grows faster than linearly with MIDI velocity.
  return (max(velocity, 1) / 127.0) ** 1.5


def _mix(out: np.ndarray, start: int, signal: np.ndarray) -> None:
  """Adds `signal` into `out` at `start`, cut at the end of `out`."""
  start = max(start, 0)
  stop = min(start + len(signal), len(out))
  if stop > start:
    out[start:stop] += signal[:stop - start]


def _tone(pitch: int, length: int, sample_rate: int) -> np.ndarray:
  """A few harmonics with falling weights; none above 0.45 x the sample rate (no aliasing)."""
  freq = 440.0 * 2.0 ** ((pitch - 69) / 12.0)
  t = np.arange(length) / sample_rate
  tone = np.zeros(length)
  for harmonic, weight in ((1, 1.0), (2, 0.5), (3, 0.25), (4, 0.12), (5, 0.06)):
    if freq * harmonic < 0.45 * sample_rate:
      tone += weight * np.sin(2 * np.pi * freq * harmonic * t)
  return tone


def _held_envelope(length: int, sample_rate: int) -> np.ndarray:
  """Fast attack, then a decay towards a sustain level that itself fades slowly.

  Every note uses a prefix of this curve, then a linear release from where it stopped to 0.
  """
  t = np.arange(length) / sample_rate
  attack = np.minimum(t / 0.005, 1.0)
  decay = 0.55 + 0.45 * np.exp(-t / 0.12)
  return attack * decay * np.exp(-t / 4.0)


# GM percussion pitch -> (seconds, filter 'low' | 'band' | 'high', body tone Hz or 0).
_DRUM_KINDS = {
    **{p: (0.25, 'low', 55.0) for p in (35, 36)},  # kicks
    **{p: (0.18, 'band', 190.0) for p in (37, 38, 39, 40)},  # snares, rim, clap
    **{p: (0.06, 'high', 0.0) for p in (42, 44)},  # closed / pedal hi-hat
    **{p: (0.30, 'high', 0.0) for p in (46,)},  # open hi-hat
    **{p: (0.25, 'band', 80.0 + 10.0 * (p - 41)) for p in (41, 43, 45, 47, 48, 50)},  # toms
    **{p: (0.6, 'high', 0.0) for p in (49, 51, 52, 53, 55, 57, 59)},  # cymbals
}


@functools.lru_cache(maxsize=128)
def _drum(pitch: int, sample_rate: int) -> np.ndarray:
  """A short noise burst shaped by a cheap filter and an exponential decay (read-only)."""
  seconds, band, body_hz = _DRUM_KINDS.get(pitch, (0.1, 'band', 0.0))
  length = int(seconds * sample_rate)
  rng = np.random.default_rng(pitch)  # fixed: the same drum always sounds the same
  noise = rng.uniform(-1.0, 1.0, length)
  # Moving averages as cheap low-pass filters; differences of them give high and band passes.
  def lowpass(x, ms):
    width = max(int(ms * sample_rate / 1000), 1)
    return np.convolve(x, np.ones(width) / width, 'same')
  if band == 'low':
    shaped = lowpass(noise, 2.0)
  elif band == 'high':
    shaped = noise - lowpass(noise, 0.3)
  else:
    shaped = lowpass(noise, 0.3) - lowpass(noise, 2.0)
  shaped /= np.max(np.abs(shaped)) + 1e-12
  t = np.arange(length) / sample_rate
  burst = shaped * np.exp(-t / (seconds / 4))
  if body_hz:
    # A pitched body that drops a little in pitch, like a struck membrane.
    phase = 2 * np.pi * body_hz * (t - 0.5 * t**2 / max(seconds, 1e-3))
    burst = 0.6 * burst + np.sin(phase) * np.exp(-t / (seconds / 3))
  burst = burst / (np.max(np.abs(burst)) + 1e-12)
  burst.setflags(write=False)
  return burst


def wav_duration(path: str) -> float:
  """Seconds of audio in a WAV file (for logs and tests)."""
  with wave.open(path, 'rb') as f:
    return f.getnframes() / f.getframerate()


def num_samples_for(seq: midi.NoteSequence, sample_rate: int) -> int:
  """Samples the built-in synth writes: (total_time + RELEASE_SECONDS) x rate, at least 1."""
  end_time = max([seq.total_time] + [n.end_time for n in seq.notes])
  return max(int(round((end_time + RELEASE_SECONDS) * sample_rate)), 1)
