r"""One prepared, unattended accelerator check of every model: `make gpu-check`.

  python -m experiments.gpu_check          # paper configs: train steps, then the sampling rows
  python -m experiments.gpu_check --dry    # tiny configs, a few steps, on any device (make test)

For each model's 'paper' config (bf16 compute where the config has `mixed_precision`), on
synthetic batches of the paper's shapes (experiments/batches.py; the data sets do not travel to a
lent GPU machine): compile time, step time, examples and work units per second, model FLOPs
utilisation against the device's bf16 peak (XLA's FLOP count of the compiled step; MusicVAE's
hand count, since XLA does not multiply a scan's body by its trip count) and peak device memory.
Then the sampling rows of `make bench`: a 32-step Coconet harmonization (129 forward passes) of 1
and 64 pieces, MusicVAE sample 64 and encode 64, PianoNet streams (1 and 64), CP-word words/s
for 1 and 64 songs. Writes <out>/gpu_results.json and <out>/gpu_results.md; docs/performance.md
holds the table of the last run on a GPU, with the GPU named.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

from absl import flags

from experiments import cli

MODELS = ('coconet', 'musicvae', 'pianonet', 'cpword')
# Dense bf16 peaks (FLOP/s) from the vendors' data sheets, by a name that device_kind contains.
BF16_PEAK = {'H200': 989e12, 'H100': 989e12, 'A100': 312e12, 'L4': 121e12, 'V100': 125e12}

_DRY = flags.DEFINE_bool('dry', False, 'Tiny configs and a few steps: checks the script itself.')
_STEPS = flags.DEFINE_integer('steps', 200, 'Timed train steps per model (dry: 3).')
_OUT = flags.DEFINE_string('results_dir', 'bench',
                            'Folder for gpu_results.json and gpu_results.md.')
_MODELS = flags.DEFINE_list('models', list(MODELS), 'Which models to check.')


def peak_flops(device_kind: str) -> float | None:
  """The device's dense bf16 peak in FLOP/s, or None when unknown (a CPU, say)."""
  for name, peak in BF16_PEAK.items():
    if name in device_kind:
      return peak
  return None


def _config(model: str, dry: bool):
  """The config a row runs: tiny or paper, with bf16 compute where the config offers it."""
  from experiments import batches  # pylint: disable=g-import-not-at-top
  config = batches.model_config(model, 'tiny' if dry else 'paper')
  if 'mixed_precision' in config:
    config.mixed_precision = True
  return config


def _train_flops(config, setup, batch) -> float | None:
  if config.task == 'musicvae':
    from experiments import bench_musicvae  # pylint: disable=g-import-not-at-top
    return bench_musicvae.analytic_flops(config, config.batch_size, encoder=True, decoder=True,
                                         train=True)
  from experiments import benchmarks  # pylint: disable=g-import-not-at-top
  return benchmarks.compiled_flops(setup.train_step, setup.state, batch)


def _with_state(setup, state):
  import dataclasses  # pylint: disable=g-import-not-at-top
  return dataclasses.replace(setup, state=state)


def _peak_memory_bytes(device) -> int | None:
  try:
    stats = device.memory_stats() or {}
  except Exception:  # pylint: disable=broad-except  (not every backend has memory stats)
    return None
  return stats.get('peak_bytes_in_use')


def train_row(model: str, *, dry: bool, steps: int) -> dict[str, Any]:
  """Compile and time `steps` train steps of the model's paper (or tiny) config."""
  # pylint: disable=g-import-not-at-top
  import jax
  from common import sharding
  from common import training
  from experiments import batches
  from experiments import registry
  config = _config(model, dry)
  mesh = sharding.make_mesh()
  setup = training.setup_training(registry.get_task(config), config, mesh)
  batch = sharding.global_batch(batches.synthetic_batch(config), mesh)
  state = setup.state
  start = time.perf_counter()
  state, metrics = setup.train_step(state, batch)  # compiles
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  flops = _train_flops(config, _with_state(setup, state), batch)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = setup.train_step(state, batch)
  jax.block_until_ready(metrics)
  step_s = (time.perf_counter() - start) / steps
  units, unit = batches.work_per_example(config)
  device = jax.devices()[0]
  peak = peak_flops(device.device_kind)
  return dict(
      name=f'{model}/{config.variant}/train_step', model=model, variant=config.variant,
      batch_size=int(config.batch_size), mixed_precision=bool(config.get('mixed_precision')),
      compile_s=compile_s, seconds=step_s, examples_per_s=config.batch_size / step_s,
      throughput=f'{units * config.batch_size / step_s:,.0f} {unit}/s',
      flops_per_step=flops, mfu=(flops / step_s / peak) if flops and peak else None,
      peak_memory_gib=(_peak_memory_bytes(device) or 0) / 2**30 or None,
      loss=float(metrics['loss']))


def _timed(call: Callable[[], Any], repeats: int) -> float:
  import jax  # pylint: disable=g-import-not-at-top
  jax.block_until_ready(call())  # compile
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(call())
  return (time.perf_counter() - start) / repeats


def _model(config):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from experiments import registry  # pylint: disable=g-import-not-at-top
  model = registry.get_task(config).build_model(config, nnx.Rngs(0))
  model.eval()
  return model


