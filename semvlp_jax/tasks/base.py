"""What every task gives the trainer, and the machinery tasks share.

A task (pre-training, VQA, GQA, NLVR2, retrieval) turns the config into `TaskData`: the training
batches, the sizes the model takes from the data, and an `evaluate(context, params, step)` that
returns metrics keyed `val/<mode>/<metric>` (and writes whatever files the task's official tools
read). The trainer does not know which task it runs.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
from flax import nnx

from semvlp_jax.data import pipeline, synthetic
from semvlp_jax.data.tokenizers import Tokenizer
from semvlp_jax.models.semvlp import DataDims

Example = dict[str, np.ndarray]
# `fn(model, batch, mode) -> {name: [rows, ...] array}`: what a task reads off the model to score.
PredictFn = Callable[[Any, dict, str], dict[str, jax.Array]]


@dataclasses.dataclass
class TaskData:
    train: Iterator[Example]  # this process's rows of each global training batch
    dims: DataDims
    tokenizer: Tokenizer
    evaluate: Callable[[EvalContext, Any, int], dict[str, float]]


@dataclasses.dataclass(frozen=True)
class Task:
    """A registered task.

    objectives: the objectives its batches can feed (config.objectives may use only these).
    itm_negatives: whether its batches may have images swapped for ITM negatives
      (config.itm_negative_prob > 0); a VQA answer or NLVR2 label no longer holds after a swap.
    build: (config, workdir, process_index, process_count) -> TaskData.
    check: extra config checks, raising ValueError naming the key.
    """

    name: str
    objectives: frozenset[str]
    itm_negatives: bool
    build: Callable[..., TaskData]
    check: Callable[[ml_collections.ConfigDict], None] = lambda config: None


@dataclasses.dataclass
class EvalContext:
    """What evaluation needs from the trainer: the model graph, the devices, and where to write.

    `to_global(local_rows)` makes global arrays from this process's rows; every process must run
    `predict` with the same arguments (it holds collectives), and only the writer writes files.
    """

    config: ml_collections.ConfigDict
    graphdef: nnx.GraphDef
    mesh: jax.sharding.Mesh
    to_global: Callable[[Example], dict[str, jax.Array]]
    workdir: pathlib.Path
    is_writer: bool
    _compiled: dict = dataclasses.field(default_factory=dict)

    @property
    def modes(self) -> tuple[str, ...]:
        """The model modes to evaluate: those the config gives objectives."""
        return tuple(mode for mode, objectives in self.config.objectives.items() if objectives)

    def predict(
        self,
        fn: PredictFn,
        params,
        mode: str,
        count: int,
        rows: Callable[[np.ndarray], Example],
    ) -> dict[str, np.ndarray]:
        """`fn` over rows 0..count-1 in global batches of config.batch_size, sharded over the
        devices; `rows(indices)` builds the numpy rows for some indices. The last batch is padded
        by repeating row 0 and its padding is dropped, so every batch has one shape (one
        compile). Returns each output concatenated over rows, on every process."""
        key = (fn, mode)
        if key not in self._compiled:
            replicated = jax.NamedSharding(self.mesh, jax.P())

            def run(params, batch):
                return fn(nnx.merge(self.graphdef, params), batch, mode)

            self._compiled[key] = jax.jit(run, out_shardings=replicated)
        run = self._compiled[key]
        size = self.config.batch_size
        local = size // jax.process_count()
        first = jax.process_index() * local
        outputs: dict[str, list[np.ndarray]] = {}
        for start in range(0, count, size):
            indices = np.arange(start, start + size)
            indices[indices >= count] = 0
            batch = self.to_global(rows(indices[first : first + local]))
            valid = min(size, count - start)
            for name, value in jax.device_get(run(params, batch)).items():
                outputs.setdefault(name, []).append(np.asarray(value)[:valid])
        return {name: np.concatenate(values) for name, values in outputs.items()}


def stack(examples: Sequence[Example]) -> Example:
    """Examples (dicts of arrays) -> one dict of arrays with a leading example axis."""
    return {key: np.stack([e[key] for e in examples]) for key in examples[0]}


def take(arrays: Example) -> Callable[[np.ndarray], Example]:
    """`rows` for `EvalContext.predict` over pre-stacked arrays."""
    return lambda indices: {key: value[indices] for key, value in arrays.items()}


class SyntheticImages:
    """Region fields by image id for the synthetic scenes of every split (cached once built).

    Image ids encode their split and index (synthetic.IMAGE_ID_STRIDE), like a feature file keyed
    by image id would be read.
    """

    def __init__(self, config: synthetic.SyntheticConfig, sizes: Mapping[str, int]):
        self.scenes = {
            split: pipeline.CachedScenes(synthetic.SyntheticScenes(config, split, size))
            for split, size in sizes.items()
        }

    def __call__(self, image_id: int) -> Example:
        split = synthetic.SPLITS[image_id // synthetic.IMAGE_ID_STRIDE]
        scene = self.scenes[split][image_id % synthetic.IMAGE_ID_STRIDE]
        return {
            'region_features': scene['region_features'].astype(np.float32),
            'region_boxes': scene['region_boxes'].astype(np.float32),
            'region_mask': scene['region_mask'].astype(np.int32),
        }


def tokenizer(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> Tokenizer:
    """The tokenizer of the run being fine-tuned (`config.init_from`), kept in this workdir.

    A fine-tune must read text with its pre-training vocabulary: the word embeddings are indexed
    by it. Synthetic data: the pre-training run's model is copied (trained afresh only when
    starting from scratch). Built data: `config.data.tokenizer.path`, which must be the file the
    pre-training run used when that run kept one.
    """
    synthetic_data = config.data.name == 'synthetic'
    kept = _pretraining_tokenizers(config.init_from) if config.init_from else []
    if synthetic_data:
        path = workdir / 'tokenizer' / 'synthetic.model'
        source = next((k for k in kept if k.name == path.name), None)
        if config.init_from and not path.exists():
            if source is None:
                raise FileNotFoundError(
                    f'config.init_from={config.init_from!r}: no tokenizer/synthetic.model in that '
                    'run directory; a fine-tune must use its pre-training vocabulary'
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, path)
    else:
        given = pathlib.Path(config.data.tokenizer.path)
        if kept and given.is_file() and all(k.read_bytes() != given.read_bytes() for k in kept):
            raise ValueError(
                f'config.data.tokenizer.path={str(given)!r} differs from {kept[0]}, the tokenizer '
                'of the run in config.init_from; a fine-tune must use its pre-training vocabulary'
            )
    return pipeline.tokenizer_of_run(config.data, workdir)


def _pretraining_tokenizers(init_from: str) -> list[pathlib.Path]:
    """The tokenizer files kept by the run in `init_from`, which may name the run, its
    checkpoints/ or one step directory: the tokenizer sits in the run directory."""
    start = pathlib.Path(init_from)
    for directory in (start, *start.parents[:2]):
        if (directory / 'tokenizer').is_dir():
            files = (directory / 'tokenizer').iterdir()
            return sorted(p for p in files if p.is_file() and not p.name.startswith('.'))
    return []


def train_batches(
    records: Sequence[Any],
    to_example: Callable,
    config: ml_collections.ConfigDict,
    process_index: int,
    process_count: int,
) -> Iterator[Example]:
    """Endless shuffled batches of `to_example(record, rng)`: this process's rows of each global
    batch of config.batch_size examples, as in pre-training."""
    size = config.batch_size
    dataset = (
        grain.MapDataset.source(records)
        .shuffle(seed=config.seed)
        .repeat()
        .random_map(to_example, seed=config.seed)
    )
    dataset = pipeline.process_share(dataset, size, process_index, process_count)
    read = grain.ReadOptions(num_threads=config.data.reader_threads, prefetch_buffer_size=4)
    return iter(dataset.batch(size // process_count, drop_remainder=True).to_iter_dataset(read))


def data_dims(config: ml_collections.ConfigDict, tokenizer: Tokenizer, **overrides) -> DataDims:
    """The data's sizes; a task overrides what it changes (answers, images)."""
    built = config.data.name != 'synthetic'
    fields = dict(
        vocab_size=tokenizer.vocab_size,
        max_text_len=config.data.max_text_len,
        visual_feature_dim=config.data.feature_dim,
        num_object_labels=config.data.num_object_labels if built else len(synthetic.SHAPES),
        num_attribute_labels=(
            config.data.num_attribute_labels if built else len(synthetic.COLOURS)
        ),
        num_answers=len(synthetic.ANSWERS),
    )
    return DataDims(**{**fields, **overrides})
