"""Where the text looks in the image: attention from text tokens to regions, drawn on the scene.

For validation example N of a run on the synthetic scenes (the scene and the text the
pre-training evaluator pairs at index N: a caption, or a question when the evaluator drew one),
the model reads the scene's regions and the text *without* the evaluation's MLM / MOP masks, and
the last layer's attention of the chosen text tokens is read in each mode:

- single-stream: the joint self-attention of layer L-1 with the text tokens as queries, keeping
  the image keys and renormalising each (head, query) row over the real regions;
- two-stream: the text->image cross-attention of the last cross layer (also layer L-1: the
  cross layers are the top K), whose rows are over the real regions already.

A region's weight is the mean of those rows over heads and chosen queries, so the weights of the
real regions sum to 1 (`region_weights`). The chosen queries are, by default, every word token of
the text ([CLS], [SEP] and padding left out); `words` picks the tokens that spell given words.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping, Sequence

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from flax import nnx
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from semvlp_jax.data import pipeline, synthetic
from semvlp_jax.data.tokenizers import Tokenizer
from semvlp_jax.inference import TrainedRun
from semvlp_jax.plots.render import save_png

# Side of the rendered scene in pixels (the scenes are drawn at any size from their boxes).
IMAGE_SIZE = 256
# Opacity of the dark veil over what the text does not attend to.
VEIL = 0.65
PANEL_TITLES = {
    'single': 'single-stream: joint self-attention',
    'two': 'two-stream: text→image cross-attention',
}


@dataclasses.dataclass(frozen=True)
class ValidationExample:
    """Validation example `index`: the evaluator's pairing, and the model's unmasked input."""

    index: int
    text: str  # the caption or question the evaluator pairs with the scene
    is_question: bool
    pixels: np.ndarray  # uint8 [IMAGE_SIZE, IMAGE_SIZE, 3], the rendered scene
    # text_ids, text_mask, region_features, region_boxes, region_mask: one example, unmasked
    inputs: dict[str, np.ndarray]
    evaluated: dict[str, np.ndarray]  # the example as the evaluator reads it (masked)
    tokens: list[str]  # a label per text position ('' for padding)
    region_names: list[str]  # 'red circle' per real region, in row order

    @property
    def num_regions(self) -> int:
        return int(self.inputs['region_mask'].sum())


class _Recorded:
    """The text a `SceneExample` pairs with a scene, noted as it builds the example."""

    def __init__(self, make):
        self.make, self.seen = make, {}

    def __call__(self, text, scores, is_question, image, image_key, rng):
        self.seen.update(text=text, is_question=bool(is_question))
        return self.make(text, scores, is_question, image, image_key, rng)


def validation_example(
    config: ml_collections.ConfigDict,
    tokenizer: Tokenizer,
    index: int,
    image_size: int = IMAGE_SIZE,
) -> ValidationExample:
    """Validation example `index` of a run on the synthetic scenes, made as
    `pipeline.synthetic_pretraining` makes the evaluator's validation batches (row `index` of
    their concatenation): the same scene, the same text, the same masks."""
    data = config.data
    if data.name != 'synthetic':
        raise ValueError(
            f'config.data.name={data.name!r}: the attention figure draws the synthetic scenes '
            "(config.data.name='synthetic')"
        )
    if not 0 <= index < data.num_val:
        raise ValueError(f'example {index} out of range: the run has {data.num_val} val scenes')
    scenes = synthetic.SyntheticConfig.from_data(data)
    val_data = pipeline.eval_masking(data)
    to_example = pipeline.SceneExample(
        tokenizer, synthetic.ANSWERS, val_data, pipeline.RegionFields(val_data)
    )
    to_example.make = recorded = _Recorded(to_example.make)
    source = synthetic.SyntheticScenes(scenes, 'val', data.num_val)
    evaluated = grain.MapDataset.source(source).random_map(to_example, seed=config.seed + 1)[index]
    drawn = dataclasses.replace(scenes, render_pixels=True, image_size=image_size)
    scene = synthetic.SyntheticScenes(drawn, 'val', data.num_val)[index]
    text_ids, text_mask = pipeline.TextEncoder(tokenizer, data.max_text_len)(recorded.seen['text'])
    inputs = {
        'text_ids': text_ids,
        'text_mask': text_mask,
        'region_features': scene['region_features'].astype(np.float32),
        'region_boxes': scene['region_boxes'].astype(np.float32),
        'region_mask': scene['region_mask'].astype(np.int32),
    }
    return ValidationExample(
        index=index,
        text=recorded.seen['text'],
        is_question=recorded.seen['is_question'],
        pixels=scene['pixels'],
        inputs=inputs,
        evaluated=evaluated,
        tokens=token_labels(tokenizer, text_ids, text_mask),
        region_names=[
            f'{synthetic.COLOURS[colour]} {synthetic.SHAPES[shape]}'
            for shape, colour, real in zip(
                scene['object_labels'], scene['attribute_labels'], scene['region_mask']
            )
            if real
        ],
    )


def token_labels(tokenizer: Tokenizer, text_ids: np.ndarray, text_mask: np.ndarray) -> list[str]:
    """A label per position: the token's text, '[CLS]' / '[SEP]' for those, '' for padding."""
    special = {tokenizer.cls_id: '[CLS]', tokenizer.sep_id: '[SEP]', tokenizer.mask_id: '[MASK]'}
    return [
        (special.get(int(i)) or tokenizer.decode([int(i)]) or '[UNK]') if real else ''
        for i, real in zip(text_ids, text_mask)
    ]


