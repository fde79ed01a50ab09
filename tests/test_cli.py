"""The command line as a user meets it: fast --help, a bad input file refused before any model
loads, no warnings a user cannot act on, and one error shape for a bad config override."""

import os
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COCONET = os.path.join(REPO, 'pretrained', 'coconet_small')


def _run(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  env.pop('JAX_CPU_ENABLE_ASYNC_DISPATCH', None)
  start = time.perf_counter()
  result = subprocess.run([sys.executable, '-m', *args], env=env, capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)
  return result, time.perf_counter() - start


def _fastest(*args: str, tries: int = 3) -> tuple[subprocess.CompletedProcess, float]:
  runs = [_run(*args) for _ in range(tries)]
  return min(runs, key=lambda run: run[1])


def test_generate_help_answers_within_a_second_without_jax():
  result, seconds = _fastest('experiments.generate', '--help')
  assert '--workdir' in result.stdout and '--length' in result.stdout
  assert seconds < 1.0, f'--help took {seconds:.2f} s'
  code = 'import sys, experiments.generate; print("jax" in sys.modules)'
  env = dict(os.environ, PYTHONPATH=REPO)
  imported = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                            check=True, cwd=REPO).stdout.strip()
  assert imported == 'False'


def test_a_bad_input_file_fails_before_the_model_loads(tmp_path):
  bad = tmp_path / 'song.mid'
  bad.write_bytes(b'RIFF' + bytes(60))
  result, seconds = _fastest('experiments.generate', f'--workdir={COCONET}', f'--melody={bad}',
                             f'--out_dir={tmp_path}/out', tries=2)
  assert result.returncode == 1
  assert result.stderr.strip() == f"error: {bad}: not a MIDI file (starts with b'RIFF', not b'MThd')"
  assert seconds < 1.0, f'the bad file was refused after {seconds:.2f} s'
  assert not (tmp_path / 'out').exists()


@pytest.mark.skipif(not os.path.isdir(os.path.join(COCONET, 'checkpoints')),
                    reason='pretrained/coconet_small is not in this checkout')
def test_generating_prints_no_warning_a_user_cannot_act_on(tmp_path):
  result, _ = _run('experiments.generate', f'--workdir={COCONET}', '--pitches=67,69,71,72',
                   '--gibbs_steps=2', f'--out_dir={tmp_path}')
  assert result.returncode == 0, result.stderr
  assert result.stdout.split() == [str(tmp_path / 'harmonize_00.mid')]
  for noise in ('ffmpeg', 'libtpu', "Unable to initialize backend 'tpu'", 'Warning'):
    assert noise not in result.stderr, result.stderr


@pytest.mark.parametrize('model', ['coconet', 'musicvae', 'pianonet', 'cpword'])
def test_a_bad_override_or_variant_gets_one_line_of_the_same_shape(model, tmp_path):
  config = f'--config={model}/configs.py:tiny'
  result, _ = _run('experiments.train', config, f'--workdir={tmp_path}', '--config.no_such=1')
  assert result.returncode == 1
  assert result.stderr == ("error: bad command-line flag: --config.no_such: the config has no "
                           "setting 'no_such' (see its config file)\n")
  result, _ = _run('experiments.train', f'--config={model}/configs.py:nope',
                   f'--workdir={tmp_path}')
  assert result.returncode == 1
  assert result.stderr.startswith(f"error: {model}: unknown config variant 'nope'; choose one of "
                                  'tiny, ')
  assert result.stderr.count('\n') == 1


def test_a_bad_context_length_is_refused_at_the_flags(tmp_path):
  result, seconds = _run('experiments.evaluate', f'--workdir={tmp_path}',
                         '--context_lengths=256,abc')
  assert result.returncode == 1
  assert result.stderr.startswith('error: flag --context_lengths=')
  assert 'whole numbers' in result.stderr
  assert 'Traceback' not in result.stderr and seconds < 5
