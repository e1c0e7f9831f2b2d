r"""The MVPTR demo's figures, and what each of its five objectives adds: the issue-18 benchmark.

    python benchmarks/mvptr_demo.py --workdir /tmp/mvptr_bench --output /tmp/mvptr_bench.json
    python benchmarks/mvptr_demo.py --workdir /tmp/mvptr_bench --only full,wpg --steps 300
    python benchmarks/mvptr_demo.py --workdir /tmp/mvptr_check --only full,wpg --steps 10 \
        --eval_batches 1 --images 20   # a smoke check of the script, minutes on a CPU

Pre-trains `configs/mvptr_demo.py` as shipped (run `full`) and once more without each objective
of `config.objectives.staged` (run `<objective>`: vsc, mcr, mlm, itm_hardest, wpg), every run
with the same `--steps` budget and seed, in this process. Then, on each run's final checkpoint:
- validation VSC / MCR / MLM / ITM / WPG accuracy (the trainer's final evaluation; WPG's is how
  often a caption's phrases score higher on its own image's regions than on another's);
- phrase grounding accuracy: for every phrase of the first `--images` validation images' five
  captions (unmasked, as the run's vocabulary keeps them), whether its most similar region in
  the grounding layer (`concepts.grounding_layer`) is one of its true objects: a region of the
  phrase's head shape (the object of `(shape,)` and `(shape, attribute)`, the subject of a
  relation triple) and, for a colour attribute, of that colour. Printed with the same measure
  for a region picked at random (the share of true regions among the real ones);
- zero-shot retrieval R@1 (text->image, image->text) on the same images, ranked as the
  retrieval task does in the staged mode (`tasks/retrieval.py`: VSC shortlist, its top
  `shortlist_k` re-ranked by ITM on the joint stage's [CLS]), and by VSC alone. No
  fine-tuning step runs.
A figure that reads a head no objective of the run trains (VSC embeddings without vsc, ITM
re-ranking without itm_hardest) prints '-', as does a metric the run does not compute; without
vsc the ITM re-ranking scores every pair (no shortlist). Wall time is the trainer's
(compilation and the start and end evaluations included), with the machine's measured f32
matmul peak. Runs whose workdir holds metrics.json are read back, not retrained. Not a test:
figures depend on the machine and the budget.
"""

from __future__ import annotations

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # demo_runs, step_throughput
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # configs

import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from demo_runs import arguments, eval_context, run_workdir, selected_runs, trained  # noqa: E402
from step_throughput import measured_peak_flops  # noqa: E402

from configs import finetune_retrieval, mvptr_demo  # noqa: E402
from semvlp_jax.data import synthetic  # noqa: E402
from semvlp_jax.evaluators.retrieval import recall_at_k  # noqa: E402
from semvlp_jax.inference import TrainedRun  # noqa: E402
from semvlp_jax.objectives.losses import gather_positions  # noqa: E402
from semvlp_jax.tasks import base, retrieval  # noqa: E402

OBJECTIVES = ('vsc', 'mcr', 'mlm', 'itm_hardest', 'wpg')
RUNS = ('full', *OBJECTIVES)  # 'full': the recipe; an objective's name: the recipe without it
# (column title, final-metrics key or figure name); None values print as '-'.
COLUMNS = (
    ('VSC', 'val/staged/vsc_accuracy'),
    ('MCR', 'val/staged/mcr_accuracy'),
    ('MLM', 'val/staged/mlm_accuracy'),
    ('ITM', 'val/staged/itm_accuracy'),
    ('WPG', 'val/staged/wpg_accuracy'),
    ('ground', 'grounding_accuracy'),
    ('R@1 t2i', 'rerank_t2i_r1'),
    ('R@1 i2t', 'rerank_i2t_r1'),
    ('VSC t2i', 'vsc_t2i_r1'),
    ('VSC i2t', 'vsc_i2t_r1'),
)


def run_config(name: str, steps: int, seed: int, eval_batches: int) -> ml_collections.ConfigDict:
    """`configs/mvptr_demo.py` without objective `name` ('full': with all), `steps` long (0: the
    demo's), evaluated and checkpointed at the start and end only."""
    config = mvptr_demo.get_config()
    if name != 'full':
        del config.objectives.staged[name]
    if name == 'itm_hardest':
        config.best_metric = ''  # its metric is gone
    if steps:
        config.total_steps = steps
    config.seed = seed
    config.eval_every = config.checkpoint_every = config.total_steps
    if eval_batches:
        config.eval_batches = eval_batches
    return config


# ---------------------------------------------------------------- grounding


def predict_groundings(model, batch, mode):
    """Per phrase slot, the most similar real region [rows, P] in the grounding layer, by the
    cosine WPG scores (phrase token against region outputs)."""
    encoded = model(batch, mode=mode)
    layer = model.concepts.grounding_layer
    phrases = gather_positions(encoded.text_layers[layer], batch['phrase_positions'])
    regions = encoded.image_layers[layer][:, : batch['region_mask'].shape[1]]
    unit = lambda x: x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)  # noqa: E731
    cosine = jnp.einsum('bph,brh->bpr', unit(phrases.astype(jnp.float32)), unit(regions))
    cosine = jnp.where(batch['region_mask'].astype(bool)[:, None, :], cosine, -jnp.inf)
    return {'region': jnp.argmax(cosine, axis=-1)}


def true_regions(phrase: tuple[str, ...], scene: dict) -> np.ndarray:
    """bool [regions]: the scene's real regions that are `phrase`'s object (head shape, and
    its colour when the attribute is one)."""
    real = scene['region_mask'].astype(bool)
    match = real & (scene['object_labels'] == synthetic.SHAPES.index(phrase[0]))
    if len(phrase) == 2 and phrase[1] in synthetic.COLOURS:
        match &= scene['attribute_labels'] == synthetic.COLOURS.index(phrase[1])
    return match