def query_mask(example: ValidationExample, words: Sequence[str] | None = None) -> np.ndarray:
    """bool [text_len]: the text positions whose attention is drawn. Every real token but [CLS]
    and [SEP] by default; with `words`, the tokens equal to one of them (case-insensitive)."""
    labels = example.tokens
    real = example.inputs['text_mask'].astype(bool)
    words_only = real & ~np.isin(labels, ['[CLS]', '[SEP]', '[MASK]', ''])
    if not words:
        return words_only
    wanted = {w.strip().lower() for w in words if w.strip()}
    chosen = words_only & np.isin([label.lower() for label in labels], sorted(wanted))
    if not chosen.any():
        shown = ' '.join(label for label, word in zip(labels, words_only) if word)
        raise ValueError(
            f'none of the tokens {", ".join(sorted(wanted))} is in the text of example '
            f'{example.index}; its tokens: {shown}'
        )
    return chosen


def text_to_region_attention(model, batch: dict, mode: str) -> dict[str, jax.Array]:
    """The last layer's attention probabilities of every text query over the regions, in `mode`:
    {'probs': [batch, heads, text_len, regions]} (see the module docstring; single-stream rows
    are restricted to the image keys, not renormalised, so they sum to the image share)."""
    text_mask = batch['text_mask']
    text_in = model.text_embeddings(batch['text_ids'], None)
    image_in, image_mask = model.visual_embeddings(batch, model.text_embeddings.token_type, None)
    out = model.encoder(text_in, text_mask, image_in, image_mask, mode=mode, rngs=None)
    last = len(out.text_layers) - 1
    text = out.text_layers[last - 1] if last else text_in  # the input of the last layer
    image = out.image_layers[last - 1] if last else image_in
    layer = model.encoder.layer(last)
    if mode == 'single':
        image_len = image.shape[1]
        x = jnp.concatenate([image, text], axis=1)
        probs, _ = layer.self_attention.inspect(
            x, x, jnp.concatenate([image_mask, text_mask], axis=1)
        )
        probs = probs[:, :, image_len:, :image_len]
    else:
        text = layer.self_attention(text, text, text_mask, None)
        image = layer.self_attention(image, image, image_mask, None)
        probs, _ = layer.cross_attention.text_to_image.inspect(text, image, image_mask)
    return {'probs': probs.astype(jnp.float32)}


