"""grain input pipelines: scenes -> (tokenise, choose text, mask) -> batches of numpy arrays.

Pre-training examples pair an image with one of its texts: a caption, or (with probability
`question_fraction`) a question with its soft answer scores. ITM negatives are *not* made here:
the train step draws them from the global batch.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterator, Sequence

import grain
import ml_collections
import numpy as np

from semvlp_jax.data import masking, synthetic, synthetic_tasks
from semvlp_jax.data.answers import answer_scores
from semvlp_jax.data.tokenizers import Tokenizer, load_or_train_sentencepiece
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
    """grain random-map transform: scene dict + rng -> one pre-training example (numpy arrays)."""

    def __init__(
        self, tokenizer: Tokenizer, answers: Sequence[str], config: ml_collections.ConfigDict
    ):
        self.encode = TextEncoder(tokenizer, config.max_text_len)
        self.config = config
        self.mask_id = tokenizer.mask_id
        self.special_ids = np.array(sorted(tokenizer.special_ids))
        self.random_ids = np.setdiff1d(np.arange(tokenizer.vocab_size), self.special_ids)
        self.answer_index = {a: i for i, a in enumerate(answers)}

    def __call__(self, scene: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.config
        is_question = rng.random() < c.question_fraction and len(scene['questions']) > 0
        if is_question:
            question = scene['questions'][rng.integers(len(scene['questions']))]
            text, scores = (
                question['question'],
                answer_scores(question['answers'], self.answer_index),
            )
        else:
            text = scene['captions'][rng.integers(len(scene['captions']))]
            scores = np.zeros(len(self.answer_index), np.float32)

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
        region_mask = scene['region_mask'].astype(bool)
        regions = masking.mask_regions(
            scene['region_features'],
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
            'region_features': regions.values.astype(np.float32),
            'region_boxes': scene['region_boxes'].astype(np.float32),
            'region_mask': region_mask.astype(np.int32),
            'mop_positions': regions.positions,
            'mop_features': regions.targets,
            'mop_object_labels': _at(scene['object_labels'], regions),
            'mop_attribute_labels': _at(scene['attribute_labels'], regions),
            'mop_weights': regions.weights,
            'is_question': np.int32(is_question),
            'answer_scores': scores,
        }


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
    to_example = PretrainingExample(tokenizer, synthetic.ANSWERS, data)

    local_batch = batch_size // process_count
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
    train, val = (
        process_share(ds, batch_size, process_index, process_count).batch(
            local_batch, drop_remainder=True
        )
        for ds in (train, val)
    )
    read = grain.ReadOptions(num_threads=data.reader_threads, prefetch_buffer_size=4)
    dims = DataDims(
        vocab_size=tokenizer.vocab_size,
        max_text_len=data.max_text_len,
        visual_feature_dim=data.feature_dim,
        num_object_labels=len(synthetic.SHAPES),
        num_attribute_labels=len(synthetic.COLOURS),
        num_answers=len(synthetic.ANSWERS),
    )
    return PretrainingData(
        train=iter(train.to_iter_dataset(read)), val=list(val), dims=dims, tokenizer=tokenizer
    )
