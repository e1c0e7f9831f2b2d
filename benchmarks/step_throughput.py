r"""Train-step throughput and model FLOPs utilisation, per mode, for several model sizes.

    python benchmarks/step_throughput.py --output /tmp/step_throughput.json
    python benchmarks/step_throughput.py --scan_layers --remat full --output /tmp/scanned.json
    python benchmarks/step_throughput.py --settings demo_pixels,bert_vit_b16 --steps 2
    python benchmarks/step_throughput.py --settings demo,simla_demo,simla_base --steps 2

For the demo model, a BERT-base-size model (12 layers, 768 hidden, 36 regions of 2048-d
features, 20 tokens), the pixel demo (64 px, 16 px patches, no tower) and BERT-base over a
ViT-B/16 tower at 224 px (196 patches + [CLS]; SIMLA's and ALBEF's sizes) it times the jitted
train step in each mode on random inputs; and SIMLA's recipe (the fuse mode with the momentum
teacher, queues and five objectives): its demo (`simla_demo`) and its paper sizes (`simla_base`:
BERT-base with cross-attention in all 12 layers over ViT-B/16 at 256 px, 75 patches masked) and prints examples/s, step time, compile time and
MFU. FLOPs per step come from XLA's cost analysis of the
compiled (unrolled) step; the peak is measured here with a large jitted matmul in the model's
compute dtype, not taken from a datasheet. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import demo, demo_pixels, simla_demo, simla_pretrain
from semvlp_jax import train
from semvlp_jax.data.dims import DataDims
from semvlp_jax.parallel import mesh as mesh_lib
from semvlp_jax.parallel import sharding


def measured_peak_flops(dtype: str, size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a jitted [size, size] @ [size, size] matmul on the default backend."""
    a = jnp.ones((size, size), dtype)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, a).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        out = matmul(a, a)
    out.block_until_ready()
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def random_pixel_batch(dims: DataDims, batch_size: int, image_size: int, seed: int = 0) -> dict:
    """A batch for a model that reads pixels: the text fields, normalised-looking pixels."""
    rng = np.random.default_rng(seed)
    batch = random_batch(dims, batch_size, 1, seed)
    batch = {k: v for k, v in batch.items() if not k.startswith(('region_', 'mop_'))}
    pixels = rng.normal(size=(batch_size, image_size, image_size, 3)).astype(np.float32)
    return {**batch, 'pixels': pixels}


