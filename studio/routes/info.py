"""/api/info: what is loaded, and what the pages need to know to build their controls."""

from __future__ import annotations

import flask

from studio import engine
from studio.requests import MAX_UPLOAD_BYTES
from studio.routes import context

blueprint = flask.Blueprint('info', __name__)


@blueprint.get('/api/info')
def info():
  studio = context.current()
  models, settings = studio.models, studio.settings
  mvae, coco = models.musicvae, models.coconet
  return flask.jsonify(
      musicvae=dict(available=mvae is not None, message=models.musicvae_message,
                    workdir=mvae.workdir if mvae else None, z_dim=mvae.z_dim if mvae else None,
                    population_size=settings.population_size, sigma=settings.sigma),
      coconet=dict(available=coco is not None, message=models.coconet_message,
                   workdir=coco.workdir if coco else None, gibbs_steps=list(engine.GIBBS_STEPS),
                   default_gibbs_steps=settings.default_gibbs_steps,
                   grid=dict(steps=engine.GRID_STEPS, step_sixteenths=engine.GRID_STEP_SIXTEENTHS,
                             low=engine.SOPRANO_RANGE[0], high=engine.SOPRANO_RANGE[1]),
                   max_upload_bytes=MAX_UPLOAD_BYTES))
