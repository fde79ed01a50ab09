"""Hostile MIDI: corrupt, empty, absurd and huge files through every reader and every command that
takes MIDI. Each ends in music or in one clear error that names the file: never a traceback, never
a hang.

The files are made here (nothing is shipped): HOSTILE below, written raw (MIDI bytes by hand, so
that tempo 0 and zero-length notes can be expressed at all). The default run sends every file
through the reader and each model's encoding in-process, builds a midi_dir data set from the whole
folder, uploads every file to the studio, fuzzes the reader with hypothesis, and runs a few true
subprocesses. The whole command-line matrix (5 commands x the files) is @pytest.mark.slow
(`make test-slow`, about 5 minutes on 2 cores).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

from hypothesis import HealthCheck, given, settings, strategies as st
import numpy as np
import pytest

from common import datasets
from common import midi
from common.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ODE_TO_JOY = os.path.join(REPO, 'assets', 'ode_to_joy.mid')
TWINKLE = os.path.join(REPO, 'assets', 'twinkle.mid')
PRETRAINED = os.path.join(REPO, 'pretrained')

# ------------------------------------------------------------------------------------------------
# The hostile files, written as raw Standard MIDI File bytes.

TPQ = 480
MELODY = [67, 67, 69, 71, 72, 71, 69, 67]  # 2 bars of quarter notes, in every model's range
# 200k notes of one tick each. Writing is instant (numpy bytes); reading is what costs: mido parses
# ~100k notes a second here, so 200k take ~3.5 s to read and ~10 s through the reader and all four
# encodings, while a million would take ~18 s to read alone (~50 s in all), too slow for a test.
MANY_NOTES = 200_000
# Wall-clock budget for one file through the reader and all four encodings (in-process).
READ_AND_ENCODE_SECONDS = 30.0


def _vlq(n: int) -> bytes:
  """MIDI variable-length quantity."""
  out = [n & 0x7F]
  n >>= 7
  while n:
    out.append(0x80 | (n & 0x7F))
    n >>= 7
  return bytes(reversed(out))


def _track(events: bytes) -> bytes:
  events += b'\x00\xff\x2f\x00'  # end of track
  return b'MTrk' + struct.pack('>I', len(events)) + events


def _smf(tracks: list[bytes], fmt: int = 1, tpq: int = TPQ) -> bytes:
  return b'MThd' + struct.pack('>IHHH', 6, fmt, len(tracks), tpq) + b''.join(tracks)


def _tempo(microseconds_per_quarter: int) -> bytes:
  return b'\x00\xff\x51\x03' + microseconds_per_quarter.to_bytes(3, 'big')


def _notes(pitches, length: int = TPQ, channel: int = 0) -> bytes:
  """One note after the other, each `length` ticks (0: note-on and note-off at the same tick)."""
  return b''.join(b'\x00' + bytes([0x90 | channel, p, 80]) + _vlq(length) +
                  bytes([0x80 | channel, p, 0]) for p in pitches)


def _many_notes(n: int) -> bytes:
  # Records of (delta 0, pitch, velocity 80, delta 1, pitch, velocity 0) under running status 0x90
  # (a note-on with velocity 0 is a note-off): one tick per note.
  rec = np.zeros((n, 6), np.uint8)
  rec[:, 1] = rec[:, 4] = 60 + np.arange(n) % 12
  rec[:, 2], rec[:, 3] = 80, 1
  return _smf([_track(b'\x00\x90' + rec.tobytes()[1:])], fmt=0)


def _random_bytes(size: int, seed: int) -> bytes:
  return np.random.default_rng(seed).integers(0, 256, size, np.uint8).tobytes()


def _truncated() -> bytes:
  with open(ODE_TO_JOY, 'rb') as f:
    good = f.read()
  return good[:len(good) // 2]


@dataclasses.dataclass(frozen=True)
class Hostile:
  """A hostile file and what each layer must make of it.

  read: None if common.midi reads it, else the MidiError kind. The model columns (only for files
  that read) are None for success, else a piece of the UserError message.
  """
  make: object  # () -> bytes
  read: str | None = None
  coconet: str | None = None
  musicvae: str | None = None
  pianonet: str | None = None
  cpword: str | None = None


NO_SLICE = 'no 2-bar melody slice'
NO_KEYS = 'no notes inside the key window'
PROMPT_TOO_LONG = 'the prompt is'

HOSTILE = {
    'random_bytes.mid': Hostile(lambda: _random_bytes(4096, 0), read='not a MIDI file'),
    'truncated.mid': Hostile(_truncated, read='truncated'),
    'empty.mid': Hostile(lambda: b'', read='empty file'),
    'zero_length_notes.mid': Hostile(lambda: _smf([_track(_tempo(500_000) +
                                                          _notes(MELODY, length=0))]),
                                     read='no notes'),
    'tempo_zero.mid': Hostile(lambda: _smf([_track(_tempo(0) + _notes(MELODY))]),
                              read='absurd tempo'),
    # 2^24 - 1 microseconds per quarter: 3.6 qpm, slow but legal; 8 quarters last 2.2 minutes.
    'tempo_slowest.mid': Hostile(lambda: _smf([_track(_tempo(2**24 - 1) + _notes(MELODY))])),
    'many_notes.mid': Hostile(lambda: _many_notes(MANY_NOTES), cpword=PROMPT_TOO_LONG),
    'drums_only.mid': Hostile(lambda: _smf([_track(_tempo(500_000) +
                                                   _notes([36, 38, 42, 46] * 8, channel=9))]),
                              coconet='no pitched notes (32 drum notes)', musicvae=NO_SLICE,
                              pianonet='no pitched notes (32 drum notes)'),
    'tracks_300.mid': Hostile(lambda: _smf([_track(_tempo(500_000))] +
                                           [_track(_notes([60 + i % 12])) for i in range(299)]),
                              musicvae=NO_SLICE, cpword=PROMPT_TOO_LONG),
    'no_notes.mid': Hostile(lambda: _smf([_track(_tempo(500_000) + b'\x00\xff\x03\x05hello')]),
                            read='no notes'),
    'garbage.musicxml': Hostile(lambda: (b'<?xml version="1.0"?>\n<score-partwise><part id="P1">'
                                         b'<measure>' + _random_bytes(512, 1)),
                                read='corrupt MusicXML'),
    'garbage.mxl': Hostile(lambda: _random_bytes(2048, 2), read='corrupt MusicXML'),
    'header_only.mid': Hostile(lambda: _smf([]), read='no notes'),
    # A delta time of 2^28 - 1 ticks: pretty_midi's tick table would be gigabytes.
    'huge_delta.mid': Hostile(lambda: _smf([_track(_notes([60]) + _vlq(2**28 - 1) +
                                                   b'\x90\x40\x50\x00\x80\x40\x00')]),
                              read='too long'),
    # Two notes 5.5 hours apart: legal, but 158k 16th steps. Coconet used to run out of time and
    # memory on it (now: at most coconet.sample.MAX_INPUT_STEPS).
    'long_gap.mid': Hostile(lambda: _smf([_track(_tempo(500_000) + _notes([67]) +
                                                 _vlq(int(5.5 * 3600 * 2 * TPQ)) +
                                                 b'\x90\x43\x50' + _vlq(TPQ) + b'\x80\x43\x00')]),
                            coconet='Coconet takes at most', musicvae=NO_SLICE,
                            cpword=PROMPT_TOO_LONG),
    'low_pitches.mid': Hostile(lambda: _smf([_track(_tempo(500_000) + _notes(range(8)))]),
                               coconet='outside the soprano range', musicvae=NO_SLICE,
                               pianonet=NO_KEYS),
}
NAMES = sorted(HOSTILE)
MIDI_NAMES = [n for n in NAMES if n.endswith('.mid')]


@pytest.fixture(scope='session')
def hostile_dir(tmp_path_factory):
  """A folder holding every HOSTILE file (and nothing else)."""
  folder = tmp_path_factory.mktemp('hostile')
  for name, spec in HOSTILE.items():
    (folder / name).write_bytes(spec.make())
  return folder


# ------------------------------------------------------------------------------------------------
# The reader and each model's encoding, in-process: exactly what the commands do after reading.


@pytest.fixture(scope='module')
def encoders():
  """{model: encode(seq, name)}: the steps each command takes between reading and sampling."""
  from coconet import data as coconet_data  # pylint: disable=g-import-not-at-top
  from coconet import sample as coconet_sample  # pylint: disable=g-import-not-at-top
  from common import training  # pylint: disable=g-import-not-at-top
  from cpword import sample as cpword_sample  # pylint: disable=g-import-not-at-top
  from musicvae import sample as musicvae_sample  # pylint: disable=g-import-not-at-top
  from musicvae import data as musicvae_data  # pylint: disable=g-import-not-at-top
  from pianonet import data as pianonet_data  # pylint: disable=g-import-not-at-top
  from pianonet import generate as pianonet_generate  # pylint: disable=g-import-not-at-top
  configs = {name: training.read_config(os.path.join(PRETRAINED, workdir)) for name, workdir in
             [('musicvae', 'mel_2bar_small'), ('pianonet', 'pianonet_small'),
              ('cpword', 'cpword_small')]}
  musicvae_enc = musicvae_data.encoding_from_config(configs['musicvae'])
  pianonet_enc = pianonet_data.encoding_from_config(configs['pianonet'])

  def coconet(seq, name):  # coconet.sample.generate_pieces, task harmonize
    soprano = coconet_data.soprano_from_melody(seq, name=name)
    coconet_sample.check_length(len(soprano), name)

  def musicvae(seq, name):  # musicvae.sample.generate_pieces, reconstruct / interpolate
    musicvae_sample.sequences_to_tokens([seq], musicvae_enc, [name])

  def pianonet(seq, name):  # pianonet.generate.generate_pieces (receptive field: any)
    pianonet_generate.seed_from_notes(seq, pianonet_enc, 4096, 8.0, name=name)

  def cpword(seq, name):  # cpword.sample.generate_pieces with --length=64
    start = cpword_sample.start_tokens(configs['cpword'], prompt=seq)
    cpword_sample.check_prompt(start, configs['cpword'], 64, name)

  return dict(coconet=coconet, musicvae=musicvae, pianonet=pianonet, cpword=cpword)


@pytest.mark.parametrize('name', NAMES)
def test_reader_and_every_encoding_give_music_or_one_clear_error(hostile_dir, encoders, name):
  spec, path = HOSTILE[name], str(hostile_dir / name)
  start = time.monotonic()
  try:
    seq = midi.read_music(path)
  except midi.MidiError as e:
    assert time.monotonic() - start < READ_AND_ENCODE_SECONDS
    assert spec.read == e.kind, f'{name}: {e}'
    assert str(e).startswith(f'{path}: ') and '\n' not in str(e)
    return
  assert spec.read is None, f'{name} was read ({len(seq.notes)} notes), expected {spec.read!r}'
  assert seq.notes
  outcomes = {}
  for model, encode in encoders.items():
    try:
      encode(seq, path)
      outcomes[model] = None
    except UserError as e:
      assert path in str(e), e
      outcomes[model] = str(e)
  assert time.monotonic() - start < READ_AND_ENCODE_SECONDS
  for model, outcome in outcomes.items():
    expected = getattr(spec, model)
    if expected is None:
      assert outcome is None, f'{model}: {outcome}'
    else:
      assert outcome is not None and expected in outcome, f'{model}: {outcome}'


# ------------------------------------------------------------------------------------------------
# The data set layer: a folder with broken files still builds; the broken ones are named.


def test_midi_dir_of_hostile_files_builds_and_names_each_skip(hostile_dir, tmp_path, caplog):
  caplog.set_level(logging.INFO, logger='absl')
  folder = tmp_path / 'songs'
  shutil.copytree(hostile_dir, folder)
  shutil.copy(ODE_TO_JOY, folder / 'valid.mid')
  ds = datasets.get_dataset('midi_dir', str(folder), 'all', cache_dir=str(tmp_path / 'cache'),
                            num_workers=2)
  readable = sorted(n for n in MIDI_NAMES if HOSTILE[n].read is None)
  broken = sorted(n for n in MIDI_NAMES if HOSTILE[n].read is not None)
  assert ds.ids == sorted(readable + ['valid.mid'])
  assert all(seq.notes for seq in ds.examples)
  skipped = dict(ds.skipped)
  assert sorted(skipped) == broken  # MusicXML files are not part of a MIDI folder at all
  assert all(reason and '\n' not in reason for reason in skipped.values())
  assert skipped['empty.mid'] == 'empty file (0 bytes)'
  assert skipped['tempo_zero.mid'].startswith('absurd tempo')
  summary = [r.getMessage() for r in caplog.records if f'{folder}:' in r.getMessage()]
  assert len(summary) == 1
  assert f'{len(readable) + 1} read, {len(broken)} skipped (' in summary[0]


# ------------------------------------------------------------------------------------------------
# The studio's upload: 4xx with a JSON message, or 200; never a 500.


@pytest.fixture(scope='module')
def studio_client():
  pytest.importorskip('flask')
  from studio import app as app_lib  # pylint: disable=g-import-not-at-top
  from studio import engine  # pylint: disable=g-import-not-at-top
  models = engine.load_models(None, engine.DEFAULT_COCONET_WORKDIR, coconet_required=True)
  return app_lib.create_app(models, seed=0).test_client()


@pytest.mark.parametrize('name', NAMES)
def test_studio_upload_answers_4xx_with_a_message_or_200(hostile_dir, studio_client, name):
  data = (hostile_dir / name).read_bytes()
  start = time.monotonic()
  response = studio_client.post('/api/harmonize/upload', content_type='multipart/form-data',
                                data=dict(file=(io.BytesIO(data), name), gibbs_steps='8'))
  assert time.monotonic() - start < 60
  assert response.is_json, response.data[:200]
  if response.status_code == 200:
    assert response.json['voices']
    return
  assert 400 <= response.status_code < 500, response.json
  message = response.json['error']
  assert message and '\n' not in message
  if response.status_code == 400:
    assert message.startswith(f'{name}: '), message


# ------------------------------------------------------------------------------------------------
# Fuzz: random and mutated bytes give a NoteSequence or a MidiError, nothing else.


@pytest.fixture(scope='module')
def fuzz_dir():
  with tempfile.TemporaryDirectory() as folder:
    yield folder


def _read_fuzzed(folder: str, data: bytes) -> None:
  path = os.path.join(folder, 'fuzzed.mid')
  with open(path, 'wb') as f:
    f.write(data)
  try:
    seq = midi.read_music(path)
  except midi.MidiError as e:
    assert str(e).startswith(f'{path}: ') and e.kind
    return
  assert isinstance(seq, midi.NoteSequence) and seq.notes


with open(ODE_TO_JOY, 'rb') as _f:
  _VALID = _f.read()


def _with_header(body: bytes) -> bytes:
  """A valid header and one track of random events: gets past the checks of the first bytes."""
  return _smf([b'MTrk' + struct.pack('>I', len(body)) + body], fmt=0)


_FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FUZZ
@given(data=st.one_of(st.binary(max_size=1024), st.binary(max_size=1024).map(_with_header)))
def test_fuzz_random_bytes(fuzz_dir, data):
  _read_fuzzed(fuzz_dir, data)


@_FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(['set', 'insert', 'delete', 'flip']),
                                st.integers(0, len(_VALID) - 1), st.binary(min_size=1, max_size=6)),
                      min_size=1, max_size=6))
def test_fuzz_mutated_midi(fuzz_dir, edits):
  data = bytearray(_VALID)
  for op, at, payload in edits:
    at = min(at, len(data))
    if op == 'set':
      data[at:at + len(payload)] = payload
    elif op == 'insert':
      data[at:at] = payload
    elif op == 'delete':
      del data[at:at + len(payload)]
    elif at < len(data):
      data[at] ^= payload[0] or 1
  _read_fuzzed(fuzz_dir, bytes(data))


# ------------------------------------------------------------------------------------------------
# The commands, as subprocesses: no traceback; rc 0 with outputs, or rc 1 with one error line that
# names the file.

COMMANDS = {
    'coconet': ['--workdir=pretrained/coconet_small', '--melody={file}', '--gibbs_steps=4',
                '--num_samples=1'],
    'musicvae_interpolate': ['--workdir=pretrained/mel_2bar_small', '--task=interpolate',
                             f'--inputs={{file}},{TWINKLE}'],
    'musicvae_reconstruct': ['--workdir=pretrained/mel_2bar_small', '--task=reconstruct',
                             '--inputs={file}'],
    'pianonet': ['--workdir=pretrained/pianonet_small', '--melody={file}', '--seconds=0.5'],
    'cpword': ['--workdir=pretrained/cpword_small', '--melody={file}', '--num_steps=64'],
}
COMMAND_MODEL = {'coconet': 'coconet', 'musicvae_interpolate': 'musicvae',
                 'musicvae_reconstruct': 'musicvae', 'pianonet': 'pianonet', 'cpword': 'cpword'}
# The required hostile files plus the two that reach the models' own limits.
CLI_NAMES = ['random_bytes.mid', 'truncated.mid', 'empty.mid', 'zero_length_notes.mid',
             'tempo_zero.mid', 'tempo_slowest.mid', 'many_notes.mid', 'drums_only.mid',
             'tracks_300.mid', 'no_notes.mid', 'garbage.musicxml', 'long_gap.mid',
             'low_pitches.mid']
CLI_TIMEOUT = 180  # seconds; a hang fails the test instead of the suite


def _expect_ok(command: str, name: str) -> bool:
  spec = HOSTILE[name]
  return spec.read is None and getattr(spec, COMMAND_MODEL[command]) is None


def _run_generate(command: str, name: str, hostile_dir, out_dir) -> None:
  path = str(hostile_dir / name)
  args = [a.format(file=path) for a in COMMANDS[command]] + [f'--out_dir={out_dir}']
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run([sys.executable, '-m', 'experiments.generate', *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT)
  output = result.stdout + result.stderr
  assert 'Traceback' not in output, output[-3000:]
  if result.returncode == 0:
    written = [line for line in result.stdout.splitlines() if line.strip()]
    assert written and all(os.path.getsize(p) > 0 for p in written), output[-2000:]
    assert all(os.path.dirname(p) == str(out_dir) for p in written)
  else:
    errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
    assert result.returncode == 1 and len(errors) == 1, output[-2000:]
    assert path in errors[0], errors[0]
  assert (result.returncode == 0) == _expect_ok(command, name), output[-2000:]


# A few true subprocesses in the default run: the two regressions fixed with this suite (Coconet
# hanging on a 6-hour file; CP-word's too-long prompt not naming the file) and one success.
@pytest.mark.parametrize('command, name', [
    ('coconet', 'long_gap.mid'),
    ('cpword', 'tracks_300.mid'),
    ('musicvae_interpolate', 'tempo_slowest.mid'),
])
def test_generate_command_on_hostile_file(hostile_dir, tmp_path, command, name):
  _run_generate(command, name, hostile_dir, tmp_path / 'out')


FAST = {('coconet', 'long_gap.mid'), ('cpword', 'tracks_300.mid'),
        ('musicvae_interpolate', 'tempo_slowest.mid')}


@pytest.mark.slow
@pytest.mark.parametrize('command, name', [(c, n) for c in COMMANDS for n in CLI_NAMES
                                           if (c, n) not in FAST])
def test_generate_command_matrix(hostile_dir, tmp_path, command, name):
  _run_generate(command, name, hostile_dir, tmp_path / 'out')


# ------------------------------------------------------------------------------------------------
# Counts below 1 (a negative --num_steps cropped a melody from its end; a negative --num_samples
# reached numpy as a negative array size).


@pytest.mark.parametrize('flag, words', [('--num_samples=0', '--num_samples must be >= 1, got 0'),
                                         ('--num_steps=-3', '--length must be >= 1, got -3')])
def test_generate_rejects_counts_below_one(flag, words):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from experiments import generate  # pylint: disable=g-import-not-at-top
  argv = ['generate', '--workdir=pretrained/coconet_small', f'--melody={ODE_TO_JOY}', flag]
  flags.FLAGS.unparse_flags()
  flags.FLAGS(argv)
  try:
    with pytest.raises(UserError, match=words):
      generate.main(argv[:1])
  finally:
    flags.FLAGS.unparse_flags()
