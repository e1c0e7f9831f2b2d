"""What every task gives the trainer, and the machinery tasks share.

A task (pre-training, VQA, GQA, NLVR2, retrieval) is a small class. `Task.build(config, workdir,
process_index, process_count)` gives the trainer `TaskData`: this process's training batches,
the sizes the model takes from the data, the tokenizer, and `evaluate(context, params, step)`,
which returns metrics keyed `val/<mode>/<metric>` for every evaluated mode. The trainer does not
know which task it runs; it shows each task's `table_metrics` in its start/end table.

A downstream task is a `RecordTask`, a protocol of four parts over the records of its dataset
(`data/records.py`, synthetic or built alike):
  records    `synthetic_records(scenes)` for the embedded data; built data is read by the base
  example    `example(record, rng) -> Example`, the model's input for one record
  prediction `predict(context, params, mode)` over the validation examples
  scoring    `score(predictions) -> (metrics, files)`: the task's adapter writes the official
             files its evaluator reads from the records and predictions, at scoring time
The base does the rest once: batching, the loop over evaluation modes, the `val/<mode>/` keys,
writing only on the writer process, the file names, and `DataDims`.

With MVPTR's concepts (`config.data.concepts`: a fine-tune of an MVPTR run) the base also gives
every example its concepts, unmasked: `encode(text, phrases)` appends a caption's phrases from
the run's phrase vocabulary (copied from the pre-training run) after its words, and the images
carry their object tags (`tag_ids`, `tag_mask`).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import jax
import ml_collections
import numpy as np
from flax import nnx

from semvlp_jax.data import datasets
from semvlp_jax.data.concepts import ConceptConfig, ConceptFields, object_names, run_phrases
from semvlp_jax.data.dims import DataDims, data_dims
from semvlp_jax.data.images import Tagger, images_of
from semvlp_jax.data.pipeline import TextEncoder, shuffled_batches
from semvlp_jax.data.tokenizers import Tokenizer
from semvlp_jax.data.vocabularies import run_tokenizer
from semvlp_jax.errors import ConfigError
from semvlp_jax.workdir import RunDir

Example = dict[str, np.ndarray]
# `fn(model, batch, mode) -> {name: [rows, ...] array}`: what a task reads off the model to score.
PredictFn = Callable[[Any, dict, str], dict[str, jax.Array]]
SPLITS = ('train', 'val')


@dataclasses.dataclass
class TaskData:
    train: Iterator[Example]  # this process's rows of each global training batch
    dims: DataDims
    tokenizer: Tokenizer
    evaluate: Callable[[EvalContext, Any, int], dict[str, float]]


@dataclasses.dataclass
class EvalContext:
    """What evaluation needs from the trainer: the model graph, the devices, and the writer.

    `to_global(local_rows)` makes global arrays from this process's rows; every process must run
    `predict` with the same arguments (it holds collectives), and only the writer writes files.
    """

    config: ml_collections.ConfigDict
    graphdef: nnx.GraphDef
    mesh: jax.sharding.Mesh
    to_global: Callable[[Example], dict[str, jax.Array]]
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

    def predict_all(self, fn: PredictFn, params, mode: str, examples: Example):
        """`predict` over every row of pre-stacked `examples`."""
        count = len(next(iter(examples.values())))
        return self.predict(fn, params, mode, count, take(examples))


def stack(examples: Sequence[Example]) -> Example:
    """Examples (dicts of arrays) -> one dict of arrays with a leading example axis."""
    return {key: np.stack([e[key] for e in examples]) for key in examples[0]}


def take(arrays: Example) -> Callable[[np.ndarray], Example]:
    """`rows` for `EvalContext.predict` over pre-stacked arrays."""
    return lambda indices: {key: value[indices] for key, value in arrays.items()}


def per_mode(
    context: EvalContext, evaluate_mode: Callable[[str], dict[str, float]]
) -> dict[str, float]:
    """`evaluate_mode(mode)` for every evaluated mode, keyed `val/<mode>/<metric>`."""
    return {
        f'val/{mode}/{metric}': value
        for mode in context.modes
        for metric, value in evaluate_mode(mode).items()
    }


class Task:
    """A registered task.

    objectives: the objectives its batches can feed (config.objectives may use only these).
    itm_negatives: whether its batches may have images swapped for ITM negatives
      (config.itm_negative_prob > 0); a VQA answer or NLVR2 label no longer holds after a swap.
    table_metrics: the metrics the trainer's start/end table shows (every metric is logged).
    """

    name: ClassVar[str]
    objectives: ClassVar[frozenset[str]]
    itm_negatives: ClassVar[bool] = False
    table_metrics: ClassVar[tuple[str, ...]]

    @classmethod
    def check(cls, config: ml_collections.ConfigDict) -> None:
        """Checks of the task's own config keys; raises `ConfigError` naming the key. Called by
        `config_checks.validate`, before anything is built."""

    @classmethod
    def build(
        cls, config: ml_collections.ConfigDict, workdir, process_index: int, process_count: int
    ) -> TaskData:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class ResultFile:
    """A file an evaluation writes under WORKDIR/<task>/ as `<stem>_val_<mode>_step<N><suffix>`."""

    stem: str
    suffix: str
    write: Callable[[pathlib.Path], None]


class RecordTask(Task):
    """A downstream task over the records of one dataset (see the module docstring).

    On built data (`config.data.name='tfds'`) the records of `dataset` are read, the splits
    playing 'train' and 'val' being `built_splits` unless `config.task.dataset`,
    `config.task.train_split` or `config.task.val_split` say otherwise; every image a split
    names must have region features, checked before training starts.
    """

    dataset: ClassVar[str]  # the built dataset
    built_splits: ClassVar[dict[str, str]] = {'train': 'train', 'val': 'val'}

    def __init__(self, config, workdir, process_index: int, process_count: int):
        self.config = config
        self.directory = RunDir(workdir).task_dir(self.name)
        self.is_writer = process_index == 0
        self.process_index, self.process_count = process_index, process_count
        self.tokenizer = run_tokenizer(
            config.data, workdir, config.init_from, config.get('init_bert', '')
        )
        self.words = TextEncoder(self.tokenizer, config.data.max_text_len)
        self.concepts, tagger = None, None
        settings = ConceptConfig.of(config.data)
        if settings is not None:
            phrases = run_phrases(
                config.data,
                workdir,
                self.tokenizer,
                is_writer=self.is_writer,
                init_from=config.init_from,
            )
            self.concepts = ConceptFields(self.tokenizer, phrases, settings, config.data)
            names = None if config.data.name == 'synthetic' else object_names(config.data)
            tagger = Tagger(self.concepts.tag_segment, names)
        self.images = images_of(config, self.val_scenes(), tagger)

    @classmethod
    def build(cls, config, workdir, process_index: int, process_count: int) -> TaskData:
        return cls(config, workdir, process_index, process_count).data()

    def __getstate__(self) -> dict:
        """What input workers receive with `example` (a bound method, pickled with its task):
        the task without its validation records and examples, which only evaluation reads."""
        return {k: v for k, v in self.__dict__.items() if k not in ('val', 'val_examples')}

    # ------------------------------------------------------------ the protocol

    def synthetic_records(self, split: str) -> list:
        """The records of a split of the embedded synthetic scenes (`self.images.scenes`)."""
        raise NotImplementedError

    def prepare(self, train: list) -> None:
        """Whatever depends on the training records (an answer vocabulary)."""

    def example(self, record, rng: np.random.Generator | None = None) -> Example:
        raise NotImplementedError

    def predict(self, context: EvalContext, params, mode: str):
        raise NotImplementedError

    def score(self, predictions) -> tuple[dict[str, float], list[ResultFile]]:
        raise NotImplementedError

    def dims_overrides(self) -> dict[str, int]:
        """The `DataDims` fields the task changes (its answer count, images per example)."""
        return {}

    def val_scenes(self) -> int | None:
        """Validation scenes the synthetic images need (None: config.data.num_val)."""
        return None

    def elements(self, records: list, split: str) -> list:
        """What one example is made from: a record (the default), or a group of records."""
        del split
        return records

    def validation_examples(self, val: list) -> Any:
        """The inputs `predict` reads: by default every validation example, stacked."""
        return stack([self.example(element) for element in val])

    # ------------------------------------------------------------ shared machinery

    def encode(self, text: str, phrases: Sequence[tuple[str, ...]] = ()):
        """(text_ids, text_mask) of `text`: `[CLS] word-pieces [SEP]`, padded; with concepts
        the `phrases` (a caption's, as tuples of words) known to the run's vocabulary follow
        the words, padded to the model's text length (questions have none)."""
        if self.concepts is None:
            return self.words(text)
        return self.concepts.encode(text, phrases)[:2]

    def records(self, split: str) -> list:
        """Every record of the split playing `split` ('train' or 'val')."""
        if self.config.data.name == 'synthetic':
            return self.synthetic_records(split)
        task = self.config.task
        dataset = task.get('dataset') or self.dataset
        name = task.get(f'{split}_split') or self.built_splits[split]
        source = datasets.records(self.config.data.data_dir, dataset, name)
        records = [source[i] for i in range(len(source))]
        self.images.check_ids({i for r in records for i in r.image_ids}, f'{dataset}:{name}')
        self.check_built(records, f'{dataset}:{name}')
        return records

    def check_built(self, records: list, where: str) -> None:
        """Refuses built records the task cannot train or score on (a hidden test split)."""

    def data(self) -> TaskData:
        train = labelled_budget(
            self.elements(self.records('train'), 'train'), self.config.task.get('train_examples')
        )
        self.prepare(train)
        self.val = self.elements(self.records('val'), 'val')
        self.val_examples = self.validation_examples(self.val)
        batches = shuffled_batches(
            train,
            self.example,
            batch_size=self.config.batch_size,
            seed=self.config.seed,
            reader_threads=self.config.data.reader_threads,
            input_workers=self.config.data.get('input_workers', 0),
            process_index=self.process_index,
            process_count=self.process_count,
        )
        num_phrases = len(self.concepts.phrases) if self.concepts is not None else None
        dims = data_dims(
            self.config.data,
            self.tokenizer.vocab_size,
            num_phrases=num_phrases,
            **self.dims_overrides(),
        )
        return TaskData(batches, dims, self.tokenizer, self.evaluate)

    def evaluate(self, context: EvalContext, params, step: int) -> dict[str, float]:
        def evaluate_mode(mode: str) -> dict[str, float]:
            metrics, files = self.score(self.predict(context, params, mode))
            if self.is_writer:
                self.directory.mkdir(parents=True, exist_ok=True)
                for file in files:
                    file.write(self.directory / f'{file.stem}_val_{mode}_step{step}{file.suffix}')
            return metrics

        return per_mode(context, evaluate_mode)

    def write_json(self, name: str, value: Any) -> None:
        """WORKDIR/<task>/<name> on the writer process."""
        if self.is_writer:
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / name).write_text(json.dumps(value))


# The budget's subset is the same for every run and seed, so that runs compared under one budget
# (pre-trained against from scratch) learn from the same labelled examples.
BUDGET_SEED = 0


def labelled_budget(train: list, budget: int | None) -> list:
    """`config.task.train_examples`: a fixed random subset of `budget` training elements (in
    their original order), or all of them for 0 / None. A budget above the split's size is a
    ConfigError, raised before training starts."""
    if not budget:
        return train
    if budget > len(train):
        raise ConfigError(
            f'config.task.train_examples={budget} but the training split has {len(train)}'
        )
    keep = np.sort(np.random.default_rng(BUDGET_SEED).permutation(len(train))[:budget])
    return [train[i] for i in keep]


def slug(name: str) -> str:
    """'yes/no' -> 'yes_no': metric names keep '/' for `val/<mode>/<metric>`."""
    return ''.join(c if c.isalnum() else '_' for c in name)
