r"""The SIMLA demo's figures, and what each of its five objectives adds: the issue-17 benchmark.

    python benchmarks/simla_demo.py --workdir /tmp/simla_bench --output /tmp/simla_bench.json
    python benchmarks/simla_demo.py --workdir /tmp/simla_bench --only full,psl --steps 100
    python benchmarks/simla_demo.py --workdir /tmp/simla_check --only full,psl --steps 10 \
        --eval_batches 1 --retrieval_images 20   # a smoke check of the script, minutes on a CPU

Pre-trains `configs/simla_demo.py` as shipped (run `full`) and once more without each objective
of `config.objectives.fuse` (run `<objective>`: itc_momentum, itm_hard, xmm_text, xmm_image,
psl; without itc_momentum the queues go too, they hold its features), every run with the same
`--steps` budget and seed, in this process. Then, on each run's final checkpoint:
- validation ITC / ITM / XMM-text / XMM-image accuracy and teacher-keyword precision
  (`psl_precision`: the concept head's top-5 words that are the teacher's keywords of the
  caption), the trainer's final evaluation;
- keyword precision against the scene's true object words: the share of the concept head's
  top-5 words, predicted from the image alone, that are a shape or colour word of the scene's
  objects (shapes singular or plural, as captions count them), over the same validation
  batches; printed with the same measure for two priors that ignore the image (the 5 most
  frequent caption tokens; the 5 most frequent object words) and its ceiling (a scene with few
  object words cannot fill 5);
- zero-shot retrieval R@1 (text->image, image->text) of the pre-trained run on the first
  `--retrieval_images` validation images, 5 captions each, ranked as the retrieval task does
  (`tasks/retrieval.py`: ITC shortlist, its top `shortlist_k` re-ranked by ITM, fuse mode), and
  by ITC alone. No fine-tuning step runs.
A figure that reads a head no objective of the run trains (ITM re-ranking without itm_hard, the
concept head without psl) prints '-', as does a metric the run does not compute. Wall time is
the trainer's (compilation and the start and end evaluations included), with the machine's
measured f32 matmul peak. Runs whose workdir holds metrics.json are read back, not retrained.
Not a test: figures depend on the machine and the budget.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # demo_runs, step_throughput
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # configs

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from demo_runs import arguments, eval_context, run_workdir, selected_runs, trained  # noqa: E402
from step_throughput import measured_peak_flops  # noqa: E402

from configs import finetune_retrieval, simla_demo  # noqa: E402
from semvlp_jax.data import pipeline, synthetic  # noqa: E402
from semvlp_jax.evaluators.retrieval import recall_at_k  # noqa: E402
from semvlp_jax.inference import TrainedRun  # noqa: E402
from semvlp_jax.tasks import base, retrieval  # noqa: E402

OBJECTIVES = ('itc_momentum', 'itm_hard', 'xmm_text', 'xmm_image', 'psl')
RUNS = ('full', *OBJECTIVES)  # 'full': the recipe; an objective's name: the recipe without it
TOP_K = 5  # the concept head's top-5, as psl_precision counts
PRIOR_SCENES = 2000  # training scenes whose captions give the image-blind priors
# The heads that only one objective trains: without it, a figure reading the head is '-'.
TRAINED_BY = {'concept_head': 'psl', 'matching_head': 'itm_hard'}
# (column title, final-metrics key or figure name); None values print as '-'.
COLUMNS = (
    ('ITC', 'val/fuse/itc_accuracy'),
    ('ITM', 'val/fuse/itm_accuracy'),
    ('XMM-t', 'val/fuse/xmm_text_accuracy'),
    ('XMM-i', 'val/fuse/xmm_image_accuracy'),
    ('kw-teach', 'val/fuse/psl_precision'),
    ('kw-true', 'true_keyword_precision'),
    ('R@1 t2i', 'rerank_t2i_r1'),
    ('R@1 i2t', 'rerank_i2t_r1'),
    ('ITC t2i', 'itc_t2i_r1'),
    ('ITC i2t', 'itc_i2t_r1'),
)


# ---------------------------------------------------------------- training


def run_config(name: str, steps: int, seed: int, eval_batches: int) -> ml_collections.ConfigDict:
    """`configs/simla_demo.py` without objective `name` ('full': with all), `steps` long (0: the
    demo's), evaluated and checkpointed at the start and end only."""
    config = simla_demo.get_config()
    if name != 'full':
        del config.objectives.fuse[name]
        if name == 'itc_momentum':
            config.momentum.queue_size = 0  # the queues hold itc_momentum's features
    if steps:
        config.total_steps = steps
    config.seed = seed
    config.eval_every = config.checkpoint_every = config.total_steps
    if eval_batches:
        config.eval_batches = eval_batches
    return config


# ---------------------------------------------------------------- evaluation of a trained run


def predict_keywords(model, batch, mode):
    """The concept head's top-k words from the unmasked image's contrastive feature (psl's)."""
    image = {key: value for key, value in batch.items() if key != 'patch_mask'}
    logits = model.concept_head(model.embed_images(image, mode=mode))
    return {'top': jax.lax.top_k(logits, TOP_K)[1]}


def object_word_ids(tokenizer) -> dict[str, frozenset[int]]:
    """Each shape and colour word (and each shape's plural) -> its token ids, specials left out."""
    words = (*synthetic.SHAPES, *synthetic.PLURALS.values(), *synthetic.COLOURS)
    return {w: frozenset(tokenizer.encode(w)) - tokenizer.special_ids for w in words}


def scene_word_ids(scene: dict, word_ids: dict[str, frozenset[int]]) -> frozenset[int]:
    """The token ids of the scene's objects' shape and colour words."""
    real = scene['region_mask'].astype(bool)
    shapes = [synthetic.SHAPES[i] for i in scene['object_labels'][real]]
    colours = [synthetic.COLOURS[i] for i in scene['attribute_labels'][real]]
    words = [*shapes, *(synthetic.PLURALS[s] for s in shapes), *colours]
    return frozenset().union(*(word_ids[w] for w in words))


@dataclasses.dataclass
class KeywordImages:
    """The pre-training validation images (the trainer's eval batches) with their true object
    word ids."""

    pixels: np.ndarray
    true_ids: list[frozenset[int]]

    @classmethod
    def of(cls, config, workdir: pathlib.Path, tokenizer) -> KeywordImages:
        data = pipeline.synthetic_pretraining(
            config.data,
            workdir,
            batch_size=config.batch_size,
            seed=config.seed,
            pixel_input=pipeline.PixelInput.of(config.model),
        )
        val = data.val[: config.eval_batches]
        pixels = np.concatenate([batch['pixels'] for batch in val])
        keys = np.concatenate([batch['image_key'] for batch in val])
        # A synthetic image's key is its image id: the split's offset plus the scene index.
        scenes = synthetic.SyntheticScenes(
            synthetic.SyntheticConfig.from_data(config.data), 'val', config.data.num_val
        )
        offset = synthetic.SPLIT_ID['val'] * synthetic.IMAGE_ID_STRIDE
        word_ids = object_word_ids(tokenizer)
        true_ids = [scene_word_ids(scenes[int(key) - offset], word_ids) for key in keys]
        return cls(pixels, true_ids)

    def precision(self, top: np.ndarray) -> float:
        """Mean share of each image's top words [images, k] (or one list for all) that are its
        object words."""
        top = np.broadcast_to(top, (len(self.true_ids), TOP_K))
        return float(np.mean([np.isin(t, list(ids)).mean() for t, ids in zip(top, self.true_ids)]))

    def ceiling(self) -> float:
        return float(np.mean([min(len(ids), TOP_K) / TOP_K for ids in self.true_ids]))


def true_keyword_precision(context, params, images: KeywordImages) -> float:
    top = context.predict(
        predict_keywords, params, 'fuse', len(images.pixels), base.take({'pixels': images.pixels})
    )['top']
    return images.precision(top)


def image_blind_priors(config, tokenizer) -> dict[str, list[int]]:
    """The TOP_K most frequent caption tokens, and object-word tokens, of the training captions."""
    scenes = synthetic.text_scenes(synthetic.SyntheticConfig.from_data(config.data), PRIOR_SCENES)
    counts = collections.Counter()
    for index in range(len(scenes)):
        for caption in scenes[index]['captions']:
            counts.update(i for i in tokenizer.encode(caption) if i not in tokenizer.special_ids)
    objects = frozenset().union(*object_word_ids(tokenizer).values())
    return {
        'frequent caption tokens': [i for i, _ in counts.most_common(TOP_K)],
        'frequent object words': [i for i, _ in counts.most_common() if i in objects][:TOP_K],
    }


def zero_shot_retrieval(
    context, params, workdir: pathlib.Path, images: int, rerank: bool
) -> dict[str, float | None]:
    """R@1 both ways of the pre-trained run, as fractions: ITC shortlist + ITM re-rank (the
    retrieval task's ranking; None when `rerank` is off) and ITC alone."""
    config = finetune_retrieval.get_config(f'init={workdir},mode=fuse')
    config.task.eval_images = images
    task = retrieval.Retrieval(config, workdir / 'zero_shot_retrieval', 0, 1)
    val = task.validation_examples(task.elements(task.records('val'), 'val'))
    similarity = retrieval.embedding_similarity(context, params, 'fuse', val)
    itc = recall_at_k(similarity.T, similarity, val.text_image, ks=(1,))
    out = {'itc_t2i_r1': itc['t2i_r1'] / 100, 'itc_i2t_r1': itc['i2t_r1'] / 100}
    out.update(rerank_t2i_r1=None, rerank_i2t_r1=None)
    if rerank:
        k = config.task.shortlist_k
        i2t, t2i = retrieval.score_matrices(context, params, 'fuse', val, k, similarity)
        reranked = recall_at_k(i2t, t2i, val.text_image, ks=(1,))
        out.update(rerank_t2i_r1=reranked['t2i_r1'] / 100, rerank_i2t_r1=reranked['i2t_r1'] / 100)
    return out


def measure(name: str, config, workdir: pathlib.Path, args) -> dict:
    metrics, wall = trained(config, workdir)
    run = TrainedRun.load(workdir)
    context, params = eval_context(run)
    images = KeywordImages.of(config, workdir, run.tokenizer)
    trains = lambda head: TRAINED_BY[head] in config.objectives.fuse  # noqa: E731
    figures = {
        'true_keyword_precision': (
            true_keyword_precision(context, params, images) if trains('concept_head') else None
        ),
        **zero_shot_retrieval(
            context, params, workdir, args.retrieval_images, rerank=trains('matching_head')
        ),
    }
    row = {'dropped': 'none' if name == 'full' else name, 'wall_s': wall}
    row.update({key: metrics.get(key, figures.get(key)) for _, key in COLUMNS})
    return {'row': row, 'images': images, 'tokenizer': run.tokenizer, 'config': config}


# ---------------------------------------------------------------- report


def table(rows: list[dict]) -> list[str]:
    def cell(value) -> str:
        return '-' if value is None else f'{value:.3f}'

    head = f'{"dropped":<13}' + ''.join(f'{title:>9}' for title, _ in COLUMNS) + f'{"wall s":>9}'
    lines = [head]
    for row in rows:
        wall = '-' if row['wall_s'] is None else f'{row["wall_s"]:.0f}'
        cells = ''.join(f'{cell(row[key]):>9}' for _, key in COLUMNS)
        lines.append(f'{row["dropped"]:<13}{cells}{wall:>9}')
    return lines


def baseline_lines(first: dict) -> tuple[list[str], dict]:
    tokenizer, images = first['tokenizer'], first['images']
    priors = image_blind_priors(first['config'], tokenizer)
    lines, out = [], {'ceiling': images.ceiling()}
    for prior, ids in priors.items():
        words = ' '.join(tokenizer.decode([i]) for i in ids)
        out[prior] = {'words': words, 'precision': images.precision(np.array(ids))}
        lines.append(
            f'  image-blind prior, the {TOP_K} {prior} ({out[prior]["words"]}): '
            f'{out[prior]["precision"]:.3f}'
        )
    lines.append(f'  ceiling (object words per scene, at most {TOP_K}): {out["ceiling"]:.3f}')
    return lines, out


def main() -> None:
    parser = arguments(__doc__.split('\n\n')[0], '/tmp/simla_bench', RUNS)
    parser.add_argument('--retrieval_images', type=int, default=100)
    args, names = selected_runs(parser, RUNS)
    peak = measured_peak_flops('float32') / 1e9
    results = []
    for name in names:
        config = run_config(name, args.steps, args.seed, args.eval_batches)
        results.append(measure(name, config, run_workdir(args, name, config), args))
    config = results[0]['config']
    print(
        f'\nSIMLA demo, {config.total_steps} steps, seed {args.seed}, {config.eval_batches} '
        f'validation batches of {config.batch_size}; zero-shot retrieval on '
        f'{args.retrieval_images} images x 5 captions; measured f32 matmul peak {peak:.0f} GFLOP/s'
    )
    rows = [result['row'] for result in results]
    print('\n'.join(table(rows)))
    lines, baselines = baseline_lines(results[0])
    print(
        f"kw-teach: share of the concept head's top-{TOP_K} words that are the teacher's keywords "
        f"(psl_precision); kw-true: that are the scene's shape or colour words. kw-true of:"
    )
    print('\n'.join(lines))
    print(
        "R@1: ITC shortlist re-ranked by ITM (the retrieval task's ranking); ITC: embeddings "
        "alone; '-': a head no objective of the run trains, or a metric it does not compute"
    )
    if args.output:
        summary = {'steps': config.total_steps, 'seed': args.seed, 'peak_gflops': peak}
        summary.update(rows=rows, keyword_baselines=baselines)
        pathlib.Path(args.output).write_text(json.dumps(summary, indent=1))


if __name__ == '__main__':
    main()
