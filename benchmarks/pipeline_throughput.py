r"""Input pipeline speed on built region features: examples/s of pre-training batches.

    python benchmarks/pipeline_throughput.py --images 1000 --batch_size 256 --threads 2 \
        --output /tmp/pipeline.json

Writes a bottom-up-attention TSV of N images x 36 boxes x 2048 features (random values, the
real layout and size), Karpathy captions (5 per image) and VQA v2 questions (3 per image), builds
them with the builders, and times `built_pretraining` (region join, tokenising, MLM and MOP
masking, batching) at the given global batch, over --batches batches after two warm-up ones.
Also reports the build rates and peak resident memory. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import sys
import tempfile
import time

import ml_collections
import numpy as np

from configs import built_data
from semvlp_jax.data import builders, pipeline
from semvlp_jax.data.image_index import ImageIndex
from semvlp_jax.data.tokenizers import SentencePieceTokenizer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'tests'))
import raw_files  # noqa: E402  (the tests' writers of the real formats)

WORDS = ('red', 'green', 'blue', 'man', 'dog', 'table', 'street', 'holding', 'near', 'two')


def write_raw(root: pathlib.Path, num_images: int, boxes: int, dim: int) -> None:
    rng = np.random.default_rng(0)
    names = [f'COCO_train2014_{n:012d}' for n in range(1, num_images + 1)]
    with open(root / 'features' / 'train_obj36.tsv', 'w') as out:
        for i, name in enumerate(names):
            image = raw_files.RegionImage.random(name, boxes, dim, 480, 640, seed=i)
            out.write('\t'.join(raw_files.region_tsv_fields(image)) + '\n')

    def sentence():
        return ' '.join(rng.choice(WORDS, 8))

    # Karpathy files always hold val and test images: the last two here.
    splits = ['train'] * (num_images - 2) + ['val', 'test']
    karpathy = [(f'{n}.jpg', s, [sentence() for _ in range(5)]) for n, s in zip(names, splits)]
    raw_files.write_karpathy(root / 'karpathy' / 'dataset_coco.json', karpathy)
    questions, annotations = [], []
    for n in range(1, num_images + 1):
        for q in range(3):
            questions.append(raw_files.vqa_question(n * 10 + q, n, sentence() + '?'))
            annotations.append(raw_files.vqa_annotation(n * 10 + q, n, ['yes'] * 6 + ['no'] * 4))
    raw_files.write_vqa(root / 'vqa', 'train2014', questions, annotations)
    raw_files.write_vqa(root / 'vqa', 'val2014', questions[:300], annotations[:300])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--images', type=int, default=1000)
    parser.add_argument('--boxes', type=int, default=36)
    parser.add_argument('--dim', type=int, default=2048)
    parser.add_argument('--batch_size', type=int, default=256)
    parser.add_argument('--batches', type=int, default=20)
    parser.add_argument('--threads', type=int, default=2, help='grain reader threads')
    parser.add_argument('--output', default='pipeline_throughput.json')
    args = parser.parse_args()

    root = pathlib.Path(tempfile.mkdtemp(prefix='semvlp_pipeline_'))
    for folder in ('features', 'karpathy', 'vqa'):
        (root / folder).mkdir()
    write_raw(root, args.images, args.boxes, args.dim)
    data_dir = root / 'data'
    rates = {}
    start = time.time()
    builders.builder_class('region_tsv')(data_dir=data_dir).build(root / 'features')
    rates['region_tsv_images_per_s'] = args.images / (time.time() - start)
    index = ImageIndex.read(builders.open_dataset('region_tsv', data_dir).data_dir)
    for name, folder in (('karpathy', 'karpathy'), ('vqa_v2', 'vqa')):
        start = time.time()
        report = builders.builder_class(name)(data_dir=data_dir, image_index=index).build(
            root / folder
        )
        rates[f'{name}_records_per_s'] = sum(report.written.values()) / (time.time() - start)
    SentencePieceTokenizer.train(WORDS + ('?',), root / 'spm.model', vocab_size=64)

    data = ml_collections.ConfigDict(
        built_data.data(
            str(data_dir),
            str(root / 'spm.model'),
            feature_dim=args.dim,
            num_regions=args.boxes,
            reader_threads=args.threads,
            sources=dict(
                karpathy=dict(split='train', val_split='val', weight=0.7),
                vqa_v2=dict(split='train', val_split='val', weight=0.3),
            ),
        )
    )
    pipe = pipeline.built_pretraining(
        data, root / 'workdir', batch_size=args.batch_size, seed=0, eval_examples=1
    )
    for _ in range(2):
        next(pipe.train)
    start = time.time()
    for _ in range(args.batches):
        batch = next(pipe.train)
    seconds = time.time() - start
    result = {
        'examples_per_s': args.batches * args.batch_size / seconds,
        'batch_size': args.batch_size,
        'reader_threads': args.threads,
        'regions': args.boxes,
        'feature_dim': args.dim,
        'batch_mb': sum(v.nbytes for v in batch.values()) / 2**20,
        **rates,
        'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(result))
    pathlib.Path(args.output).write_text(json.dumps(result, indent=1))


if __name__ == '__main__':
    main()
