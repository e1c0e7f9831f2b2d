"""Pure step functions: no I/O, no Python state. Jitted once per (static) step mode by the trainer.

    train_step(state, batch, *, step_mode) -> (state, metrics)
    eval_step(params, batch, rng, *, mode) -> metrics

A step mode ('single', 'two', 'both': both model modes on one batch, 'fuse' or 'staged') picks
what one train step runs; a model mode ('single', 'two', 'fuse' or 'staged') is how the model
encodes
(`SemVLP.__call__`).

The model enters as an NNX graphdef bound with functools.partial; parameters travel as a plain
pytree and are merged into the module inside the step.

With `config.momentum` (SIMLA's recipe) the state also holds the momentum teacher (an EMA copy
of the parameters) and the feature queues: the step runs the teacher on the batch first (its
targets reach the objectives as `encoded.momentum`), and after the update moves the teacher
towards the new parameters and writes the teacher's features of the global batch into the
queues; a skipped step changes neither.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from semvlp_jax import diagnostics
from semvlp_jax import objectives as objectives_lib
from semvlp_jax.objectives.losses import Ratio
from semvlp_jax.optimizer import ModeAwareOptimizer, modes_of
from semvlp_jax.simla import momentum as momentum_lib
from semvlp_jax.simla.queues import FeatureQueues
from semvlp_jax.simla.targets import Momentum, queues_or_empty, teacher_targets

# Fields that belong to the image and move with it when ITM swaps in another image.
FIELDS_SWAPPED_WITH_THE_IMAGE = (
    'region_features',
    'region_boxes',
    'region_mask',
    'mop_positions',
    'mop_features',
    'mop_object_labels',
    'mop_attribute_labels',
    'mop_weights',
    'pixels',
    'patch_mask',
    'patch_positions',
    'patch_weights',
    'tag_ids',
    'tag_mask',
    'mcr_positions',
    'mcr_targets',
    'mcr_weights',
)


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: train steps taken (batches consumed), skipped ones included
    params: Any  # pure pytree of arrays
    opt_state: Any
    rng: jax.Array  # base key; step keys are fold_in(rng, step), so resuming needs no RNG log
    skipped_steps: jax.Array  # int32: steps whose non-finite loss or gradient applied no update
    skipped_in_a_row: jax.Array  # int32: how many of the latest steps were skipped
    teacher: Any = None  # the momentum teacher: a tree like params (config.momentum), or None
    queues: FeatureQueues | None = None  # its feature queues (config.momentum.queue_size > 0)

    @classmethod
    def create(
        cls, params, opt_state, rng, *, teacher: bool = False, queues: FeatureQueues | None = None
    ) -> TrainState:
        zero = jnp.zeros((), jnp.int32)
        return cls(
            zero,
            params,
            opt_state,
            rng,
            skipped_steps=zero,
            skipped_in_a_row=zero,
            teacher=_copy(params) if teacher else None,
            queues=queues,
        )

    def with_params(self, params) -> TrainState:
        """The state with `params` replaced (weights loaded before the first step); a teacher
        starts again as their copy."""
        teacher = None if self.teacher is None else _copy(params)
        return self.replace(params=params, teacher=teacher)


def _copy(tree):
    return jax.tree.map(jnp.copy, tree)


@dataclasses.dataclass(frozen=True)
class MomentumSettings:
    """`config.momentum`: the teacher's EMA decay and the distillation weight's ramp."""

    decay: float = 0.995
    alpha: float = 0.4
    alpha_ramp_steps: int = 0
    queue_size: int = 0

    @classmethod
    def from_config(cls, config) -> MomentumSettings | None:
        settings = config.get('momentum')
        if not settings:
            return None
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dict(settings).items() if k in fields})


def makes_its_own_negatives(objectives: Mapping[str, float]) -> bool:
    """SIMLA's and MVPTR's objectives pair every text with its own image (`itm_hard` and
    `itm_hardest` pick ITM's negatives themselves), so a mode that runs them gets no swapped
    images."""
    return any(objectives_lib.get(name).own_negatives for name in objectives)


def make_itm_pairs(
    batch: Mapping[str, jax.Array],
    rng: jax.Array,
    negative_prob: float,
    scores: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """With probability `negative_prob` per example, pairs its text with another example's image.

    The other image comes from the rest of the *global* batch, never a row showing the same image
    (`image_key`, when the batch has it: two captions of one picture are not a negative pair).
    Without `scores` it is drawn uniformly; with `scores` [batch (texts), batch (images)] it is
    sampled from softmax(scores[i]) over the allowed rows: hard negatives, the images the text is
    most easily confused with (ALBEF). A row with no other image keeps its own. Adds `is_matched`
    [batch] (1 = own image).
    """
    size = batch['text_ids'].shape[0]
    keys = batch.get('image_key', jnp.arange(size))
    allowed = keys[:, None] != keys[None, :]
    swap_rng, pick_rng = jax.random.split(rng)
    logits = jnp.zeros((size, size), jnp.float32) if scores is None else scores
    logits = jnp.where(allowed, jax.lax.stop_gradient(logits.astype(jnp.float32)), -jnp.inf)
    other = jax.random.categorical(pick_rng, logits, axis=-1)
    swap = jax.random.bernoulli(swap_rng, negative_prob, (size,)) & allowed.any(axis=-1)
    source = jnp.where(swap, other, jnp.arange(size))
    paired = dict(batch)
    for field in FIELDS_SWAPPED_WITH_THE_IMAGE:
        if field in batch:
            paired[field] = jnp.take(batch[field], source, axis=0)
    paired['is_matched'] = (~swap).astype(jnp.int32)
    return paired


def contrastive_scores(params, batch, *, graphdef: nnx.GraphDef) -> jax.Array:
    """[texts, images] contrastive logits of the batch's own texts and images (uni-modal pass,
    no dropout): what hard ITM negatives are sampled from."""
    model = nnx.merge(graphdef, params)
    text, image = model.embed_texts(batch), model.embed_images(batch)
    return model.contrastive_head.inverse_temperature() * text @ image.T


def objective_terms(
    params,
    batch,
    rng: jax.Array | None,
    *,
    mode: str,
    graphdef: nnx.GraphDef,
    objectives: Mapping[str, Mapping[str, float]],
    momentum: Momentum | None = None,
    sample_key: jax.Array | None = None,
) -> tuple[dict[str, Ratio], dict[str, Ratio]]:
    """Loss terms (keyed `<objective>/<i>`) and metrics of `mode`'s objectives, as Ratios.

    `rng=None` evaluates without dropout; `momentum` is the teacher's part (SIMLA);
    `sample_key` keys the objectives' own draws (`Encoded.sample_key`).
    """
    model = nnx.merge(graphdef, params)
    encoded = model(batch, mode=mode, rngs=None if rng is None else nnx.Rngs(dropout=rng))
    encoded.momentum = momentum
    encoded.sample_key = sample_key
    terms, metrics = {}, {}
    for name in objectives[mode]:
        losses, extra = objectives_lib.get(name).fn(model, encoded, batch)
        terms.update({f'{name}/{i}': term for i, term in enumerate(losses)})
        metrics.update(extra)
    return terms, metrics


def weighted_loss(
    terms: Mapping[str, Ratio],
    weights: Mapping[str, float],
    counts: Mapping[str, jax.Array] | None = None,
) -> jax.Array:
    """sum over terms of objective weight * total / count.

    `counts` replaces each term's own count: a microbatch divides by the whole batch's count, so
    the microbatch losses add up to the whole batch's loss.
    """
    total = jnp.zeros((), jnp.float32)
    for key, term in terms.items():
        count = term.count if counts is None else counts[key]
        total += weights[key.split('/')[0]] * term.total / jnp.maximum(count, 1e-6)
    return total


def summarise(
    terms: Mapping[str, Ratio], metrics: Mapping[str, Ratio], weights: Mapping[str, float]
) -> dict[str, jax.Array]:
    """Scalar metrics: every metric's value, each objective's loss and the weighted total."""
    out = {key: ratio.value for key, ratio in metrics.items()}
    for name in weights:
        out[f'{name}_loss'] = sum(
            term.value for key, term in terms.items() if key.split('/')[0] == name
        )
    out['loss'] = sum(weight * out[f'{name}_loss'] for name, weight in weights.items())
    return out


def split_microbatches(batch, count: int):
    """[batch, ...] -> [count, batch / count, ...]; microbatch j holds examples j, j + count, ...

    Interleaving keeps every microbatch spread over all the devices that hold the batch.
    """

    def split(x):
        return x.reshape(x.shape[0] // count, count, *x.shape[1:]).swapaxes(0, 1)

    return jax.tree.map(split, batch)


def train_step(
    state: TrainState,
    batch,
    *,
    step_mode: str,
    graphdef: nnx.GraphDef,
    optimizer: ModeAwareOptimizer,
    objectives: Mapping[str, Mapping[str, float]],
    itm_negative_prob: float,
    itm_negatives: str = 'random',
    microbatches: int = 1,
    momentum: MomentumSettings | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One update in step mode `step_mode` ('single', 'two', 'both' or 'fuse').

    With `microbatches` k > 1 the gradient is accumulated over k slices of the batch in a
    `lax.scan`; the update equals one step on the whole batch (except for ITC, whose
    negatives are then the rest of the microbatch, not of the whole batch). A step whose loss or gradient is
    not finite applies no update. `itm_negatives='hard'` samples ITM negatives from the
    contrastive similarities (`make_itm_pairs`). Metrics are keyed `<model mode>/<metric>` (e.g.
    `two/mlm_accuracy`) plus `learning_rate`, `grad_norm`, `skipped` and `skipped_in_a_row`
    (and `distillation_alpha` with a teacher).
    """
    step_key = jax.random.fold_in(state.rng, state.step)
    pair_rng, *dropout_rngs = jax.random.split(step_key, 3)
    modes = modes_of(step_mode)
    scores = None
    if itm_negatives == 'hard':
        scores = contrastive_scores(state.params, batch, graphdef=graphdef)
    if any(makes_its_own_negatives(objectives[m]) for m in modes):
        itm_negative_prob = 0.0
    batch = make_itm_pairs(batch, pair_rng, itm_negative_prob, scores)
    distilled = None
    if state.teacher is not None:
        if microbatches != 1:  # config_checks refuses this first, saying why
            raise ValueError('a momentum teacher needs the whole batch in one microbatch')
        names = [name for m in modes for name in objectives[m]]
        targets = teacher_targets(state.teacher, batch, graphdef=graphdef, names=names)
        distilled = Momentum(
            alpha=momentum_lib.distillation_alpha(
                state.step, momentum.alpha, momentum.alpha_ramp_steps
            ),
            queues=queues_or_empty(state.queues, targets),
            targets=targets,
        )
    sample_key = jax.random.fold_in(step_key, NEGATIVES_STREAM)

    def loss_fn(params, batch, rngs, counts, sample_key=sample_key):
        total, aux = jnp.zeros((), jnp.float32), {}
        for model_mode, rng in zip(modes, rngs):
            terms, metrics = objective_terms(
                params,
                batch,
                rng,
                mode=model_mode,
                graphdef=graphdef,
                objectives=objectives,
                momentum=distilled,
                sample_key=sample_key,
            )
            mode_counts = None if counts is None else counts[model_mode]
            total += weighted_loss(terms, objectives[model_mode], mode_counts)
            aux[model_mode] = (terms, metrics)
        return total, aux

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if microbatches == 1:
        (_, aux), grads = grad_fn(state.params, batch, dropout_rngs, None)
    else:
        # Whole-batch denominators depend on the batch alone, so XLA drops the forward pass here.
        _, whole = loss_fn(state.params, batch, [None] * len(modes), None)
        counts = {m: {k: t.count for k, t in terms.items()} for m, (terms, _) in whole.items()}

        def microbatch_grads(part):
            microbatch, index = part
            # Each microbatch draws afresh: dropout and the objectives' own draws alike.
            rngs = [jax.random.fold_in(rng, index) for rng in dropout_rngs]
            part_key = jax.random.fold_in(sample_key, index)
            (_, aux), grads = grad_fn(state.params, microbatch, rngs, counts, part_key)
            return grads, aux

        def accumulate(carry, part):
            return jax.tree.map(jnp.add, carry, microbatch_grads(part)), None

        parts = (split_microbatches(batch, microbatches), jnp.arange(microbatches))
        shapes = jax.eval_shape(microbatch_grads, jax.tree.map(lambda x: x[0], parts))
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        (grads, aux), _ = jax.lax.scan(accumulate, zeros, parts)

    metrics = {
        f'{model_mode}/{key}': value
        for model_mode, (terms, mode_metrics) in aux.items()
        for key, value in summarise(terms, mode_metrics, objectives[model_mode]).items()
    }
    metrics['learning_rate'] = optimizer.learning_rate(state.step)
    metrics['grad_norm'] = optax.tree.norm(grads)
    metrics.update(
        {f'grad_norm/{g}': n for g, n in diagnostics.parameter_group_norms(grads).items()}
    )
    params, opt_state = optimizer.apply(grads, state.opt_state, state.params, step_mode=step_mode)
    teacher, queues = state.teacher, state.queues
    if distilled is not None:
        metrics['distillation_alpha'] = distilled.alpha
        teacher = momentum_lib.ema_update(teacher, params, momentum.decay)
        if queues is not None:
            features = distilled.targets['itc_momentum']
            queues = queues.enqueue(features['image'], features['text'], batch['image_key'])
    return _update(state, (params, opt_state, teacher, queues), metrics)


