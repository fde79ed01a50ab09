r"""Trains any model of this codebase from a config file.

  python -m experiments.train --config=coconet/configs.py:small --workdir=runs/coconet_small
  python -m experiments.train --config=coconet/configs.py:tiny --workdir=/tmp/t \
      --config.num_train_steps=50 --config.learning_rate=1e-3

A run resumes by itself from the latest checkpoint in --workdir. Multi-host: pass
--coordinator_address, --num_processes and --process_id on every host.
"""

from absl import flags
from ml_collections import config_flags

from experiments import cli
from experiments import registry

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, e.g. coconet/configs.py:small.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and samples go.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'host:port of process 0, for multi-host runs (jax.distributed).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes (multi-host).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process\'s index (multi-host).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv: list[str]) -> None:
  del argv
  from common import sharding  # pylint: disable=g-import-not-at-top
  from common import training  # pylint: disable=g-import-not-at-top
  sharding.maybe_initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  config = _CONFIG.value
  training.train_and_evaluate(registry.get_task(config), config, _WORKDIR.value)


if __name__ == '__main__':
  cli.run(main)
