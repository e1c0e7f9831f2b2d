r"""Does pre-training transfer? Each demo task fine-tuned on a tenth of its labelled set, from the
demo's pre-training and from scratch, over several seeds.

    python benchmarks/transfer.py --out /tmp/transfer
    python benchmarks/transfer.py --out /tmp/transfer --seeds 0,1,2 --steps 300 --fraction 0.1

Pre-trains `configs/demo.py` once (schedule `alternate`, as shipped), then fine-tunes each task
(`configs/finetune_<task>.py`, two-stream) with `task.train_examples` set to `--fraction` of the
task's synthetic training set, for `--steps` steps, per seed, from the pre-trained run and
from scratch (`init=`). Prints per task the validation score's mean, spread (sample standard
deviation) and range over the seeds for both, and the mean difference. Runs are command-line
runs sharing one XLA compilation cache; a run whose workdir holds metrics.json is read back,
not rerun. Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configs import finetune_gqa, finetune_nlvr2, finetune_retrieval, finetune_vqa  # noqa: E402
from semvlp_jax.data import synthetic, synthetic_tasks  # noqa: E402

CONFIGS = {
    'vqa': finetune_vqa,
    'gqa': finetune_gqa,
    'nlvr2': finetune_nlvr2,
    'retrieval': finetune_retrieval,
}
SCORE = {
    'vqa': 'vqa_accuracy',
    'gqa': 'gqa_accuracy',
    'nlvr2': 'nlvr2_accuracy',
    'retrieval': 'retrieval_rsum',
}


def labelled_set_size(task: str) -> int:
    """Training elements of the task's synthetic set (records; retrieval: images)."""
    data = CONFIGS[task].get_config('init=').data
    scenes = synthetic.SyntheticScenes(
        synthetic.SyntheticConfig.from_data(data), 'train', data.num_train
    )
    if task == 'vqa':
        return len(synthetic_tasks.vqa(scenes))
    if task == 'gqa':
        return len(synthetic_tasks.gqa(scenes))
    if task == 'nlvr2':
        return len(synthetic_tasks.nlvr2(scenes, data.seed))
    return len(scenes)


def run(workdir: pathlib.Path, config: str, overrides: list[str], env: dict) -> dict:
    final = workdir / 'metrics.json'
    if not final.exists():
        command = [sys.executable, '-m', 'semvlp_jax.main', '--config', config]
        command += ['--workdir', str(workdir), *overrides]
        start = time.perf_counter()
        log = workdir.with_suffix('.log')
        with open(log, 'w') as out:
            done = subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        if done.returncode:
            raise SystemExit(f'{workdir.name} failed (exit {done.returncode}); see {log}')
        print(f'{workdir.name}: {time.perf_counter() - start:.0f} s', flush=True)
    return json.loads(final.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True)
    parser.add_argument('--tasks', default='vqa,gqa,nlvr2,retrieval')
    parser.add_argument('--seeds', default='0,1,2')
    parser.add_argument('--steps', type=int, default=300)
    parser.add_argument('--fraction', type=float, default=0.1)
    parser.add_argument('--mode', default='two', choices=('single', 'two'))
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(out / 'jax_cache'))
    pretrained = out / 'pretrain'
    run(pretrained, str(ROOT / 'configs/demo.py'), [], env)
    seeds = [int(s) for s in args.seeds.split(',')]
    steps = args.steps
    short = [f'--config.total_steps={steps}', f'--config.eval_every={steps}']
    short += [f'--config.checkpoint_every={steps}']
    rows = []
    for task in args.tasks.split(','):
        budget = max(1, round(args.fraction * labelled_set_size(task)))
        scores = {}
        for init, path in (('scratch', ''), ('pretrained', str(pretrained))):
            scores[init] = []
            for seed in seeds:
                config = f'{ROOT}/configs/finetune_{task}.py:init={path},mode={args.mode}'
                overrides = [*short, f'--config.seed={seed}']
                overrides += [f'--config.task.train_examples={budget}']
                workdir = out / f'{task}_{init}_seed{seed}'
                metrics = run(workdir, config, overrides, env)
                scores[init].append(metrics[f'val/{args.mode}/{SCORE[task]}'])
        rows.append((task, budget, scores))

    print(f'\n{args.fraction:.0%} of each labelled set, {steps} steps, seeds {seeds}, {args.mode}')
    print(f'{"task":<10}{"budget":>7}  {"scratch":<30}{"pretrained":<30}{"difference":>10}')
    for task, budget, scores in rows:
        cells = []
        for init in ('scratch', 'pretrained'):
            s = np.array(scores[init])
            spread = s.std(ddof=1) if len(s) > 1 else 0.0
            cells.append(f'{s.mean():.3f} ± {spread:.3f} [{s.min():.3f}, {s.max():.3f}]')
        difference = np.mean(scores['pretrained']) - np.mean(scores['scratch'])
        print(f'{task:<10}{budget:>7}  {cells[0]:<30}{cells[1]:<30}{difference:>+10.3f}')
    (out / 'summary.json').write_text(json.dumps(rows, indent=1))


if __name__ == '__main__':
    main()
