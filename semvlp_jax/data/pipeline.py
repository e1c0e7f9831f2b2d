"""grain input pipelines: (image, text) -> (tokenise, mask) -> this process's batches.

Pre-training examples pair an image with one of its texts: a caption, or a question with its
soft answer scores. Two sources: the embedded synthetic scenes (`synthetic_pretraining`; a
question with probability `question_fraction`) and datasets built from real files
(`built_pretraining`; a weighted mixture of caption and question datasets, regions joined by
image id). ITM negatives are *not* made here: the train step draws them from the global batch,
so a negative is always a real image of the same step.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
from collections.abc import Callable, Iterator, Sequence

import grain
import ml_collections
import numpy as np

from semvlp_jax.data import datasets, masking, synthetic, synthetic_tasks
from semvlp_jax.data.answers import answer_scores
from semvlp_jax.data.regions import RegionStore
from semvlp_jax.data.tokenizers import (
    Tokenizer,
    load_or_train_sentencepiece,
    load_tokenizer,
    write_atomically,
)
from semvlp_jax.models.semvlp import DataDims

# Scenes used to train the synthetic tokenizer: enough to see every word of the grammar.
TOKENIZER_CORPUS_SCENES = 2000


@dataclasses.dataclass(frozen=True)
class TextEncoder:
    """[CLS] pieces [SEP] padded to max_len; pieces beyond max_len - 2 are truncated."""

    tokenizer: Tokenizer
    max_len: int

    def __call__(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        t = self.tokenizer
        pieces = t.encode(text)[: self.max_len - 2]
        ids = np.full(self.max_len, t.pad_id, np.int32)
        ids[: len(pieces) + 2] = [t.cls_id, *pieces, t.sep_id]
        mask = np.zeros(self.max_len, np.int32)
        mask[: len(pieces) + 2] = 1
        return ids, mask


class PretrainingExample:
    """(text, answer scores, image regions) + rng -> one masked pre-training example."""

    def __init__(self, tokenizer: Tokenizer, config: ml_collections.ConfigDict):
        self.encode = TextEncoder(tokenizer, config.max_text_len)
        self.config = config
        self.mask_id = tokenizer.mask_id
        self.special_ids = np.array(sorted(tokenizer.special_ids))
        self.random_ids = np.setdiff1d(np.arange(tokenizer.vocab_size), self.special_ids)

    def __call__(
        self,
        text: str,
        scores: np.ndarray,
        is_question: bool,
        image: dict[str, np.ndarray],
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        """`image` holds region_features, region_boxes, region_mask, object_labels and
        attribute_labels (-1 where unknown); `scores` the [num_answers] QA targets."""
        c = self.config
        ids, text_mask = self.encode(text)
        eligible = text_mask.astype(bool) & ~np.isin(ids, self.special_ids)
        words = masking.mask_tokens(
            ids,
            eligible,
            rng,
            mask_id=self.mask_id,
            random_ids=self.random_ids,
            prob=c.mlm_prob,
            max_predictions=c.max_mlm_predictions,
        )
        region_mask = image['region_mask'].astype(bool)
        regions = masking.mask_regions(
            image['region_features'],
            region_mask,
            rng,
            prob=c.mop_prob,
            max_predictions=c.max_mop_predictions,
        )
        return {
            'text_ids': words.values,
            'text_mask': text_mask,
            'mlm_positions': words.positions,
            'mlm_targets': words.targets,
            'mlm_weights': words.weights,
            'region_features': regions.values.astype(np.float32, copy=False),
            'region_boxes': image['region_boxes'].astype(np.float32, copy=False),
            'region_mask': region_mask.astype(np.int32),
            'mop_positions': regions.positions,
            'mop_features': regions.targets,
            'mop_object_labels': _at(image['object_labels'], regions),
            'mop_attribute_labels': _at(image['attribute_labels'], regions),
            'mop_weights': regions.weights,
            'is_question': np.int32(is_question),
            'answer_scores': scores.astype(np.float32, copy=False),
        }


class SceneExample:
    """grain random-map transform: synthetic scene + rng -> one pre-training example, pairing
    the image with one of its captions or (with probability `question_fraction`) questions."""

    def __init__(
        self, tokenizer: Tokenizer, answers: Sequence[str], config: ml_collections.ConfigDict
    ):
        self.make = PretrainingExample(tokenizer, config)
        self.question_fraction = config.question_fraction
        self.answer_index = {a: i for i, a in enumerate(answers)}

    def __call__(self, scene: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
        is_question = rng.random() < self.question_fraction and len(scene['questions']) > 0
        if is_question:
            question = scene['questions'][rng.integers(len(scene['questions']))]
            text = question['question']
            scores = answer_scores(question['answers'], self.answer_index)
        else:
            text = scene['captions'][rng.integers(len(scene['captions']))]
            scores = np.zeros(len(self.answer_index), np.float32)
        return self.make(text, scores, is_question, scene, rng)


class PairExample:
    """grain random-map transform: image-text pair of a built dataset (`datasets.pairs`) + rng
    -> one pre-training example, with the image's regions joined from the region store."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        answers: Sequence[str],
        config: ml_collections.ConfigDict,
        images: Callable[[str], dict[str, np.ndarray]],
    ):
        self.make = PretrainingExample(tokenizer, config)
        self.answer_index = {a: i for i, a in enumerate(answers)}
        self.images = images

    def __call__(self, pair: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
        is_question = bool(pair['answers'])
        scores = answer_scores(pair['answers'], self.answer_index)
        return self.make(pair['text'], scores, is_question, self.images(pair['image_id']), rng)


def _at(labels: np.ndarray, masked: masking.Masked) -> np.ndarray:
    return np.where(masked.weights > 0, labels[masked.positions], -1).astype(np.int32)


class CachedScenes:
    """Keeps every scene once generated, so epochs after the first skip scene generation.

    Generating a synthetic scene costs more than turning it into an example; a split of 20k
    scenes takes about 60 MB.
    """

    def __init__(self, scenes: synthetic.SyntheticScenes):
        self._scenes = scenes
        self._cache: dict[int, dict] = {}
        self.config, self.split = scenes.config, scenes.split

    def __len__(self) -> int:
        return len(self._scenes)

    def __getitem__(self, index: int) -> dict:
        scene = self._cache.get(index)
        if scene is None:
            scene = self._cache[index] = self._scenes[index]
        return scene


@dataclasses.dataclass
class PretrainingData:
    train: Iterator[dict[str, np.ndarray]]
    val: list[dict[str, np.ndarray]]  # fixed batches: the same examples and masks at every eval
    dims: DataDims
    tokenizer: Tokenizer


def synthetic_config(data: ml_collections.ConfigDict) -> synthetic.SyntheticConfig:
    return synthetic.SyntheticConfig(
        seed=data.seed,
        num_regions=data.num_regions,
        feature_dim=data.feature_dim,
        min_objects=data.min_objects,
        max_objects=data.max_objects,
        feature_noise=data.feature_noise,
        render_pixels=False,
    )


def synthetic_tokenizer(data: ml_collections.ConfigDict, path: pathlib.Path) -> Tokenizer:
    """The sentencepiece model at `path`; trained there at first use on every text of the
    synthetic tasks (pre-training and downstream share one vocabulary)."""
    return load_or_train_sentencepiece(
        path,
        lambda: synthetic_tasks.text_corpus(synthetic_config(data), TOKENIZER_CORPUS_SCENES),
        vocab_size=data.vocab_size,
    )


def process_share(
    examples: grain.MapDataset, global_batch: int, process_index: int, process_count: int
) -> grain.MapDataset:
    """This process's rows of every global batch, in order.

    Global batch b is examples [b * global_batch, (b + 1) * global_batch); process p reads only
    its contiguous part of each. Examples are built per global index, so the global batch is the
    same whatever the number of processes.
    """
    local = global_batch // process_count

    def global_index(i: int) -> int:
        return (i // local) * global_batch + process_index * local + i % local

    length = len(examples) // global_batch * local
    return grain.MapDataset.range(length).map(lambda i: examples[global_index(i)])


def synthetic_pretraining(
    data: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    *,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> PretrainingData:
    """The embedded synthetic dataset (`config.data`) as pre-training input.

    `batch_size` is the global batch; each process gets its `batch_size / process_count` rows of
    every batch (see `process_share`). The tokenizer is trained on the synthetic captions at
    first use and cached in workdir.
    """
    scenes_config = synthetic_config(data)
    tokenizer = synthetic_tokenizer(data, pathlib.Path(workdir) / 'tokenizer' / 'synthetic.model')
    to_example = SceneExample(tokenizer, synthetic.ANSWERS, data)

    train = (
        grain.MapDataset.source(
            CachedScenes(synthetic.SyntheticScenes(scenes_config, 'train', data.num_train))
        )
        .shuffle(seed=seed)
        .repeat()
        .random_map(to_example, seed=seed)
    )
    val = grain.MapDataset.source(
        synthetic.SyntheticScenes(scenes_config, 'val', data.num_val)
    ).random_map(to_example, seed=seed + 1)
    dims = DataDims(
        vocab_size=tokenizer.vocab_size,
        max_text_len=data.max_text_len,
        visual_feature_dim=data.feature_dim,
        num_object_labels=len(synthetic.SHAPES),
        num_attribute_labels=len(synthetic.COLOURS),
        num_answers=len(synthetic.ANSWERS),
    )
    return _batched(train, val, tokenizer, dims, data, batch_size, process_index, process_count)


def tokenizer_of_run(data: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> Tokenizer:
    """The tokenizer a run reads text with, kept in WORKDIR/tokenizer/.

    Synthetic data: the word model trained on the synthetic texts at first use. Built datasets:
    `data.tokenizer.path` (a sentencepiece `.model` or a BERT `vocab.txt`, by
    `data.tokenizer.kind`), copied into the workdir at the first start so that a resumed run
    reads text as it started even if the original file changes.
    """
    directory = pathlib.Path(workdir) / 'tokenizer'
    if data.name == 'synthetic':
        return synthetic_tokenizer(data, directory / 'synthetic.model')
    source = pathlib.Path(data.tokenizer.path)
    copy = directory / source.name
    if not copy.exists():
        if not source.is_file():
            raise FileNotFoundError(
                f'config.data.tokenizer.path={str(source)!r}: no such file (train one with '
                '`python -m semvlp_jax.data.train_tokenizer`)'
            )
        write_atomically(copy, source.read_bytes())  # processes sharing a workdir race here
    return load_tokenizer(data.tokenizer.kind, copy)


def answer_vocabulary(counts: collections.Counter, min_count: int, key: str) -> list[str]:
    """Answers seen at least `min_count` (the value of config key `key`) times, most frequent
    first (ties alphabetical)."""
    kept = [answer for answer, count in counts.items() if count >= min_count]
    if not kept:
        raise ValueError(
            f'config.{key}={min_count}: no training answer is that frequent '
            f'(the most frequent is seen {max(counts.values(), default=0)} times)'
        )
    return sorted(kept, key=lambda answer: (-counts[answer], answer))


def region_store(data: ml_collections.ConfigDict) -> RegionStore:
    return RegionStore(
        data.data_dir,
        data.regions,
        num_regions=data.num_regions,
        feature_dim=data.feature_dim,
        num_object_labels=data.num_object_labels,
        num_attribute_labels=data.num_attribute_labels,
    )


def built_pretraining(
    data: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    *,
    batch_size: int,
    seed: int,
    eval_examples: int,
    process_index: int = 0,
    process_count: int = 1,
) -> PretrainingData:
    """Pre-training input from built datasets: a weighted mixture of caption and question
    sources (`data.sources`), each paired with its image's regions from `data.regions`.

    Each source is shuffled with its own seed and repeated, then the sources are interleaved
    in proportion to their weights (grain's mix), so the mixture holds in every stretch of
    training. Every text record's image must have features, checked before training starts.
    The answer vocabulary (question sources' answers seen `data.answer_min_count` times) is
    written to WORKDIR/answers.json at the first start and read back on resume. Validation is
    the first `eval_examples` of the same mixture over each source's `val_split`.
    """
    workdir = pathlib.Path(workdir)
    tokenizer = tokenizer_of_run(data, workdir)
    images = region_store(data)
    names = sorted(data.sources)
    scans = {}
    for name in names:
        for key in ('split', 'val_split'):
            split = data.sources[name].get(key)
            if split:
                where = f'config.data.sources.{name}.{key}={split!r}'
                scans[name, key] = datasets.scan(data.data_dir, name, split)
                images.check_ids(scans[name, key].image_ids, where)
    answers = _answers(
        workdir,
        data,
        sum((scans[n, 'split'].answers for n in names), collections.Counter()),
        is_writer=process_index == 0,
    )
    to_example = PairExample(tokenizer, answers, data, images)
    weights = [data.sources[name].weight for name in names]
    train = grain.MapDataset.mix(
        [
            datasets.pairs(data.data_dir, name, data.sources[name].split)
            .shuffle(seed=seed + i)
            .repeat()
            for i, name in enumerate(names)
        ],
        weights,
    ).random_map(to_example, seed=seed)
    val_names = [name for name in names if data.sources[name].get('val_split')]
    if not val_names:
        raise ValueError('config.data.sources: no source has a val_split to evaluate on')
    val = grain.MapDataset.mix(
        [datasets.pairs(data.data_dir, n, data.sources[n].val_split) for n in val_names],
        [data.sources[name].weight for name in val_names],
    )
    if len(val) < eval_examples:
        raise ValueError(
            f'config.eval_batches x config.batch_size = {eval_examples} validation examples, but '
            f'the val_split mixture of config.data.sources has {len(val)}'
        )
    val = val[:eval_examples].random_map(to_example, seed=seed + 1)
    dims = DataDims(
        vocab_size=tokenizer.vocab_size,
        max_text_len=data.max_text_len,
        visual_feature_dim=data.feature_dim,
        num_object_labels=data.num_object_labels,
        num_attribute_labels=data.num_attribute_labels,
        num_answers=len(answers),
    )
    return _batched(train, val, tokenizer, dims, data, batch_size, process_index, process_count)


def _answers(workdir, data, counts, *, is_writer: bool) -> list[str]:
    """The QA answer list, fixed at the first start: the answer head's rows are indexed by it,
    so a resumed run must not recount it from data that may have been rebuilt."""
    path = workdir / 'answers.json'
    if path.exists():
        return json.loads(path.read_text())
    answers = (
        answer_vocabulary(counts, data.answer_min_count, 'data.answer_min_count') if counts else []
    )
    if is_writer:
        write_atomically(path, json.dumps(answers).encode())
    return answers


def _batched(
    train, val, tokenizer, dims, data, batch_size, process_index, process_count
) -> PretrainingData:
    """This process's rows of each global batch, batched (the last partial one dropped)."""
    local_batch = batch_size // process_count
    train, val = (
        process_share(ds, batch_size, process_index, process_count).batch(
            local_batch, drop_remainder=True
        )
        for ds in (train, val)
    )
    read = grain.ReadOptions(num_threads=data.reader_threads, prefetch_buffer_size=4)
    return PretrainingData(
        train=iter(train.to_iter_dataset(read)), val=list(val), dims=dims, tokenizer=tokenizer
    )
