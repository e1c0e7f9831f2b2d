"""How long a SIGTERM takes to become a checkpoint on disk (a spot VM's notice is ~30 s).

    python benchmarks/preemption.py --size demo --out /tmp/preempt
    python benchmarks/preemption.py --size base --out /tmp/preempt   # BERT-base width and depth

Starts `python -m semvlp_jax.main` on the demo config (logging every step, no periodic
checkpoints), sends SIGTERM once `--after` steps are logged, and prints: the step time, the last
step logged before the signal, the step saved, signal -> checkpoint complete on disk (its step
directory renamed into place), and signal -> exit. The trainer keeps at most two steps in flight,
so the save should come within two step times plus one save.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

SIZES = {
    'demo': [],
    # BERT-base's encoder (12 layers, 768 wide, 12 heads, 3072 MLP) at a batch a CPU steps
    # through in seconds.
    'base': [
        '--config.model.num_layers=12',
        '--config.model.num_cross_layers=6',
        '--config.model.hidden_size=768',
        '--config.model.num_heads=12',
        '--config.model.mlp_size=3072',
        '--config.batch_size=8',
        '--config.data.num_val=8',
    ],
}


def logged_steps(workdir: pathlib.Path) -> list[int]:
    try:
        lines = (workdir / 'train_history.jsonl').read_text().splitlines()
    except FileNotFoundError:
        return []
    steps = []
    for line in lines:
        try:
            steps.append(json.loads(line)['step'])
        except ValueError:  # a line being written
            break
    return steps


def saved_steps(workdir: pathlib.Path) -> list[int]:
    directory = workdir / 'checkpoints'
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def measure(size: str, workdir: pathlib.Path, after: int, total: int) -> dict:
    shutil.rmtree(workdir, ignore_errors=True)
    command = [
        sys.executable,
        '-m',
        'semvlp_jax.main',
        '--config',
        str(ROOT / 'configs' / 'demo.py'),
        '--workdir',
        str(workdir),
        f'--config.total_steps={total}',
        '--config.log_every=1',
        f'--config.checkpoint_every={total}',
        f'--config.eval_every={total}',
        '--config.eval_batches=1',
        '--config.data.num_val=64',
        *SIZES[size],
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    seen: dict[int, float] = {}  # step -> when its history line was first seen
    while process.poll() is None:
        for step in logged_steps(workdir):
            seen.setdefault(step, time.perf_counter())
        if seen and max(seen) >= after:
            break
        time.sleep(0.005)
    if process.poll() is not None:
        raise RuntimeError(f'the run ended before step {after}:\n{process.stderr.read()[-3000:]}')
    logged_before = max(seen)
    signalled = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    saved_at = None
    while process.poll() is None or saved_at is None:
        if saved_at is None and saved_steps(workdir):
            saved_at = time.perf_counter()
        if process.poll() is not None and saved_at is None:
            saved_at = time.perf_counter() if saved_steps(workdir) else float('nan')
            break
        time.sleep(0.005)
    process.wait()
    exited = time.perf_counter()
    times = [seen[s] for s in sorted(seen)]
    step_time = statistics.median(b - a for a, b in zip(times[1:], times[2:]))
    saved = saved_steps(workdir)
    return {
        'size': size,
        'exit_code': process.returncode,
        'step_time_s': step_time,
        'logged_before_signal': logged_before,
        'saved_step': saved[-1] if saved else None,
        'signal_to_checkpoint_s': saved_at - signalled,
        'signal_to_exit_s': exited - signalled,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--size', choices=sorted(SIZES), default='demo')
    parser.add_argument('--out', default='/tmp/semvlp_preemption')
    parser.add_argument('--after', type=int, default=None, help='steps logged before SIGTERM')
    args = parser.parse_args()
    after = args.after or (60 if args.size == 'demo' else 6)
    result = measure(args.size, pathlib.Path(args.out) / args.size, after, total=after + 400)
    print(json.dumps(result, indent=2))
    bound = 2 * result['step_time_s']
    print(
        f'{args.size}: step {result["step_time_s"]:.3f} s; logged {result["logged_before_signal"]} '
        f'before the signal, saved {result["saved_step"]} '
        f'({result["saved_step"] - result["logged_before_signal"]} steps past); signal -> '
        f'checkpoint {result["signal_to_checkpoint_s"]:.2f} s (two steps: {bound:.2f} s, so '
        f'{result["signal_to_checkpoint_s"] - bound:.2f} s for the save), signal -> exit '
        f'{result["signal_to_exit_s"]:.2f} s; exit code {result["exit_code"]}'
    )


if __name__ == '__main__':
    main()