def region_weights(probs: np.ndarray, region_mask: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Per-region weights [regions] of one example: probs [heads, text_len, regions] with each
    (head, query) row renormalised over the real regions (region_mask [regions]), averaged over
    heads and the chosen queries (queries bool [text_len]). Real regions' weights sum to 1;
    padding regions get 0."""
    probs = np.asarray(probs, np.float64)
    real = np.asarray(region_mask).astype(bool)
    chosen = np.asarray(queries).astype(bool)
    if not chosen.any():
        raise ValueError('no text query chosen')
    within = probs[:, chosen] * real
    within /= np.maximum(within.sum(-1, keepdims=True), 1e-30)
    return within.mean(axis=(0, 1))


def trained_modes(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The modes a run evaluates: those its config gives objectives (as the trainer does)."""
    return tuple(mode for mode, objectives in config.objectives.items() if objectives)


@dataclasses.dataclass(frozen=True)
class Attention:
    """What one attention figure shows."""

    example: ValidationExample
    queries: np.ndarray  # bool [text_len]
    probs: dict[str, np.ndarray]  # mode -> [heads, text_len, regions]
    weights: dict[str, np.ndarray]  # mode -> [regions]
    layer: int  # the layer read (0 is the bottom)

    @property
    def query_tokens(self) -> list[str]:
        return [t for t, chosen in zip(self.example.tokens, self.queries) if chosen]


def attention_of(
    example: ValidationExample,
    probs: Mapping[str, np.ndarray],
    layer: int,
    words: Sequence[str] | None = None,
) -> Attention:
    """`Attention` from each mode's probabilities [heads, text_len, regions] of `example`."""
    queries = query_mask(example, words)
    mask = example.inputs['region_mask']
    weights = {mode: region_weights(p, mask, queries) for mode, p in probs.items()}
    return Attention(example, queries, dict(probs), weights, layer)


def run_attention(
    run: TrainedRun,
    index: int,
    words: Sequence[str] | None = None,
    modes: Sequence[str] | None = None,
    image_size: int = IMAGE_SIZE,
) -> Attention:
    """The attention of a trained run (`inference.TrainedRun.load(workdir)`) on its validation
    example `index`, in `modes` (default: the modes it evaluates)."""
    example = validation_example(run.config, run.tokenizer, index, image_size)
    query_mask(example, words)  # a word not in the text fails before anything compiles
    batch = {key: value[None] for key, value in example.inputs.items()}
    probs = {
        mode: np.asarray(_read_attention(run.params, batch, run.graphdef, mode)['probs'][0])
        for mode in modes or trained_modes(run.config)
    }
    return attention_of(example, probs, run.config.model.num_layers - 1, words)


@functools.partial(jax.jit, static_argnames=('graphdef', 'mode'))
def _read_attention(params, batch, graphdef, mode):
    return text_to_region_attention(nnx.merge(graphdef, params), batch, mode)


def attention_figure(attention: Attention) -> Figure:
    """The scene once per mode under a dark veil that each real region's box lifts in
    proportion to its weight (the heaviest region of the figure fully lit, one scale for every
    panel; the weight written in the box), titled with the text and the chosen tokens."""
    example = attention.example
    modes = list(attention.weights)
    figure = Figure(figsize=(4.2 * len(modes), 5.0), dpi=100, layout='constrained')
    axes = figure.subplots(1, len(modes), squeeze=False)[0]
    boxes = example.inputs['region_boxes']
    real = np.flatnonzero(example.inputs['region_mask'])
    top = max(max(float(w[real].max()), 1e-12) for w in attention.weights.values())
    size = example.pixels.shape[0]
    for ax, mode in zip(axes, modes):
        weights = attention.weights[mode]
        veil = np.zeros((size, size, 4))
        veil[..., 3] = VEIL
        for region in real:
            x1, y1, x2, y2 = (int(round(float(v) * size)) for v in boxes[region])
            veil[y1:y2, x1:x2, 3] = VEIL * (1 - float(weights[region]) / top)
        ax.imshow(example.pixels, extent=(0, 1, 1, 0), interpolation='nearest')
        ax.imshow(veil, extent=(0, 1, 1, 0), interpolation='nearest')
        for region in real:
            x1, y1, x2, y2 = (float(v) for v in boxes[region])
            ax.add_patch(
                Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor='white', linewidth=1)
            )
            ax.text(
                x1 + 0.005,
                y1 + 0.005,
                f'{float(weights[region]):.2f}',
                fontsize=8,
                va='top',
                ha='left',
                bbox=dict(facecolor='white', alpha=0.8, pad=1, edgecolor='none'),
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(1, 0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f'{PANEL_TITLES[mode]}\nlayer {attention.layer}', fontsize=10)
    kind = 'question' if example.is_question else 'caption'
    figure.suptitle(
        f'val {example.index} ({kind}): "{example.text}"\n'
        f'queries: {" ".join(attention.query_tokens)}',
        fontsize=11,
    )
    return figure


def file_name(index: int) -> str:
    return f'attention_val{index}.png'


def write_attention(
    workdir: str | os.PathLike,
    index: int,
    words: Sequence[str] | None = None,
    out: str | os.PathLike | None = None,
    modes: Sequence[str] | None = None,
) -> epath.Path:
    """The attention figure of validation example `index` of the run in `workdir`, written as
    `attention_val<index>.png` to `out` (default WORKDIR/plots/); returns its path."""
    run = TrainedRun.load(workdir)
    attention = run_attention(run, index, words, modes)
    out = epath.Path(out) if out else run.directory / 'plots'
    out.mkdir(parents=True, exist_ok=True)
    return save_png(attention_figure(attention), out / file_name(index))