# fold_in(step key, this) keys the objectives' own draws (ITM's negatives, grounding picks; the
# step key's splits are older streams).
NEGATIVES_STREAM = 1


def _update(state: TrainState, updated, metrics: dict[str, jax.Array]):
    """The next state: `updated` (params, opt_state, teacher, queues) if the step's losses and
    gradients are finite; otherwise the old ones, with the step counted as skipped. Metrics gain
    `skipped` (0 or 1) and `skipped_in_a_row`."""
    losses = [value for key, value in metrics.items() if key.endswith('/loss')]
    finite = jnp.all(jnp.isfinite(jnp.stack([metrics['grad_norm'], *losses])))
    old = (state.params, state.opt_state, state.teacher, state.queues)
    params, opt_state, teacher, queues = jax.tree.map(
        lambda new, old: jnp.where(finite, new, old), updated, old
    )
    skipped = (~finite).astype(jnp.int32)
    state = state.replace(
        step=state.step + 1,
        params=params,
        opt_state=opt_state,
        teacher=teacher,
        queues=queues,
        skipped_steps=state.skipped_steps + skipped,
        skipped_in_a_row=(state.skipped_in_a_row + 1) * skipped,
    )
    metrics.update(skipped=skipped, skipped_in_a_row=state.skipped_in_a_row)
    return state, metrics


