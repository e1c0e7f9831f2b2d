r"""Pixel input speed: examples/s of 224 px training views with 0, 1, 2, ... input workers.

    python benchmarks/pixel_pipeline.py --workers 0,1,2 --batch_size 256 \
        --output /tmp/pixel_pipeline.json

Encodes --images random 320x240 JPEGs with PIL (no dataset needed), then times the pixel
pre-training input's image work per example: decode the bytes, then the training view of
`pixels.pixel_transform` (RandomResizedCrop, flip, RandAugment 2 / 7 as `configs/built_data.py`
sets them, CLIP normalisation) at --image_size, through a grain MapDataset, batched, and read by
`input_workers.batch_iterator` with each worker count (`config.data.input_workers`). Each count
is timed over --batches batches after one warm-up batch per worker (the workers' start). Random
pixels are harder to decode than photos, and the images here are in memory (copied to every
worker) where built datasets are read from their files: a relative measure, not a test.
"""

from __future__ import annotations

import argparse
import io
import json
import pathlib
import resource
import time

import grain
import ml_collections
import numpy as np
from PIL import Image

from configs import built_data
from semvlp_jax.data import pixels
from semvlp_jax.data.input_workers import batch_iterator


class TrainingView:
    """grain random map: JPEG bytes + rng -> {'pixels': float32 [size, size, 3]}."""

    def __init__(self, transform: pixels.PixelTransform):
        self.transform = transform

    def __call__(self, data: bytes, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {'pixels': self.transform(pixels.decode(data, 'benchmark image'), rng)}


def jpegs(count: int, width: int = 320, height: int = 240) -> list[bytes]:
    rng = np.random.default_rng(0)
    encoded = []
    for _ in range(count):
        # Smooth random colour fields plus noise: closer to a photo's entropy than pure noise.
        coarse = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)
        noisy = np.asarray(image, np.int16) + rng.integers(-20, 21, (height, width, 3))
        out = io.BytesIO()
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(out, format='JPEG', quality=90)
        encoded.append(out.getvalue())
    return encoded


def rate(batches: grain.MapDataset, workers: int, threads: int, count: int) -> dict:
    iterator = batch_iterator(batches, reader_threads=threads, workers=workers)
    try:
        start = time.time()
        for _ in range(max(workers, 1)):  # every worker started and producing
            next(iterator)
        warm_up = time.time() - start
        start = time.time()
        for _ in range(count):
            batch = next(iterator)
        seconds = time.time() - start
    finally:
        iterator.close()
    size = len(batch['pixels'])
    return {
        'input_workers': workers,
        'examples_per_s': count * size / seconds,
        'seconds_per_batch': seconds / count,
        'warm_up_s': warm_up,
        'batch_mb': batch['pixels'].nbytes / 2**20,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--workers', default='0,1,2', help='comma-separated worker counts')
    parser.add_argument('--images', type=int, default=64, help='distinct JPEGs, cycled')
    parser.add_argument('--image_size', type=int, default=224)
    parser.add_argument('--batch_size', type=int, default=256)
    parser.add_argument('--batches', type=int, default=3, help='timed batches per count')
    parser.add_argument('--threads', type=int, default=1, help='reader threads per process')
    parser.add_argument('--output', default='pixel_pipeline.json')
    args = parser.parse_args()

    data = ml_collections.ConfigDict(built_data.data('', ''))  # its augment block
    view = TrainingView(pixels.pixel_transform(data, args.image_size, train=True))
    batches = (
        grain.MapDataset.source(jpegs(args.images))
        .shuffle(seed=0)
        .repeat()
        .random_map(view, seed=0)
        .batch(args.batch_size, drop_remainder=True)
    )
    results = []
    print(f'{"workers":>7} {"examples/s":>10} {"s/batch":>8} {"warm-up s":>9} {"batch MB":>8}')
    for workers in (int(w) for w in args.workers.split(',')):
        row = rate(batches, workers, args.threads, args.batches)
        results.append(row)
        print(
            f'{workers:>7} {row["examples_per_s"]:>10.1f} {row["seconds_per_batch"]:>8.2f} '
            f'{row["warm_up_s"]:>9.1f} {row["batch_mb"]:>8.1f}',
            flush=True,
        )
    result = {
        'image_size': args.image_size,
        'batch_size': args.batch_size,
        'reader_threads': args.threads,
        'source_image': '320x240 JPEG',
        'runs': results,
        'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    pathlib.Path(args.output).write_text(json.dumps(result, indent=1))


if __name__ == '__main__':
    main()