def grounding(context, params, task: retrieval.Retrieval, groups) -> dict[str, float]:
    """Phrase grounding accuracy over the captions of `groups`, and the random-region figure."""
    rows, phrase_rows = [], []
    for group in groups:
        image = task.images(group[0].image_id)
        for record in group:
            ids, mask, positions, weights = task.concepts.encode(
                record.caption, record.phrase_tuples
            )
            rows.append(
                {
                    'text_ids': ids,
                    'text_mask': mask,
                    'phrase_positions': positions,
                    'is_question': np.int32(0),
                    **image,
                }
            )
            phrase_rows.append(
                [task.concepts.phrases.phrase(int(ids[p])) for p in positions[weights > 0]]
            )
    picked = context.predict_all(predict_groundings, params, 'staged', base.stack(rows))['region']
    hits, chance, total = 0, 0.0, 0
    scenes = [
        task.images.scenes['val'][int(g[0].image_id) % synthetic.IMAGE_ID_STRIDE] for g in groups
    ]
    row = 0
    for scene, group in zip(scenes, groups):
        for _ in group:
            for slot, phrase in enumerate(phrase_rows[row]):
                truth = true_regions(phrase, scene)
                if not truth.any():
                    continue  # "two red shapes": no region of the scene is that object
                hits += bool(truth[picked[row, slot]])
                chance += truth.sum() / scene['region_mask'].sum()
                total += 1
            row += 1
    return {'grounding_accuracy': hits / total, 'random_region': chance / total, 'phrases': total}


# ---------------------------------------------------------------- retrieval


def zero_shot_retrieval(
    context, params, task: retrieval.Retrieval, val, vsc: bool, rerank: bool
) -> dict[str, float | None]:
    """R@1 both ways of the pre-trained run, as fractions: the retrieval task's ranking (VSC
    shortlist + ITM re-rank; all pairs by ITM without `vsc`; None without `rerank`) and VSC
    alone (None without `vsc`)."""
    out = dict.fromkeys(('vsc_t2i_r1', 'vsc_i2t_r1', 'rerank_t2i_r1', 'rerank_i2t_r1'))
    similarity = None
    if vsc:
        similarity = retrieval.embedding_similarity(context, params, 'staged', val)
        recalls = recall_at_k(similarity.T, similarity, val.text_image, ks=(1,))
        out.update(vsc_t2i_r1=recalls['t2i_r1'] / 100, vsc_i2t_r1=recalls['i2t_r1'] / 100)
    if rerank:
        k = task.config.task.shortlist_k if vsc else 0
        i2t, t2i = retrieval.score_matrices(context, params, 'staged', val, k, similarity)
        recalls = recall_at_k(i2t, t2i, val.text_image, ks=(1,))
        out.update(rerank_t2i_r1=recalls['t2i_r1'] / 100, rerank_i2t_r1=recalls['i2t_r1'] / 100)
    return out


def measure(name: str, config, workdir: pathlib.Path, images: int) -> dict:
    metrics, wall = trained(config, workdir)
    run = TrainedRun.load(workdir)
    context, params = eval_context(run)
    task_config = finetune_retrieval.get_config(f'init={workdir},mode=staged')
    task_config.task.eval_images = images
    task_config.data.update(num_val=config.data.num_val)
    task = retrieval.Retrieval(task_config, workdir / 'zero_shot', 0, 1)
    groups = task.elements(task.records('val'), 'val')
    val = task.validation_examples(groups)
    objectives = config.objectives.staged
    figures = {
        **grounding(context, params, task, groups),
        **zero_shot_retrieval(
            context, params, task, val, 'vsc' in objectives, 'itm_hardest' in objectives
        ),
    }
    row = {'dropped': 'none' if name == 'full' else name, 'wall_s': wall}
    row.update({key: metrics.get(key, figures.get(key)) for _, key in COLUMNS})
    row.update(random_region=figures['random_region'], phrases=figures['phrases'])
    return row


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


def main() -> None:
    parser = arguments(__doc__.split('\n\n')[0], '/tmp/mvptr_bench', RUNS)
    parser.add_argument('--images', type=int, default=100, help='validation images scored')
    args, names = selected_runs(parser, RUNS)
    peak = measured_peak_flops('float32') / 1e9
    rows = []
    for name in names:
        config = run_config(name, args.steps, args.seed, args.eval_batches)
        rows.append(measure(name, config, run_workdir(args, name, config), args.images))
    config = run_config(names[0], args.steps, args.seed, args.eval_batches)
    print(
        f'\nMVPTR demo, {config.total_steps} steps, seed {args.seed}, {config.eval_batches} '
        f'validation batches of {config.batch_size}; grounding and zero-shot retrieval on '
        f'{args.images} images x 5 captions; measured f32 matmul peak {peak:.0f} GFLOP/s'
    )
    print('\n'.join(table(rows)))
    print(
        f'ground: share of {rows[0]["phrases"]} validation phrases whose most similar region '
        f'(grounding layer) is its object; a random region: {rows[0]["random_region"]:.3f}'
    )
    print(
        "R@1: VSC shortlist re-ranked by ITM (the retrieval task's ranking; every pair by ITM "
        "without vsc); VSC: embeddings alone; '-': a head no objective of the run trains"
    )
    if args.output:
        summary = {'steps': config.total_steps, 'seed': args.seed, 'peak_gflops': peak}
        summary.update(rows=rows)
        pathlib.Path(args.output).write_text(json.dumps(summary, indent=1))


if __name__ == '__main__':
    main()
