"""Test-wide settings: CPU only, quiet TensorFlow-style logs, the entry points' process tuning.

Parsed MIDI and converted chorales are cached in $MUSICGEN_CACHE_DIR (default ~/.cache/musicgen),
as for users, so a second `make test` skips the one-off music21 conversion (~30 s).
"""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from common import runtime  # pylint: disable=g-import-not-at-top,wrong-import-position

# The tests run the models as the entry points do: with the process tuning.
runtime.configure_process()


@pytest.fixture(scope='session')
def tiny_musicvae_workdir(tmp_path_factory) -> str:
  """A workdir with a 'tiny' MusicVAE (z 8) trained for 2 steps, shared by the tests that only
  read it (evaluate, the simulated user, the studio); tests that write into a workdir train
  their own."""
  from common import training  # pylint: disable=g-import-not-at-top
  from musicvae import configs, train  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp('tiny_musicvae'))
  config = configs.get_config('tiny')
  config.num_train_steps = 2
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 2
  config.sample_every_steps = 0
  training.train_and_evaluate(train.get_task(config), config, workdir)
  return workdir
