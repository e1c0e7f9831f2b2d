r"""Retrieval evaluation cost: N images x 5N captions with the demo-size model.

    python benchmarks/retrieval_eval.py --images 1000 --shortlist_k 16 --output /tmp/retrieval.json

Times the contrastive embeddings of every image and caption, the ITM re-ranking of the shortlist
(or of all pairs with --shortlist_k 0), and R@K, and reports the pairs scored per second and the
process's peak resident memory. Parameters are freshly initialised: the cost does not depend on
them. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import tempfile
import time

import jax

from configs import finetune_retrieval
from semvlp_jax import tasks, train
from semvlp_jax.data.dims import data_dims
from semvlp_jax.evaluators import retrieval as retrieval_eval
from semvlp_jax.parallel import mesh as mesh_lib
from semvlp_jax.parallel import sharding
from semvlp_jax.tasks import retrieval


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--images', type=int, default=1000)
    parser.add_argument('--shortlist_k', type=int, default=16)
    parser.add_argument('--batch_size', type=int, default=256)
    parser.add_argument('--output', default='retrieval_eval.json')
    args = parser.parse_args()

    config = finetune_retrieval.get_config('init=')
    config.batch_size = args.batch_size
    config.data.update(num_train=args.batch_size, num_val=args.images)
    config.task.update(eval_images=args.images, shortlist_k=args.shortlist_k)
    mesh = mesh_lib.make_mesh(config.mesh)
    workdir = pathlib.Path(tempfile.mkdtemp())
    task = retrieval.Retrieval(config, workdir, 0, 1)
    val = task.validation_examples(task.elements(task.records('val'), 'val'))
    dims = data_dims(config.data, task.tokenizer.vocab_size)
    model, state = train.create_model_and_state(config, dims, mesh)
    batch_sharding = sharding.batch_sharding(mesh)

    def to_global(rows):
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(batch_sharding, x), rows
        )

    context = tasks.EvalContext(config, model.graphdef, mesh, to_global, True)
    retrieval.score_matrices(context, state.params, 'two', val, args.shortlist_k)  # compile
    start = time.perf_counter()
    i2t, t2i = retrieval.score_matrices(context, state.params, 'two', val, args.shortlist_k)
    seconds = time.perf_counter() - start
    recalls = retrieval_eval.recall_at_k(i2t, t2i, val.text_image)
    num_texts = len(val.text_image)
    k = args.shortlist_k
    pairs = args.images * num_texts if not k else args.images * min(k, num_texts) + num_texts * k
    result = {
        'devices': jax.device_count(),
        'backend': jax.default_backend(),
        'images': args.images,
        'captions': num_texts,
        'shortlist_k': k,
        'itm_pairs_scored_at_most': pairs,
        'seconds': seconds,
        'pairs_per_second': pairs / seconds,
        'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        'rsum_untrained': recalls['rsum'],
    }
    print(json.dumps(result))
    pathlib.Path(args.output).write_text(json.dumps(result, indent=1))


if __name__ == '__main__':
    main()
