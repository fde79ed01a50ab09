r"""Exports a training run's weights (no optimizer state) into a small folder to ship or share.

  python -m experiments.export --workdir=runs/mel_2bar_small --out_dir=pretrained/mel_2bar_small
  python -m experiments.export --workdir=runs/cp_small --out_dir=/tmp/cp --step=4000

The folder holds config.json, metrics.jsonl, checkpoints/<step> and the files that ship beside a
checkpoint (MusicVAE's attribute vectors, computed now from the run's data when the run has none);
pass it as --workdir to evaluate, generate and the studio. Add a MODEL_CARD.md by hand (data,
command, time, results).
"""

from __future__ import annotations

from absl import flags

from experiments import cli
from experiments import registry

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir (config.json + checkpoints).')
_OUT_DIR = flags.DEFINE_string('out_dir', None, 'New folder for the exported weights.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
flags.mark_flags_as_required(['workdir', 'out_dir'])


def main(argv: list[str]) -> None:
  del argv
  from common import training  # pylint: disable=g-import-not-at-top
  config = training.read_config(_WORKDIR.value)
  task = registry.get_task(config)
  path = training.export_weights(task, config, _WORKDIR.value, _OUT_DIR.value, _STEP.value)
  print(f'Exported the weights of {_WORKDIR.value} to {path}')


if __name__ == '__main__':
  cli.run(main)
