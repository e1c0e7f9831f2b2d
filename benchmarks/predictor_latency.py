r"""`Predictor.answer` latency (batch 1) and throughput (batch 64), demo and BERT-base-size models.

    python benchmarks/predictor_latency.py

Each model is built with fresh parameters (what is timed does not depend on their values) behind
a `Predictor`, as `Predictor.load` would give it: the demo model (4 layers, 128 hidden, 8
regions of 64-d features, 24 tokens) and a BERT-base-size one (12 layers, 768 hidden, 6 crossing
layers, 36 regions of 2048-d features, 32 tokens, 3129 answers as in VQA v2). It prints the
first call (compile included), the median latency of one question over repeated calls, and
questions/s for batches of 64, in the two-stream mode, with the measured f32 matmul peak of this
machine. Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import jax
import numpy as np
from flax import nnx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from step_throughput import measured_peak_flops  # noqa: E402

from configs import demo  # noqa: E402
from semvlp_jax.data.dims import DataDims  # noqa: E402
from semvlp_jax.data.records import RegionRecord  # noqa: E402
from semvlp_jax.data.vocabularies import run_tokenizer  # noqa: E402
from semvlp_jax.inference import Predictor, TrainedRun  # noqa: E402
from semvlp_jax.models.semvlp import SemVLP  # noqa: E402

SIZES = {
    'demo': dict(model={}, regions=8, features=64, text_len=24, vocab=None, answers=None),
    'bert_base': dict(
        model=dict(num_layers=12, num_cross_layers=6, hidden_size=768, num_heads=12, mlp_size=3072),
        regions=36,
        features=2048,
        text_len=32,
        vocab=30522,
        answers=3129,
    ),
}


def build(name: str, workdir: pathlib.Path) -> Predictor:
    size = SIZES[name]
    config = demo.get_config()
    config.model.update(size['model'])
    config.data.update(num_regions=size['regions'], feature_dim=size['features'])
    config.schedule = 'two'
    tokenizer = run_tokenizer(config.data, workdir)  # the synthetic words: questions to encode
    answers = [f'answer {i}' for i in range(size['answers'] or 8)]
    dims = DataDims(
        vocab_size=size['vocab'] or tokenizer.vocab_size,
        max_text_len=size['text_len'],
        visual_feature_dim=size['features'],
        num_object_labels=1600,
        num_attribute_labels=400,
        num_answers=len(answers),
    )
    model = SemVLP(config.model, dims, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    run = TrainedRun(
        workdir, 0, config, dims, graphdef, nnx.to_pure_dict(params), tokenizer, answers
    )
    return Predictor(run)


def image(rng: np.random.Generator, regions: int, features: int) -> RegionRecord:
    corners = np.sort(rng.random((regions, 2, 2)), axis=1).transpose(0, 2, 1).reshape(regions, 4)
    labels = np.full(regions, -1, np.int32)
    return RegionRecord(
        'bench',
        1,
        1,
        rng.normal(size=(regions, features)).astype(np.float32),
        corners,
        labels,
        labels,
    )


def measure(name: str, repeats: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as workdir:
        predictor = build(name, pathlib.Path(workdir))
        size, rng = SIZES[name], np.random.default_rng(0)
        images = [image(rng, size['regions'], size['features']) for _ in range(64)]
        question = 'how many red circles are there in the image?'
        start = time.perf_counter()
        predictor.answer(images[0], question)
        first = time.perf_counter() - start
        latencies = []
        for i in range(repeats):
            start = time.perf_counter()
            predictor.answer(images[i % 64], question)
            latencies.append(time.perf_counter() - start)
        predictor.answer_batch(images, [question] * 64)  # compiles the batch-64 program
        start = time.perf_counter()
        batches = max(repeats // 10, 2)
        for _ in range(batches):
            predictor.answer_batch(images, [question] * 64)
        throughput = 64 * batches / (time.perf_counter() - start)
    return {
        'first_call_s': first,
        'latency_ms': 1000 * statistics.median(latencies),
        'questions_per_s': throughput,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--sizes', nargs='+', default=list(SIZES), choices=list(SIZES))
    args = parser.parse_args()
    peak = measured_peak_flops('float32', repeats=20)
    print(
        f'{jax.default_backend()} ({jax.device_count()} devices), f32 matmul peak {peak / 1e9:.0f} GFLOP/s'
    )
    print(f'{"model":<10} {"first call":>11} {"batch 1 latency":>16} {"batch 64":>14}')
    for name in args.sizes:
        m = measure(name, args.repeats)
        print(
            f'{name:<10} {m["first_call_s"]:>10.1f}s {m["latency_ms"]:>13.1f} ms '
            f'{m["questions_per_s"]:>9.0f} q/s',
            flush=True,
        )


if __name__ == '__main__':
    main()
