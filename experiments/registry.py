"""The models by name: config.task -> what the entry points call. An explicit mapping; each
entry imports its model package only when used, so the command-line tools start fast."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from common import configs
from common.errors import UserError


@dataclasses.dataclass(frozen=True)
class ModelEntry:
  """What the entry points need of one model.

  Attributes:
    tasks: generation tasks (--task), the first being the default.
    input_flag: the generate flag that names its input files.
    modules: () -> the model's (train, generation, evaluate) modules, imported on demand. train has
      get_task(config) (common.training.TrainTask); generation has generate_pieces(model, config,
      request) (common.generation); evaluate has evaluate_from_flags(model, config, options).
    load_assets: (workdir) -> dict of files shipped beside the checkpoint (or None).
    check_request: (config, request) -> None, checks a request without a model, so that a bad
      input or flag is refused before the model loads (or None: generate_pieces checks).
  """
  tasks: tuple[str, ...]
  input_flag: str
  modules: Callable[[], tuple[Any, Any, Any]]
  load_assets: Callable[[str], dict[str, Any]] | None = None
  check_request: Callable[[Any, Any], None] | None = None


def _coconet():
  from coconet import evaluate, sample, train  # pylint: disable=g-import-not-at-top
  return train, sample, evaluate


def _musicvae():
  from musicvae import evaluate, sample, train  # pylint: disable=g-import-not-at-top
  return train, sample, evaluate


def _pianonet():
  from pianonet import evaluate, generate, train  # pylint: disable=g-import-not-at-top
  return train, generate, evaluate


def _cpword():
  from cpword import evaluate, sample, train  # pylint: disable=g-import-not-at-top
  return train, sample, evaluate


def _coconet_check(config: Any, request: Any) -> None:
  from coconet import sample  # pylint: disable=g-import-not-at-top
  sample.check_request(config, request)


def _musicvae_assets(workdir: str) -> dict[str, Any]:
  from musicvae import train  # pylint: disable=g-import-not-at-top
  return train.load_assets(workdir)


MODELS: dict[str, ModelEntry] = {
    'coconet': ModelEntry(tasks=('harmonize', 'generate', 'complete', 'revoice', 'upsample'),
                          input_flag='melody', modules=_coconet, check_request=_coconet_check),
    'musicvae': ModelEntry(tasks=('sample', 'reconstruct', 'interpolate', 'attribute'),
                           input_flag='inputs', modules=_musicvae,
                           load_assets=_musicvae_assets),
    'pianonet': ModelEntry(tasks=('continue',), input_flag='melody', modules=_pianonet),
    'cpword': ModelEntry(tasks=('generate', 'continue'), input_flag='melody', modules=_cpword),
}


def entry(config: Any) -> ModelEntry:
  """The ModelEntry of config.task; UserError naming the known models otherwise."""
  name = config.get('task')
  if name not in MODELS:
    raise UserError(f'config.task={name!r} is not one of {", ".join(MODELS)}')
  return MODELS[name]


def get_task(config: Any):
  """The common.training.TrainTask of the config's model."""
  train, _, _ = entry(config).modules()
  return train.get_task(config)


def load_model(config: Any, workdir: str, step: int | None = None):
  """The model of a workdir's latest (or given) checkpoint, in eval mode (common.training)."""
  from common import training  # pylint: disable=g-import-not-at-top
  return training.load_model(get_task(config), config, workdir, step)


def generate_files(workdir: str, request: Any, out_dir: str, *, step: int | None = None,
                   wav: bool = False, png: bool = False, config: Any = None) -> list[str]:
  """Loads the model of `workdir`, answers `request` and writes the pieces to out_dir; returns
  the paths written (what `python -m experiments.generate` does after checking its flags)."""
  from common import generation  # pylint: disable=g-import-not-at-top
  config = config if config is not None else configs.read_config(workdir)
  model_entry = entry(config)
  _, generator, _ = model_entry.modules()
  model = load_model(config, workdir, step)
  if model_entry.load_assets is not None:
    request = dataclasses.replace(request, assets=model_entry.load_assets(workdir))
  pieces = generator.generate_pieces(model, config, request)
  if not pieces:
    raise UserError('the model generated no notes; try another --seed or a higher --length')
  return generation.write_pieces(pieces, out_dir, wav=wav, png=png)


def importers(source: str) -> list:
  """The modules that import `source`'s checkpoints (each has CONFIGS and import_model)."""
  # pylint: disable=g-import-not-at-top
  if source == 'magenta':
    from coconet import original as coconet_original
    from musicvae import original as musicvae_original
    return [coconet_original, musicvae_original]
  from pianonet import original as pianonet_original
  return [pianonet_original]


def import_checkpoint(source: str, checkpoint: str, config_name: str, workdir: str) -> str:
  """Reads `checkpoint`, builds our model of `config_name` with its weights, writes `workdir`;
  returns the checkpoint path written."""
  from common import training  # pylint: disable=g-import-not-at-top
  from common import weight_import  # pylint: disable=g-import-not-at-top
  for module in importers(source):
    if config_name in module.CONFIGS:
      break
  else:
    known = sorted(n for m in importers(source) for n in m.CONFIGS)
    raise UserError(f'--config={config_name}: not a {source} configuration; known: '
                    f'{", ".join(known)}')
  config = module.CONFIGS[config_name]()
  model = module.import_model(weight_import.read_variables(checkpoint), config)
  return training.save_model(config, model, workdir, origin={
      'imported_from': checkpoint, 'source': source, 'original_config': config_name})
