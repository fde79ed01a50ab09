r"""Turns an original implementation's trained checkpoint into a workdir of this codebase.

  python -m experiments.import_weights --source=magenta --config=cat-mel_2bar_small \
      --checkpoint=downloads/cat-mel_2bar_small/cat-mel_2bar_small.ckpt --workdir=runs/mel_2bar
  python -m experiments.import_weights --source=pianonet --config=r5p3 \
      --checkpoint=../shared/models/pianonet_original/r5p3_300kparams_4_blocks_12_12_12_12_model \
      --workdir=pretrained/pianonet_paper

The workdir (config.json + a weights-only checkpoint) works with generate, evaluate, the studio
and --config.init_from. TensorFlow is not needed: common/tf_checkpoint.py reads the checkpoint.
--config names the original's configuration (--list shows them); a checkpoint whose variables
do not fit it is refused with the first variable that does not.
"""

from __future__ import annotations

from absl import flags

from common.errors import UserError
from experiments import cli
from experiments.registry import import_checkpoint, importers

_SOURCE = flags.DEFINE_enum('source', None, ['magenta', 'pianonet'],
                            'Whose checkpoint: magenta (Coconet, MusicVAE) or pianonet (Keras).')
_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'The checkpoint: a TF checkpoint prefix or '
                                  'folder, a Keras SavedModel folder, or a fixture .npz.')
_CONFIG = flags.DEFINE_string('config', None, 'The original configuration\'s name (see --list).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'The new workdir to write.')
_LIST = flags.DEFINE_bool('list', False, 'List the configurations each source knows and exit.')


def main(argv: list[str]) -> None:
  del argv
  if _LIST.value:
    for source in ('magenta', 'pianonet'):
      names = sorted(n for m in importers(source) for n in m.CONFIGS)
      print(f'{source}: {", ".join(names)}')
    return
  missing = [f'--{name}' for name, flag in (('source', _SOURCE), ('checkpoint', _CHECKPOINT),
                                            ('config', _CONFIG), ('workdir', _WORKDIR))
             if not flag.value]
  if missing:
    raise UserError(f'missing {", ".join(missing)} (or --list)')
  path = import_checkpoint(_SOURCE.value, _CHECKPOINT.value, _CONFIG.value, _WORKDIR.value)
  print(f'Imported {_CHECKPOINT.value} into {path}')


if __name__ == '__main__':
  cli.run(main)