def sampling_rows(model: str, *, dry: bool, repeats: int) -> list[dict[str, Any]]:
  """The sampling rows of `make bench` for one model, with random weights."""
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  config = _config(model, dry)
  net = _model(config)
  key = jax.random.key(0)
  many = 4 if dry else 64
  rows = []
  if model == 'coconet':
    from coconet import sample
    steps = 8 if dry else 32
    soprano = np.full(steps, 67.0, np.float32)
    for pieces in (1, many):
      seconds = _timed(lambda n=pieces: sample.harmonize(net, key, soprano, num_samples=n),
                       repeats)
      rows.append(dict(name=f'coconet/{config.variant}/harmonize{steps}_x{pieces}',
                       seconds=seconds, throughput=f'{pieces / seconds:.2f} pieces/s'))
  elif model == 'musicvae':
    from musicvae import data
    from musicvae import sample
    enc = data.encoding_from_config(config)
    z = np.asarray(jax.random.normal(key, (many, net.z_dim)))
    seconds = _timed(lambda: sample.decode_tokens(net, z, key, 0.5), repeats)
    rows.append(dict(name=f'musicvae/{config.variant}/sample{many}', seconds=seconds,
                     throughput=f'{many * enc.num_steps / seconds:,.0f} steps/s'))
    from experiments import batches
    tokens = batches.synthetic_batch(config, batch_size=many)['tokens']
    seconds = _timed(lambda: sample.encode_tokens(net, tokens), repeats)
    rows.append(dict(name=f'musicvae/{config.variant}/encode{many}', seconds=seconds,
                     throughput=f'{many / seconds:,.0f} sequences/s'))
  elif model == 'pianonet':
    from pianonet import generate
    num_new = config.num_keys * int(round(config.steps_per_second))  # one second of music
    for streams in (1, many):
      seed = np.zeros((streams, generate.seed_length(net.receptive_field, config.num_keys)),
                      np.uint8)
      seconds = _timed(lambda s=seed: generate.generate_fast(net, s, num_new, key), repeats)
      rows.append(dict(name=f'pianonet/{config.variant}/fast_{streams}_streams', seconds=seconds,
                       throughput=f'{streams * num_new / seconds:,.0f} key states/s'))
  else:
    from cpword import sample
    from cpword import tokens
    words = 16 if dry else 256
    start = sample.start_tokens(config)
    settings = sample.settings_from_config(config)
    for songs in (1, many):
      seconds = _timed(lambda n=songs: sample.generate(
          net, start, rng=key, num_songs=n, max_len=words, settings=settings,
          min_len=words, vocab=tokens.vocab_from_config(config)), repeats)
      rows.append(dict(name=f'cpword/{config.variant}/generate_{songs}_songs', seconds=seconds,
                       throughput=f'{songs * words / seconds:,.0f} words/s'))
  return rows


def markdown(payload: dict[str, Any]) -> str:
  """The results table, for docs/performance.md."""
  lines = [f'Device: {payload["device"]}; jax {payload["jax"]}; {payload["date"]}'
           f'{" (dry run)" if payload["dry"] else ""}.', '',
           '| row | time | throughput | compile | MFU (bf16 peak) | peak memory |',
           '|---|---|---|---|---|---|']
  for row in payload['rows']:
    seconds = row['seconds']
    time_text = f'{seconds * 1e3:.2f} ms' if seconds < 1 else f'{seconds:.2f} s'
    compile_text = f'{row["compile_s"]:.1f} s' if row.get('compile_s') else ''
    mfu = f'{100 * row["mfu"]:.1f}%' if row.get('mfu') else ''
    memory = f'{row["peak_memory_gib"]:.1f} GiB' if row.get('peak_memory_gib') else ''
    lines.append(f'| {row["name"]} | {time_text} | {row.get("throughput", "")} | '
                 f'{compile_text} | {mfu} | {memory} |')
  return '\n'.join(lines) + '\n'


def run_check(models, *, dry: bool, steps: int, out_dir: str) -> dict[str, Any]:
  """Every row for `models`; writes gpu_results.json and .md into out_dir; returns the payload."""
  import jax  # pylint: disable=g-import-not-at-top
  from common import files  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  rows = []
  for model in models:
    print(f'{model}: train steps...', flush=True)
    rows.append(train_row(model, dry=dry, steps=steps))
    print(f'{model}: sampling...', flush=True)
    rows.extend(sampling_rows(model, dry=dry, repeats=1 if dry else 3))
  payload = dict(device=f'{jax.device_count()} x {device.device_kind}', platform=device.platform,
                 jax=jax.__version__, dry=dry, date=time.strftime('%Y-%m-%d'), rows=rows)
  os.makedirs(out_dir, exist_ok=True)
  files.atomic_write(os.path.join(out_dir, 'gpu_results.json'),
                     lambda f: json.dump(payload, f, indent=2), mode='w')
  files.atomic_write(os.path.join(out_dir, 'gpu_results.md'),
                     lambda f: f.write(markdown(payload)), mode='w')
  return payload


def main(argv: list[str]) -> None:
  del argv
  unknown = sorted(set(_MODELS.value) - set(MODELS))
  if unknown:
    from common.errors import UserError  # pylint: disable=g-import-not-at-top
    raise UserError(f'--models: unknown {", ".join(unknown)}; choose from {", ".join(MODELS)}')
  steps = 3 if _DRY.value and _STEPS.value == _STEPS.default else _STEPS.value
  payload = run_check(_MODELS.value, dry=_DRY.value, steps=steps, out_dir=_OUT.value)
  print(markdown(payload))
  print(f'Wrote {_OUT.value}/gpu_results.json and gpu_results.md')


if __name__ == '__main__':
  cli.run(main)
