"""Ask a trained model: answers to questions, image-text match scores, similarities.

    predictor = Predictor.load('/tmp/semvlp_vqa')      # a run directory, checkpoints/ or a step
    image = read_image('features/COCO_val2014_000000000042.npz')
    predictor.answer(image, 'what color is the circle?', top_k=3)
    # -> [{'answer': 'red', 'score': 0.91}, ...]
    predictor.score(image, 'a red circle above a square')           # ITM probability of a match
    predictor.similarity([image, other], ['a red circle', 'two squares'])   # [2, 2] cosines

`Predictor.load` rebuilds the model from what the run saved (the config and data sizes in the
checkpoint's meta, the tokenizer in WORKDIR/tokenizer/, the answer list of its task), so no
training config is needed. An image is a `RegionRecord` (region features and normalised boxes,
what the region datasets hold), read from a per-image `.npz` or a row of a bottom-up TSV by
`read_image`; the pixel path plugs in later. Inputs are padded to a few fixed batch sizes
(`BATCH_SIZES`), so repeated calls run programs already compiled.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from semvlp_jax.checkpoint import META, STATE
from semvlp_jax.data import synthetic
from semvlp_jax.data.dims import DataDims
from semvlp_jax.data.formats.regions import RegionChecks, read_region_npz, read_region_tsv
from semvlp_jax.data.pipeline import TextEncoder
from semvlp_jax.data.records import RegionRecord
from semvlp_jax.data.tokenizers import Tokenizer, load_tokenizer
from semvlp_jax.errors import MissingConfigFile
from semvlp_jax.models.encoder import MODES
from semvlp_jax.models.semvlp import SemVLP
from semvlp_jax.workdir import SYNTHETIC_TOKENIZER, RunDir, step_directory

# Batch sizes inputs are padded to (the last one is the chunk size of longer inputs): each is
# compiled once per function and mode.
BATCH_SIZES = (1, 8, 64)
# Tasks whose model has a trained answer head, and where their answer list is kept.
QUESTION_TASKS = ('pretrain', 'vqa', 'gqa')


class InferenceError(ValueError):
    """A run or an input the predictor cannot use; the message names what is wrong."""


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """What a run saved that rebuilds its model: config, data sizes, parameters, tokenizer."""

    directory: pathlib.Path  # the run directory
    step: int
    config: ml_collections.ConfigDict
    dims: DataDims
    graphdef: nnx.GraphDef
    params: Any  # pure dict of arrays
    tokenizer: Tokenizer
    answers: list[str] | None  # the answer head's classes, None if it has no trained one

    @classmethod
    def load(cls, path: str | pathlib.Path) -> TrainedRun:
        """The run of `path` (a run directory, its checkpoints/ or one step directory) at its
        latest (or that) checkpoint."""
        try:
            step_dir = step_directory(path)
        except MissingConfigFile:
            raise MissingConfigFile(
                f'{path}: no checkpoint there (expected a run directory, its checkpoints/ or one '
                'step directory)'
            ) from None
        meta_dir = step_dir / META
        if not meta_dir.is_dir():
            raise MissingConfigFile(f'{step_dir}: no {META}/ item, so no saved config')
        meta = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(
            meta_dir, args=ocp.args.JsonRestore()
        )
        missing = [key for key in ('config', 'dims') if key not in meta]
        if missing:
            raise MissingConfigFile(
                f'{step_dir}: the checkpoint saved no {" or ".join(missing)} (written by an '
                'older version); the predictor rebuilds the model from them'
            )
        config = ml_collections.ConfigDict(json.loads(meta['config']))
        dims = DataDims(**meta['dims'])
        run = RunDir.of(step_dir)
        model = nnx.eval_shape(
            lambda: SemVLP(config.model, dims, rngs=nnx.Rngs(params=jax.random.key(0)))
        )
        graphdef, abstract = nnx.split(model, nnx.Param)
        abstract = nnx.to_pure_dict(abstract)
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract
        )
        params = ocp.PyTreeCheckpointer().restore(
            step_dir / STATE,
            args=ocp.args.PyTreeRestore(
                {'params': target},
                restore_args=ocp.checkpoint_utils.construct_restore_args({'params': target}),
                partial_restore=True,
            ),
        )['params']
        return cls(
            directory=run.root,
            step=int(meta.get('step', step_dir.name)),
            config=config,
            dims=dims,
            graphdef=graphdef,
            params=params,
            tokenizer=_run_tokenizer(run, config),
            answers=_answers(run, config),
        )


def _run_tokenizer(run: RunDir, config: ml_collections.ConfigDict) -> Tokenizer:
    files = run.tokenizer_files()
    if not files:
        raise MissingConfigFile(
            f'{run.root}: no tokenizer/ file; the run keeps its tokenizer there'
        )
    file = files[0]
    if file.name == SYNTHETIC_TOKENIZER or file.suffix == '.model':
        return load_tokenizer('sentencepiece', file)
    return load_tokenizer('wordpiece', file)


def _answers(run: RunDir, config: ml_collections.ConfigDict) -> list[str] | None:
    task = config.task.name
    if task not in QUESTION_TASKS:
        return None
    if task == 'pretrain':
        if config.data.name == 'synthetic':
            return list(synthetic.ANSWERS)
        path = run.pretraining_answers
    else:
        path = run.task_dir(task) / 'answers.json'
    if not path.is_file():
        raise MissingConfigFile(f'{run.root}: no {path.name} for the {task} answer head at {path}')
    return json.loads(path.read_text())


def read_image(path: str | pathlib.Path, image_id: str | None = None) -> RegionRecord:
    """One image's regions from a per-image `.npz` (features, boxes, image_h, image_w) or from a
    bottom-up-attention TSV (the row of `image_id`; it may be left out when the file holds one
    image). The files' checks apply: a malformed record, NaN features or a box outside the image
    is an error naming the file and the record."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'image file {path}: no such file')
    checks = RegionChecks()
    if path.suffix == '.npz':
        return next(read_region_npz(path, checks=checks))[1]
    if path.suffix == '.tsv':
        found = None
        for row_id, record in read_region_tsv(path, checks=checks):
            if image_id is None and found is not None:
                raise InferenceError(f'{path} holds several images: name one (image_id)')
            if image_id is None or row_id == image_id:
                found = record
                if image_id is not None:
                    break
        if found is None:
            raise InferenceError(f'{path}: no row for image {image_id!r}')
        return found
    raise InferenceError(f'image file {path}: expected a .npz or a .tsv of region features')


