r"""Checkpoint save and restore times for the demo model and a BERT-base-size model.

    python benchmarks/checkpoint_io.py --output /tmp/checkpoint_io.json

For each size it creates the train state (parameters and AdamW state), then reports: the time
`save` blocks the training loop (fingerprint, device-to-host copy, starting the async write), the
time until the write is finished, the size on disk, and the time to restore it (with the
fingerprint check) into the same layout. Not a test: numbers depend on the machine and the disk.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time

import grain
import jax
from step_throughput import settings  # the sibling script: same two model sizes

from configs import demo
from semvlp_jax import checkpoint, train
from semvlp_jax.parallel import mesh as mesh_lib


def measure(setting, directory: pathlib.Path) -> dict:
    config = demo.get_config()
    config.model.update(**setting.model)
    model, state = train.create_model_and_state(
        config, setting.dims, mesh_lib.make_mesh(config.mesh)
    )
    jax.block_until_ready(state)
    iterator = iter(grain.MapDataset.range(10).to_iter_dataset())
    with checkpoint.Checkpoints(directory, keep=1) as checkpoints:
        start = time.perf_counter()
        checkpoints.save(state, iterator, meta={})
        blocking = time.perf_counter() - start
        checkpoints.wait()
        total = time.perf_counter() - start
    size = sum(f.stat().st_size for f in directory.rglob('*') if f.is_file())
    with checkpoint.Checkpoints(directory, keep=1) as checkpoints:
        start = time.perf_counter()
        restored, _ = checkpoints.restore_latest(model.abstract_state, iterator)
        jax.block_until_ready(restored)
        restore = time.perf_counter() - start
    return {
        'setting': setting.name,
        'parameters': int(sum(x.size for x in jax.tree.leaves(state.params))),
        'bytes_on_disk': size,
        'save_blocking_s': blocking,
        'save_total_s': total,
        'restore_s': restore,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--output', default='checkpoint_io.json')
    parser.add_argument('--settings', default='demo,bert_base')
    args = parser.parse_args()
    results = []
    for setting in settings(bert_batch_size=8):
        if setting.name not in args.settings.split(','):
            continue
        with tempfile.TemporaryDirectory() as directory:
            r = measure(setting, pathlib.Path(directory))
        results.append(r)
        print(
            f'{r["setting"]:<10} {r["parameters"] / 1e6:7.1f}M params  '
            f'{r["bytes_on_disk"] / 2**20:8.1f} MiB  save blocks {r["save_blocking_s"]:6.2f} s, '
            f'written in {r["save_total_s"]:6.2f} s  restore {r["restore_s"]:6.2f} s'
        )
    with open(args.output, 'w') as f:
        json.dump({'backend': jax.default_backend(), 'results': results}, f, indent=2)
    print(f'wrote {args.output}')


if __name__ == '__main__':
    main()
