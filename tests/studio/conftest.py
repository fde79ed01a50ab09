"""Shared by the studio tests: a tiny MusicVAE trained for a few steps, the shipped Coconet."""

import os

import pytest

from common import training
from studio import engine


@pytest.fixture(scope='session')
def studio_models(tiny_musicvae_workdir) -> engine.Models:
  """Models for the studio: a 2-step tiny MusicVAE (z 8) and pretrained/coconet_small."""
  if not os.path.isdir(os.path.join(engine.DEFAULT_COCONET_WORKDIR, training.CHECKPOINT_DIR)):
    pytest.skip(f'{engine.DEFAULT_COCONET_WORKDIR} is missing')
  return engine.load_models(tiny_musicvae_workdir, engine.DEFAULT_COCONET_WORKDIR, musicvae_required=True,
                            coconet_required=True)
