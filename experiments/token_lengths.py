r"""Song lengths of a data split in CP words and in REMI events (cpword tokenisation).

  python -m experiments.token_lengths --data=pop1k7 --split=train
  python -m experiments.token_lengths --data=pop1k7 --split=all      # all 1,747 Pop1K7 songs
  python -m experiments.token_lengths --data=pop1k7 --split=valid --output=lengths_valid.json
  python -m experiments.token_lengths --variant=small_emotion --split=train   # EMOPIA + emotion
"""

from __future__ import annotations

import json

from absl import flags

from common import files
from cpword import lengths
from experiments import cli

_DATA = flags.DEFINE_string('data', None,
                            "Data set (default: the variant's, pop1k7 for 'small'); 'synthetic' "
                            'is the made-up test set.')
_SPLIT = flags.DEFINE_enum('split', 'train', ['train', 'valid', 'test', 'all'],
                           "Data split ('all': the three together).")
_VARIANT = flags.DEFINE_string('variant', 'small', 'cpword config variant (tokens, chords, data).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Override the data folder.')
_LIMIT = flags.DEFINE_integer('limit', None, 'Only the first N pieces of the split.')
_OUTPUT = flags.DEFINE_string('output', None, 'Also write the statistics as JSON here.')


def main(argv: list[str]) -> None:
  del argv
  stats = lengths.token_lengths(_SPLIT.value, variant=_VARIANT.value, data=_DATA.value,
                                data_dir=_DATA_DIR.value, limit=_LIMIT.value)
  print(lengths.format_table(stats))
  if _OUTPUT.value:
    files.atomic_write(_OUTPUT.value, lambda f: json.dump(stats, f, indent=2), mode='w')
    print(f'Wrote {_OUTPUT.value}')


if __name__ == '__main__':
  cli.run(main)