def _answer_scores(model, batch, mode):
    return jax.nn.sigmoid(model.answer_head(model(batch, mode=mode).pooled))


def _match_probability(model, batch, mode):
    return jax.nn.softmax(model.matching_head(model(batch, mode=mode).pooled), axis=-1)[:, 1]


# What each question reads off the model: `fn(model, batch, mode) -> [rows, ...]`.
READOUTS = {
    'answer': _answer_scores,
    'score': _match_probability,
    'embed_images': lambda model, batch, mode: model.embed_images(batch, mode),
    'embed_texts': lambda model, batch, mode: model.embed_texts(batch, mode),
}


class Predictor:
    """A trained run's model behind three questions (see the module docstring).

    `mode` ('single' or 'two') is how the encoder reads the pair; by default the mode the run
    was trained or fine-tuned in, and two-stream for a run that alternated.
    """

    def __init__(self, run: TrainedRun, mode: str | None = None):
        schedule = run.config.get('schedule', 'two')
        self.mode = mode or (schedule if schedule in MODES else 'two')
        if self.mode not in MODES:
            raise InferenceError(f'mode={mode!r}; expected one of {MODES}')
        self.run = run
        self.encode = TextEncoder(run.tokenizer, run.dims.max_text_len)
        self.num_regions = run.config.data.num_regions
        self._compiled: dict[str, Callable] = {}

    @classmethod
    def load(cls, path: str | pathlib.Path, mode: str | None = None) -> Predictor:
        return cls(TrainedRun.load(path), mode)

    # ------------------------------------------------------------ the questions

    def answer(
        self, image: RegionRecord, question: str, top_k: int = 1
    ) -> list[dict[str, float | str]]:
        """The `top_k` most likely answers, best first: [{'answer', 'score'}], the score the
        answer head's sigmoid (QA is trained with a binary cross-entropy per answer)."""
        return self.answer_batch([image], [question], top_k)[0]

    def answer_batch(
        self, images: Sequence[RegionRecord], questions: Sequence[str], top_k: int = 1
    ) -> list[list[dict[str, float | str]]]:
        """`answer` for each (image, question) pair, batched."""
        answers = self.run.answers
        if answers is None:
            raise InferenceError(
                f'the run in {self.run.directory} ({self.run.config.task.name}) has no trained '
                'answer head; answer() needs a pre-training, VQA or GQA run'
            )
        if not 1 <= top_k <= len(answers):
            raise InferenceError(f'top_k={top_k} must be in 1..{len(answers)} (the answers)')
        scores = self._run('answer', self._pairs(images, questions, 'question'))
        best = np.argsort(-scores, axis=-1, kind='stable')[:, :top_k]
        return [
            [{'answer': answers[i], 'score': float(row[i])} for i in top]
            for row, top in zip(scores, best)
        ]

    def score(self, image: RegionRecord, text: str) -> float:
        """ITM probability that `text` describes `image`."""
        return float(self.score_batch([image], [text])[0])

    def score_batch(self, images: Sequence[RegionRecord], texts: Sequence[str]) -> np.ndarray:
        """[pairs] ITM match probabilities."""
        return self._run('score', self._pairs(images, texts, 'text'))

    def similarity(self, images: Sequence[RegionRecord], texts: Sequence[str]) -> np.ndarray:
        """[n_images, n_texts] cosine similarities of the contrastive (ITC) embeddings, each
        image and text encoded once, alone."""
        if self.run.params.get('contrastive_head') is None:
            raise InferenceError(
                f'the run in {self.run.directory} has no contrastive head '
                '(config.model.contrastive_dim=0): similarity() needs one; score() works'
            )
        image_vectors = self._run('embed_images', [self._image_fields(i) for i in images])
        text_vectors = self._run('embed_texts', [self._text_fields(t, 'text') for t in texts])
        return image_vectors @ text_vectors.T

    # ------------------------------------------------------------ inputs

    def _text_fields(self, text: str, what: str) -> dict[str, np.ndarray]:
        if not isinstance(text, str) or not text.strip():
            raise InferenceError(f'empty {what}: {text!r}')
        text_ids, text_mask = self.encode(text)
        return {'text_ids': text_ids, 'text_mask': text_mask}

    def _image_fields(self, image: RegionRecord) -> dict[str, np.ndarray]:
        if not isinstance(image, RegionRecord):
            raise InferenceError(
                f'an image is a RegionRecord (see read_image), not {type(image).__name__}'
            )
        features, boxes = np.asarray(image.features), np.asarray(image.boxes)
        expected = self.run.dims.visual_feature_dim
        if features.ndim != 2 or features.shape[1] != expected:
            raise InferenceError(
                f'image {image.image_id!r} has features of shape {list(features.shape)}; the '
                f'model reads [regions, {expected}]'
            )
        if boxes.shape != (len(features), 4):
            raise InferenceError(
                f'image {image.image_id!r}: boxes of shape {list(boxes.shape)} for '
                f'{len(features)} regions (expected [{len(features)}, 4])'
            )
        if not (np.isfinite(features).all() and np.isfinite(boxes).all()):
            raise InferenceError(f'image {image.image_id!r} has NaN or infinite features or boxes')
        if not len(features):
            raise InferenceError(f'image {image.image_id!r} has no regions')
        count = min(len(features), self.num_regions)
        fields = {
            'region_features': np.zeros((self.num_regions, expected), np.float32),
            'region_boxes': np.zeros((self.num_regions, 4), np.float32),
            'region_mask': np.zeros(self.num_regions, np.int32),
        }
        fields['region_features'][:count] = features[:count]
        fields['region_boxes'][:count] = boxes[:count]
        fields['region_mask'][:count] = 1
        return fields

    def _pairs(self, images, texts, what: str) -> list[dict[str, np.ndarray]]:
        if len(images) != len(texts):
            raise InferenceError(f'{len(images)} images but {len(texts)} {what}s: give pairs')
        return [
            {**self._image_fields(image), **self._text_fields(text, what)}
            for image, text in zip(images, texts)
        ]

    # ------------------------------------------------------------ compiled programs

    def _program(self, name: str) -> Callable:
        if name not in self._compiled:
            graphdef, mode, read = self.run.graphdef, self.mode, READOUTS[name]

            @jax.jit
            def program(params, batch):
                return read(nnx.merge(graphdef, params), batch, mode)

            self._compiled[name] = program
        return self._compiled[name]

    def _run(self, name: str, rows: list[dict[str, np.ndarray]]) -> np.ndarray:
        """`name`'s program over `rows`, in chunks padded to one of BATCH_SIZES."""
        if not rows:
            return np.zeros((0,), np.float32)
        program, largest, out = self._program(name), BATCH_SIZES[-1], []
        for start in range(0, len(rows), largest):
            chunk = rows[start : start + largest]
            size = next(b for b in BATCH_SIZES if b >= len(chunk))
            padded = chunk + [chunk[0]] * (size - len(chunk))  # a real row: no NaN from padding
            batch = {key: np.stack([row[key] for row in padded]) for key in chunk[0]}
            out.append(np.asarray(program(self.run.params, batch))[: len(chunk)])
        return np.concatenate(out)
