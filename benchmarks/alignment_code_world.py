r"""Does alignment generalise beyond the demo's scenes? Pre-training on a region-feature world in
the real file formats (tests/code_world.py: 36 boxes of 2048-d features per image, Karpathy
captions naming the objects, VQA yes/no questions), built with the README's commands.

    python benchmarks/alignment_code_world.py --out /tmp/code_world --variants old_defaults,demo

Writes the raw files, builds them (`python -m semvlp_jax.data.build ...`), trains a
sentencepiece tokenizer on the built captions, then pre-trains `configs/pretrain_real.py` at the
demo's model size (4 layers, hidden 128) for `--steps` steps per variant (the variants of
benchmarks/alignment.py), evaluating every `--eval_every` steps, and prints the same report:
ITM / MLM per mode at the start and the end and the first step at which ITM reached 0.6.
Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))
sys.path.insert(0, str(ROOT))

from alignment import VARIANTS, report, set_key  # noqa: E402
from step_throughput import measured_peak_flops  # noqa: E402

from configs import demo, pretrain_real  # noqa: E402
from semvlp_jax import train  # noqa: E402
from semvlp_jax.progress import read_history, show_progress  # noqa: E402
from tests.code_world import CodeWorld, write_code_world  # noqa: E402


def build(out: pathlib.Path, world: CodeWorld) -> pathlib.Path:
    """Raw files and built datasets under `out` (kept: a rerun reuses them)."""
    data = out / 'data'
    if (out / 'built.ok').exists():
        return data
    start = time.perf_counter()
    write_code_world(out, world)
    print(f'wrote the raw files in {time.perf_counter() - start:.0f} s', flush=True)
    raw = out / 'raw'
    commands = [
        ['--dataset', 'region_tsv', '--manual_dir', raw / 'features'],
        ['--dataset', 'karpathy', '--manual_dir', raw / 'karpathy', '--features', 'region_tsv'],
        ['--dataset', 'vqa_v2', '--manual_dir', raw / 'vqa', '--features', 'region_tsv'],
    ]
    for args in commands:
        command = [sys.executable, '-m', 'semvlp_jax.data.build', *map(str, args)]
        subprocess.run([*command, '--data_dir', str(data)], check=True, cwd=ROOT)
    subprocess.run(
        [
            sys.executable,
            '-m',
            'semvlp_jax.data.train_tokenizer',
            '--dataset',
            'karpathy',
            '--data_dir',
            str(data),
            '--output',
            str(data / 'spm.model'),
            '--vocab_size',
            '64',
        ],  # fmt: skip
        check=True,
        cwd=ROOT,
    )
    (out / 'built.ok').write_text('')
    print(f'built in {time.perf_counter() - start:.0f} s', flush=True)
    return data


def variant_config(name: str, data: pathlib.Path, args):
    config = pretrain_real.get_config(f'data_dir={data}')
    small = demo.get_config()
    config.model = small.model  # the demo's size, float32, no dropout
    config.mesh, config.parallel = small.mesh, small.parallel
    config.optimizer = small.optimizer
    for key, value in VARIANTS[name].items():
        set_key(config, key, value)
    config.data.sources = {
        'karpathy': dict(split='train', val_split='val', weight=0.8),
        'vqa_v2': dict(split='train', val_split='val', weight=0.2),
    }
    config.data.update(answer_min_count=1, reader_threads=2, max_text_len=16)
    config.update(
        seed=args.seed,
        total_steps=args.steps,
        batch_size=64,
        eval_every=args.eval_every,
        eval_batches=4,
        checkpoint_every=args.steps,
        diagnostics=True,
    )
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True)
    parser.add_argument('--variants', default='old_defaults,demo')
    parser.add_argument('--steps', type=int, default=400)
    parser.add_argument('--eval_every', type=int, default=50)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num_train', type=int, default=800)
    args = parser.parse_args()
    show_progress()
    out = pathlib.Path(args.out)
    data = build(out, CodeWorld(num_train=args.num_train))
    peak = measured_peak_flops('float32', repeats=20) / 1e9
    results = []
    for name in args.variants.split(','):
        workdir = out / f'{name}_seed{args.seed}'
        wall = None
        if not (workdir / 'metrics.json').exists():
            start = time.perf_counter()
            train.train_and_evaluate(variant_config(name, data, args), str(workdir))
            wall = time.perf_counter() - start
        history = read_history(workdir / 'eval_history.jsonl')
        results.append({'name': name, 'steps': args.steps, 'wall_s': wall, 'history': history})
    print(f'measured f32 matmul peak: {peak:.0f} GFLOP/s')
    for result in results:
        print('\n'.join(report(result)))


if __name__ == '__main__':
    main()
