"""Shared by the studio tests: a tiny MusicVAE trained for a few steps, the shipped Coconet."""

import os

import pytest

from common import training
from musicvae import configs
from musicvae import train
from studio import engine


@pytest.fixture(scope='session')
def studio_models(tmp_path_factory) -> engine.Models:
  """Models for the studio: a 2-step tiny MusicVAE (z 8) and pretrained/coconet_small."""
  if not os.path.isdir(os.path.join(engine.DEFAULT_COCONET_WORKDIR, training.CHECKPOINT_DIR)):
    pytest.skip(f'{engine.DEFAULT_COCONET_WORKDIR} is missing')
  workdir = str(tmp_path_factory.mktemp('studio_musicvae'))
  config = configs.get_config('tiny')
  config.num_train_steps = 2
  config.log_every_steps = 1
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 2
  config.sample_every_steps = 0
  training.train_and_evaluate(train.get_task(config), config, workdir)
  return engine.load_models(workdir, engine.DEFAULT_COCONET_WORKDIR, musicvae_required=True,
                            coconet_required=True)