def random_simla_batch(dims: DataDims, batch_size: int, model, masked_patches: int) -> dict:
    """A pixel batch of captions with `masked_patches` random patches masked per image."""
    rng = np.random.default_rng(1)
    batch = random_pixel_batch(dims, batch_size, model.image_size)
    patches = (model.image_size // model.patch_size) ** 2
    positions = np.stack([rng.permutation(patches)[:masked_patches] for _ in range(batch_size)])
    mask = np.zeros((batch_size, patches), bool)
    np.put_along_axis(mask, positions, True, axis=1)
    return {
        **batch,
        'patch_mask': mask,
        'patch_positions': positions.astype(np.int32),
        'patch_weights': np.ones((batch_size, masked_patches), np.float32),
        'image_key': np.arange(batch_size, dtype=np.int32),
        'is_question': np.zeros(batch_size, np.int32),
    }


def random_batch(dims: DataDims, batch_size: int, num_regions: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    text_len, masked_tokens, masked_regions = dims.max_text_len, 3, 3
    boxes = np.sort(rng.random((batch_size, num_regions, 2, 2)), axis=2).reshape(
        batch_size, num_regions, 4
    )
    return {
        'text_ids': rng.integers(5, dims.vocab_size, (batch_size, text_len)).astype(np.int32),
        'text_mask': np.ones((batch_size, text_len), np.int32),
        'mlm_positions': rng.integers(1, text_len, (batch_size, masked_tokens)).astype(np.int32),
        'mlm_targets': rng.integers(5, dims.vocab_size, (batch_size, masked_tokens)).astype(
            np.int32
        ),
        'mlm_weights': np.ones((batch_size, masked_tokens), np.float32),
        'region_features': rng.normal(
            size=(batch_size, num_regions, dims.visual_feature_dim)
        ).astype(np.float32),
        'region_boxes': boxes.astype(np.float32),
        'region_mask': np.ones((batch_size, num_regions), np.int32),
        'mop_positions': rng.integers(0, num_regions, (batch_size, masked_regions)).astype(
            np.int32
        ),
        'mop_features': rng.normal(
            size=(batch_size, masked_regions, dims.visual_feature_dim)
        ).astype(np.float32),
        'mop_object_labels': rng.integers(0, dims.num_object_labels, (batch_size, 3)).astype(
            np.int32
        ),
        'mop_attribute_labels': rng.integers(0, dims.num_attribute_labels, (batch_size, 3)).astype(
            np.int32
        ),
        'mop_weights': np.ones((batch_size, masked_regions), np.float32),
        'is_question': (rng.random(batch_size) < 0.2).astype(np.int32),
        'answer_scores': (rng.random((batch_size, dims.num_answers)) < 0.01).astype(np.float32),
    }


@dataclasses.dataclass
class Setting:
    name: str
    dims: DataDims
    num_regions: int
    batch_size: int
    model: dict
    recipe: str = 'semvlp'  # semvlp: single and two modes; simla: the fuse mode

    @property
    def modes(self) -> tuple[str, ...]:
        return ('fuse',) if self.recipe == 'simla' else ('single', 'two')


def settings(bert_batch_size: int, vit_batch_size: int) -> list[Setting]:
    demo_config = demo.get_config()
    demo_dims = DataDims(
        vocab_size=46,
        max_text_len=demo_config.data.max_text_len,
        visual_feature_dim=demo_config.data.feature_dim,
        num_object_labels=5,
        num_attribute_labels=6,
        num_answers=23,
    )
    bert_dims = DataDims(
        vocab_size=30522,
        max_text_len=20,
        visual_feature_dim=2048,
        num_object_labels=1600,
        num_attribute_labels=400,
        num_answers=3129,
    )
    bert = dict(num_layers=12, num_cross_layers=4, hidden_size=768, num_heads=12, mlp_size=3072)
    demo_pixels_model = demo_pixels.get_config().model.to_dict()
    vit_b16 = dict(num_layers=12, width=768, num_heads=12, mlp_size=3072, layer_norm_eps=1e-6)
    pixels = dict(visual_input='patches', image_size=224, patch_size=16, vision_tower=vit_b16)
    return [
        Setting('demo', demo_dims, demo_config.data.num_regions, demo_config.batch_size, {}),
        Setting('bert_base', bert_dims, 36, bert_batch_size, bert),
        Setting('demo_pixels', demo_dims, 0, demo_config.batch_size, demo_pixels_model),
        Setting('bert_vit_b16', bert_dims, 0, vit_batch_size, {**bert, **pixels}),
        Setting('simla_demo', demo_dims, 0, demo_config.batch_size, {}, 'simla'),
        Setting('simla_base', bert_dims, 0, vit_batch_size, simla_base_model(), 'simla'),
    ]


def simla_base_model() -> dict:
    model = simla_pretrain.get_config('data_dir=/unused').model.to_dict()
    return {**model, 'dtype': 'float32', 'dropout_rate': 0.0}


def compiled_step(config, dims: DataDims, batch: dict, mode: str):
    """(compiled train step, its state, its batch, seconds to compile) for `config`."""
    mesh = mesh_lib.make_mesh(config.mesh)
    model, state = train.create_model_and_state(config, dims, mesh)
    step = train.jit_train_step(config, model, mesh)
    batch = jax.device_put(batch, sharding.batch_sharding(mesh))
    start = time.perf_counter()
    compiled = step.lower(state, batch, step_mode=mode).compile()
    return compiled, state, batch, time.perf_counter() - start


def measure(setting: Setting, mode: str, steps: int, args, peak: float) -> dict:
    config = simla_demo.get_config() if setting.recipe == 'simla' else demo.get_config()
    config.model.update({**setting.model, 'dtype': args.dtype, 'remat': args.remat})
    config.batch_size = setting.batch_size
    if setting.recipe == 'simla':
        masked = 75 if setting.name == 'simla_base' else config.data.patch_mask.count
        if setting.name == 'simla_base':  # the paper's queues
            config.momentum.queue_size = 65_536
        batch = random_simla_batch(setting.dims, setting.batch_size, config.model, masked)
    elif config.model.visual_input == 'patches':  # no detector regions: no masked objects
        config.objectives = demo_pixels.get_config().objectives
        batch = random_pixel_batch(setting.dims, setting.batch_size, config.model.image_size)
    else:
        batch = random_batch(setting.dims, setting.batch_size, setting.num_regions)
    config.model.scan_layers = args.scan_layers
    step, state, batch, compile_s = compiled_step(config, setting.dims, batch, mode)
    # XLA's cost analysis counts a while loop's body once, so FLOPs of a scanned model are taken
    # from the unrolled program, which computes the same function.
    config.model.scan_layers = False
    unrolled = step if not args.scan_layers else compiled_step(config, setting.dims, batch, mode)[0]
    flops = float(unrolled.cost_analysis().get('flops', float('nan')))
    state, metrics = step(state, batch)  # warm-up
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    step_time = (time.perf_counter() - start) / steps
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    return {
        'setting': setting.name,
        'mode': mode,
        'dtype': args.dtype,
        'remat': args.remat,
        'scan_layers': args.scan_layers,
        'batch_size': setting.batch_size,
        'parameters': int(num_params),
        'compile_s': compile_s,
        'step_time_s': step_time,
        'examples_per_s': setting.batch_size / step_time,
        'flops_per_step': flops,
        'mfu': flops / step_time / peak,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--output', default='step_throughput.json')
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--bert_batch_size', type=int, default=16)
    parser.add_argument('--vit_batch_size', type=int, default=4)
    parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
    parser.add_argument('--settings', default='demo,bert_base')
    parser.add_argument('--remat', default='none', choices=['none', 'full', 'dots'])
    parser.add_argument('--scan_layers', action='store_true')
    args = parser.parse_args()

    peak = measured_peak_flops(args.dtype)
    print(
        f'{jax.device_count()} x {jax.devices()[0].device_kind}: measured {args.dtype} matmul '
        f'peak {peak / 1e9:.1f} GFLOP/s'
    )
    wanted = args.settings.split(',')
    results = []
    for setting in settings(args.bert_batch_size, args.vit_batch_size):
        if setting.name not in wanted:
            continue
        for mode in setting.modes:
            r = measure(setting, mode, args.steps, args, peak)
            results.append(r)
            print(
                f'{r["setting"]:<10} {r["mode"]:<7} batch {r["batch_size"]:>4}  '
                f'{r["examples_per_s"]:9.1f} examples/s  step {r["step_time_s"] * 1e3:8.1f} ms  '
                f'{r["flops_per_step"] / 1e9:9.1f} GFLOP/step  MFU {100 * r["mfu"]:5.1f}%  '
                f'compile {r["compile_s"]:5.1f} s'
            )
    report = {
        'backend': jax.default_backend(),
        'devices': jax.device_count(),
        'device_kind': jax.devices()[0].device_kind,
        'peak_flops': peak,
        'results': results,
    }
    with open(args.output, 'w') as f:
        json.dump(report, f, indent=2)
    print(f'wrote {args.output}')


if __name__ == '__main__':
    main()
