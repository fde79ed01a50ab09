"""Shared by the studio tests: a tiny MusicVAE trained for a few steps, the shipped Coconet."""

import pytest

from studio import engine


@pytest.fixture(scope='session')
def studio_models(tiny_musicvae_workdir) -> engine.Models:
  """Models for the studio: a 2-step tiny MusicVAE (z 8) and pretrained/coconet_small."""
  # pretrained/coconet_small ships in the repository: a checkout without it fails here.
  return engine.load_models(tiny_musicvae_workdir, engine.DEFAULT_COCONET_WORKDIR,
                            musicvae_required=True, coconet_required=True)
