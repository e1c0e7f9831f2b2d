r"""How fast the demo learns cross-modal alignment, per config variant: the issue-13 study.

    python benchmarks/alignment.py --out /tmp/alignment --variants old_defaults,itc,itc_hard
    python benchmarks/alignment.py --out /tmp/alignment --variants demo --steps 0   # as shipped

Each variant is `configs/demo.py` with a few keys changed (VARIANTS below); each runs the
trainer in this process with evaluation every `--eval_every` steps and the alignment
diagnostics on (`config.diagnostics`, see semvlp_jax/diagnostics.py). Prints, per variant and
mode: ITM / MLM / masked-object accuracy at the start and the end, the first evaluated step at
which ITM reached 0.6 (leaving chance), the ITM logit change when the image is swapped, the
text->image attention mass of the top layer (single-stream) or the cross-attention update
(two-stream), and the wall time with the machine's measured f32 matmul peak. Runs whose
workdir holds metrics.json are read back, not rerun. Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import ast
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # step_throughput
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # configs

import ml_collections  # noqa: E402
from step_throughput import measured_peak_flops  # noqa: E402

from configs import demo  # noqa: E402
from semvlp_jax import train  # noqa: E402
from semvlp_jax.progress import read_history, show_progress  # noqa: E402

# What the SemVLP recipe shipped with before issue 13 (the demo's values then).


def weights(**objectives: float) -> dict:
    """The same objectives and loss weights in both modes, as variant keys."""
    return {f'objectives.{mode}': dict(objectives) for mode in ('single', 'two')}


OLD_DEFAULTS = {
    'total_steps': 1400,
    'itm_negatives': 'random',
    'model.contrastive_dim': 0,
    **weights(mlm=1.0, mop=1.0, itm=1.0, qa=1.0),
    'optimizer.learning_rate': 1e-3,
    'optimizer.warmup_steps': 100,
    'model.region_norm': 'average',
    'model.answer_bias': 'zero',
    'optimizer.b2': 0.999,
}
WITH_ITC = {
    **OLD_DEFAULTS,
    'model.contrastive_dim': 64,
    **weights(mlm=1.0, mop=1.0, itm=1.0, qa=1.0, itc=1.0),
}
VARIANTS: dict[str, dict] = {
    'demo': {},  # configs/demo.py as it is
    'old_defaults': OLD_DEFAULTS,
    'itc': WITH_ITC,
    'itc_hard': {**WITH_ITC, 'itm_negatives': 'hard'},
    # ITC in the two-stream mode only, where the uni-modal states come free with the pass.
    'itc_two': {**WITH_ITC, 'objectives.single': OLD_DEFAULTS['objectives.single']},
    'itc_two_hard': {
        **WITH_ITC,
        'objectives.single': OLD_DEFAULTS['objectives.single'],
        'itm_negatives': 'hard',
    },
    # Leave one objective out: which one slows the others down?
    'itc_no_mop': {**WITH_ITC, **weights(mlm=1.0, itm=1.0, qa=1.0, itc=1.0)},
    'itc_no_qa': {**WITH_ITC, **weights(mlm=1.0, mop=1.0, itm=1.0, itc=1.0)},
    # MLM's gradient on the shared encoder is ~15% of the total (diag_grad_*): weigh it up.
    'itc_mlm4': {**WITH_ITC, **weights(mlm=4.0, mop=1.0, itm=1.0, qa=1.0, itc=1.0)},
    # Token-level and matching objectives up, the loud ones (MOP, QA) down, ITC kept.
    'balanced': {**WITH_ITC, **weights(mlm=1.0, mop=0.25, itm=1.0, qa=0.25, itc=1.0)},
    'balanced_mlm2': {**WITH_ITC, **weights(mlm=2.0, mop=0.25, itm=1.0, qa=0.25, itc=1.0)},
    'balanced_mlm2_itm2': {
        **WITH_ITC,
        **weights(mlm=2.0, mop=0.25, itm=2.0, qa=0.25, itc=1.0),
    },
    'mlm_only': {**OLD_DEFAULTS, **weights(mlm=1.0), 'best_metric': ''},
    'hard_only': {**OLD_DEFAULTS, 'model.contrastive_dim': 64, 'itm_negatives': 'hard'},
    'lr_3e-4': {**OLD_DEFAULTS, 'optimizer.learning_rate': 3e-4},
    'lr_2e-3': {**OLD_DEFAULTS, 'optimizer.learning_rate': 2e-3},
    'warmup_20': {**OLD_DEFAULTS, 'optimizer.warmup_steps': 20},
    'region_norm': {**OLD_DEFAULTS, 'model.region_norm': 'layer_norm'},
}
LEAVES_CHANCE = 0.6


def set_key(config: ml_collections.ConfigDict, key: str, value) -> None:
    *parents, last = key.split('.')
    for part in parents:
        config = config[part]
    config[last] = value


def variant_config(
    name: str, steps: int, eval_every: int, seed: int, extra: dict | None = None
) -> ml_collections.ConfigDict:
    config = demo.get_config()
    for key, value in {**VARIANTS[name], **(extra or {})}.items():
        set_key(config, key, value)
    if steps:
        config.total_steps = steps
    config.seed = seed
    config.eval_every = eval_every
    config.checkpoint_every = config.total_steps
    config.diagnostics = True
    return config


def parse_sets(pairs: list[str]) -> dict:
    """['optimizer.learning_rate=2e-3', ...] -> {key: value} (values read as Python literals)."""
    out = {}
    for pair in pairs:
        key, _, value = pair.partition('=')
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def run(name: str, args) -> dict:
    extra = parse_sets(args.set)
    suffix = ''.join(f'_{k.rsplit(".", 1)[-1]}={v}' for k, v in extra.items())
    workdir = pathlib.Path(args.out) / f'{name}{suffix}_seed{args.seed}'
    config = variant_config(name, args.steps, args.eval_every, args.seed, extra)
    final = workdir / 'metrics.json'
    wall = None
    if not final.exists():
        start = time.perf_counter()
        train.train_and_evaluate(config, str(workdir))
        wall = time.perf_counter() - start
        (workdir / 'wall_seconds.txt').write_text(f'{wall:.1f}\n')
    elif (workdir / 'wall_seconds.txt').exists():
        wall = float((workdir / 'wall_seconds.txt').read_text())
    history = read_history(workdir / 'eval_history.jsonl')
    return {'name': name + suffix, 'steps': config.total_steps, 'wall_s': wall, 'history': history}


def first_step_at(history: list[dict], key: str, level: float) -> int | None:
    return next((h['step'] for h in history if h.get(key, 0) >= level), None)


def report(result: dict) -> list[str]:
    history = result['history']
    start, end = history[0], history[-1]
    wall = f'{result["wall_s"]:.0f} s' if result['wall_s'] else '?'
    lines = [f'{result["name"]}: {result["steps"]} steps, {wall}']
    for mode in ('single', 'two'):
        prefix = f'val/{mode}/'
        if prefix + 'itm_accuracy' not in end:
            continue

        def metric(h: dict, m: str, prefix=prefix) -> float:
            return h.get(prefix + m, float('nan'))

        layers = sorted(
            int(k.rsplit('_l', 1)[1])
            for k in end
            if k.startswith(prefix + 'diag_image_attention_entropy_l')
        )
        top = layers[-1] if layers else 0
        looks = (
            f'text->image mass l{top} {metric(end, f"diag_text_to_image_attention_l{top}"):.3f}'
            if mode == 'single'
            else f'cross update l{top} {metric(end, f"diag_cross_update_l{top}"):.3f}'
        )
        lines.append(
            f'  {mode:<6} itm {metric(start, "itm_accuracy"):.3f}->{metric(end, "itm_accuracy"):.3f}'
            f'  mlm {metric(start, "mlm_accuracy"):.3f}->{metric(end, "mlm_accuracy"):.3f}'
            f'  mop {metric(start, "mop_object_accuracy"):.3f}->'
            f'{metric(end, "mop_object_accuracy"):.3f}'
            f'  itm>={LEAVES_CHANCE} at {first_step_at(history, prefix + "itm_accuracy", LEAVES_CHANCE)}'
            f'  logit change {metric(start, "diag_itm_logit_change"):.2f}->'
            f'{metric(end, "diag_itm_logit_change"):.2f}'
            f'  {looks}  entropy l{top} {metric(end, f"diag_image_attention_entropy_l{top}"):.3f}'
        )
        grads = sorted(
            k[len(prefix + 'diag_grad_') :] for k in end if k.startswith(prefix + 'diag_grad_')
        )
        if grads:
            shares = ' '.join(
                f'{g} {metric(start, "diag_grad_" + g):.1f}->{metric(end, "diag_grad_" + g):.1f}'
                for g in grads
            )
            lines.append(f'         gradient norm on the shared parameters  {shares}')
        curve = ' '.join(f'{h["step"]}:{metric(h, "itm_accuracy"):.2f}' for h in history)
        lines.append(f'         itm by step  {curve}')
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True)
    parser.add_argument('--variants', default='old_defaults,demo')
    parser.add_argument('--steps', type=int, default=0, help='0: the variant config total_steps')
    parser.add_argument('--eval_every', type=int, default=100)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--set', action='append', default=[], help='KEY=VALUE on top of every variant'
    )
    args = parser.parse_args()
    show_progress()
    names = args.variants.split(',')
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f'unknown variants {unknown}; known: {sorted(VARIANTS)}')
    peak = measured_peak_flops('float32', repeats=20) / 1e9
    results = [run(name, args) for name in names]
    print(f'measured f32 matmul peak: {peak:.0f} GFLOP/s')
    for result in results:
        print('\n'.join(report(result)))
    summary = pathlib.Path(args.out) / f'summary_seed{args.seed}.json'
    summary.write_text(json.dumps({'peak_gflops': peak, 'runs': results}, indent=1))


if __name__ == '__main__':
    main()