def eval_step(
    params,
    batch,
    rng: jax.Array,
    *,
    mode: str,
    graphdef: nnx.GraphDef,
    objectives: Mapping[str, Mapping[str, float]],
    itm_negative_prob: float,
    with_diagnostics: bool = False,
) -> dict[str, jax.Array]:
    """Metrics of one model mode on one batch, without dropout; `rng` fixes the ITM pairing.
    `with_diagnostics` adds the alignment diagnostics (`diagnostics.alignment`, on the batch's
    own pairs) and, per objective, the norm of its unweighted gradient on the shared parameters
    (`diag_grad_<objective>`): which objective drives the encoder."""
    own_negatives = makes_its_own_negatives(objectives[mode])
    paired = make_itm_pairs(batch, rng, 0.0 if own_negatives else itm_negative_prob)
    distilled = None
    if own_negatives:  # no teacher here: the model is its own, alpha 0, queues empty
        targets = teacher_targets(params, paired, graphdef=graphdef, names=objectives[mode])
        distilled = Momentum(
            alpha=jnp.zeros((), jnp.float32),
            queues=queues_or_empty(None, targets),
            targets=targets,
        )
    sample_key = jax.random.fold_in(rng, NEGATIVES_STREAM)
    terms, metrics = objective_terms(
        params,
        paired,
        None,
        mode=mode,
        graphdef=graphdef,
        objectives=objectives,
        momentum=distilled,
        sample_key=sample_key,
    )
    summary = summarise(terms, metrics, objectives[mode])
    if with_diagnostics:
        if mode in ('single', 'two'):  # the alignment diagnostics read SemVLP's modes' attention
            summary.update(diagnostics.alignment(nnx.merge(graphdef, params), batch, mode))
        for name in objectives[mode]:

            def loss(params, name=name):
                one = {mode: {name: 1.0}}
                terms, _ = objective_terms(
                    params,
                    paired,
                    None,
                    mode=mode,
                    graphdef=graphdef,
                    objectives=one,
                    momentum=distilled,
                    sample_key=sample_key,
                )
                return weighted_loss(terms, one[mode])

            summary[f'diag_grad_{name}'] = diagnostics.shared_gradient_norm(jax.grad(loss)(params))
    return summary
