"""The Evolve API: a session's population of MusicVAE melodies, bred from the user's selections.

Every request that changes the population names the generation it was made from (409 when it is
stale: another tab moved on). Melodies are decoded while holding the session's lock and then
`Models.lock`, never the other way round. A session restored from a spill has its generations'
vectors but not their melodies: each is decoded again when it is shown (the same notes).
"""

from __future__ import annotations

from typing import Any

import flask

from musicvae import evolve
from studio import engine
from studio import requests
from studio import sessions
from studio.requests import ApiError
from studio.routes import context

blueprint = flask.Blueprint('evolve', __name__)


def _decode_generation(session: sessions.Session, mvae: engine.LoadedMusicVAE) -> list[str]:
  """Decodes the current population into the session's outputs; their ids."""
  evo = session.evolution
  with context.current().models.lock:
    seqs = engine.decode_population(mvae, evo.population, seed=evo.seed)
  ids = []
  for i, seq in enumerate(seqs):
    name = f'evolve_g{evo.generation:03d}_{i}'
    ids.append(session.add_output(sessions.Output(seq, name,
                                                  f'generation {evo.generation}, #{i + 1}')))
  return ids


def _new_evolution(session: sessions.Session, mvae: engine.LoadedMusicVAE) -> None:
  settings = context.current().settings
  session.evolution = evolve.Evolution(
      mvae.z_dim, settings.population_size, seed=session.new_seed(),
      crossover=settings.crossover, sigma=settings.sigma,
      num_foreign=min(settings.num_foreign, settings.population_size),
      keep_selected=settings.keep_selected, elitism=settings.elitism)
  session.generations = [_decode_generation(session, mvae)]


def _state(session: sessions.Session, mvae: engine.LoadedMusicVAE) -> flask.Response:
  """The session's current generation as the pages show it."""
  evo = session.evolution
  if session.generations[-1] is None:
    session.generations[-1] = _decode_generation(session, mvae)
  last = evo.history[-1]
  population = []
  for i, output_id in enumerate(session.generations[-1]):
    output = session.outputs[output_id]
    population.append(dict(
        index=i, id=output_id, name=output.name, origin=last.origins[i],
        parents=[int(p) for p in last.parents_N2[i] if p >= 0],
        notes=engine.notes_json(output.seq), num_steps=int(output.seq.total_quantized_steps),
        **context.urls(output_id)))
  return context.answer(generation=evo.generation, can_undo=evo.generation > 0, seed=evo.seed,
                        sigma=evo.sigma, selected=list(last.selected), last_sigma=last.sigma,
                        population=population)


def _evolution(session: sessions.Session, mvae: engine.LoadedMusicVAE) -> evolve.Evolution | None:
  """The session's evolution; None when there is none, or when a spilled one came back from a
  run with another MusicVAE (its vectors would not decode)."""
  if session.evolution is not None and session.evolution.z_dim != mvae.z_dim:
    session.evolution, session.generations = None, []
  return session.evolution


def _check_generation(body: dict[str, Any], evo: evolve.Evolution) -> None:
  generation = requests.integer(body.get('generation'), 'generation', 0, 10**9)
  if generation != evo.generation:
    raise ApiError(409, f'this page shows generation {generation} but the session is at '
                        f'generation {evo.generation} (changed in another tab?); reload the page')


def _no_population(session: sessions.Session, mvae: engine.LoadedMusicVAE) -> flask.Response:
  """A request to change a population that this session does not have: a session that expired
  starts afresh (the answer says so); otherwise 409."""
  if not context.replaces_expired_session():
    raise ApiError(409, 'no population yet: load the Evolve page first')
  _new_evolution(session, mvae)
  return _state(session, mvae)


@blueprint.get('/api/evolve')
def population():
  mvae = context.current().musicvae()
  session = context.session_for_update()
  with session.lock:
    if _evolution(session, mvae) is None:
      _new_evolution(session, mvae)
    return _state(session, mvae)


@blueprint.post('/api/evolve/next')
def next_generation():
  mvae = context.current().musicvae()
  body = requests.json_object()
  session = context.session_for_update()
  with session.lock:
    evo = _evolution(session, mvae)
    if evo is None:
      return _no_population(session, mvae)
    _check_generation(body, evo)
    selected = body.get('selected')
    if not isinstance(selected, list) or not selected:
      raise ApiError(400, 'select at least one melody (selected: a non-empty list of indices)')
    selected = [requests.integer(i, 'a selected index', 0, evo.population_size - 1)
                for i in selected]
    if len(set(selected)) != len(selected):
      raise ApiError(400, f'selected indices repeat: {selected}')
    sigma = body.get('sigma')
    sigma = evo.sigma if sigma is None else requests.number(sigma, 'sigma', 0.0, 1.0)
    evo.next_generation(selected, sigma)
    try:
      session.generations.append(_decode_generation(session, mvae))
    except BaseException:
      evo.undo()  # keep the population and its decoded melodies in step
      raise
    return _state(session, mvae)


@blueprint.post('/api/evolve/undo')
def undo():
  mvae = context.current().musicvae()
  body = requests.json_object()
  session = context.session_for_update()
  with session.lock:
    if _evolution(session, mvae) is None:
      return _no_population(session, mvae)
    _check_generation(body, session.evolution)
    if session.evolution.generation == 0:
      raise ApiError(409, 'nothing to undo: this is the first generation')
    session.evolution.undo()
    session.generations.pop()
    return _state(session, mvae)


@blueprint.post('/api/evolve/reset')
def reset():
  mvae = context.current().musicvae()
  requests.json_object()
  session = context.session_for_update()
  with session.lock:
    _new_evolution(session, mvae)
    return _state(session, mvae)
