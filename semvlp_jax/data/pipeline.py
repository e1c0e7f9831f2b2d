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
import pathlib
import zlib
from collections.abc import Callable, Iterator, Sequence

import grain
import ml_collections
import numpy as np

from semvlp_jax.data import datasets, masking, pixels, synthetic
from semvlp_jax.data.answers import answer_scores
from semvlp_jax.data.concepts import (
    ConceptConfig,
    ConceptFields,
    ObjectNames,
    PhraseVocabulary,
    object_names,
    run_phrases,
    scene_tags,
)
from semvlp_jax.data.dims import DataDims, data_dims
from semvlp_jax.data.images import (
    PIXELS_NEED_AN_IMAGE_DATASET,
    PixelStore,
    pixel_store,
    region_store,
)
from semvlp_jax.data.input_workers import batch_iterator
from semvlp_jax.data.pixels import PixelTransform
from semvlp_jax.data.records import CaptionRecord, GqaRecord, VqaRecord
from semvlp_jax.data.regions import RegionStore
from semvlp_jax.data.synthetic_language import Phrase, caption_phrases
from semvlp_jax.data.tokenizers import TextEncoder, Tokenizer
from semvlp_jax.data.vocabularies import fixed_answers, run_tokenizer
from semvlp_jax.errors import ConfigError
from semvlp_jax.evaluators.vqa_eval import normalize_answer
from semvlp_jax.workdir import RunDir


class RegionFields:
    """An image's regions + rng -> its region input with LXMERT masking and the masked object
    targets (`mop_*`)."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    def __call__(self, image: dict[str, np.ndarray], rng: np.random.Generator) -> dict:
        """`image` holds region_features, region_boxes, region_mask, object_labels and
        attribute_labels (-1 where unknown)."""
        c = self.config
        region_mask = image['region_mask'].astype(bool)
        regions = masking.mask_regions(
            image['region_features'],
            region_mask,
            rng,
            prob=c.mop_prob,
            max_predictions=c.max_mop_predictions,
        )
        return {
            'region_features': regions.values.astype(np.float32, copy=False),
            'region_boxes': image['region_boxes'].astype(np.float32, copy=False),
            'region_mask': region_mask.astype(np.int32),
            'mop_positions': regions.positions,
            'mop_features': regions.targets,
            'mop_object_labels': _at(image['object_labels'], regions),
            'mop_attribute_labels': _at(image['attribute_labels'], regions),
            'mop_weights': regions.weights,
        }


@dataclasses.dataclass(frozen=True)
class PatchFields:
    """An image's pixels (uint8 [h, w, 3]) + rng -> the model's pixel input: `pixels` float32
    [image_size, image_size, 3] (a training view when `transform` augments), and, when
    `mask_patches` > 0, `patch_mask` bool [grid * grid] from BEiT block masking (an input that
    has it is encoded with those patches replaced by the mask token), and the masked patches'
    indices `patch_positions` [mask_patches] with `patch_weights` (1 for each real one)."""

    transform: PixelTransform
    grid: int
    mask_patches: int = 0
    min_block: int = 16
    min_aspect: float = 0.3

    def __call__(self, image: dict[str, np.ndarray], rng: np.random.Generator) -> dict:
        fields = {'pixels': self.transform(image['pixels'], rng)}
        if self.mask_patches:
            mask = masking.mask_patch_blocks(
                self.grid,
                self.mask_patches,
                rng,
                min_block=self.min_block,
                min_aspect=self.min_aspect,
            )
            # The masked patches also as `mask_patches` slots (weight 0 past the last), the
            # positions masked patch modelling scores, as MLM has `mlm_positions`.
            positions, weights = masking.slots(np.flatnonzero(mask), self.mask_patches)
            fields.update(patch_mask=mask, patch_positions=positions, patch_weights=weights)
        return fields


@dataclasses.dataclass(frozen=True)
class PixelInput:
    """The pixels a model reads (`config.model.visual_input='patches'`): their size and patch
    size. Pipelines make regions when they are given none."""

    image_size: int
    patch_size: int

    @classmethod
    def of(cls, model: ml_collections.ConfigDict) -> PixelInput | None:
        if model.visual_input != 'patches':
            return None
        return cls(model.image_size, model.patch_size)


def image_fields(
    data: ml_collections.ConfigDict, pixel_input: PixelInput | None, *, train: bool
) -> RegionFields | PatchFields:
    """What pre-training examples make of an image: regions masked for MOP (`pixel_input`
    None), or pixels, augmented when `train` and block-masked as `data.patch_mask` says."""
    if pixel_input is None:
        return RegionFields(data)
    patch_mask = data.get('patch_mask') or {}
    return PatchFields(
        pixels.pixel_transform(data, pixel_input.image_size, train=train),
        grid=pixel_input.image_size // pixel_input.patch_size,
        mask_patches=patch_mask.get('count', 0),
        min_block=patch_mask.get('min_block', 16),
        min_aspect=patch_mask.get('min_aspect', 0.3),
    )


@dataclasses.dataclass(frozen=True)
class Concepts:
    """What MVPTR's concepts make of an example (`config.data.concepts`): the text's phrases
    (none for a question) and the image's tags."""

    phrases: Sequence[Phrase]
    tags: Sequence[str]


class PretrainingExample:
    """(text, answer scores, image) + rng -> one masked pre-training example; with
    `config.data.concepts` (MVPTR) also the text's phrases and the image's tags (see
    `concepts.ConceptFields` for the fields they add and change)."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        config: ml_collections.ConfigDict,
        visual: RegionFields | PatchFields,
        phrases: PhraseVocabulary | None = None,
    ):
        self.encode = TextEncoder(tokenizer, config.max_text_len)
        self.config = config
        self.visual = visual
        self.mask_id = tokenizer.mask_id
        self.special_ids = np.array(sorted(tokenizer.special_ids))
        self.random_ids = np.setdiff1d(np.arange(tokenizer.vocab_size), self.special_ids)
        settings = ConceptConfig.of(config)
        if settings is not None and phrases is None:
            raise ValueError('config.data.concepts is set: a PretrainingExample needs the phrases')
        self.concepts = (
            ConceptFields(tokenizer, phrases, settings, config) if settings is not None else None
        )

    def __call__(
        self,
        text: str,
        scores: np.ndarray,
        is_question: bool,
        image: dict[str, np.ndarray],
        image_key: int,
        rng: np.random.Generator,
        concepts: Concepts | None = None,
    ) -> dict[str, np.ndarray]:
        """`image` holds what `self.visual` reads (region arrays, or uint8 `pixels`); `scores`
        the [num_answers] QA targets; `image_key` an int32 that only this image has among the
        batch's (see `image_key`); `concepts` the text's phrases and the image's tags (needed
        with `config.data.concepts`)."""
        if self.concepts is not None:
            if concepts is None:
                raise ValueError('config.data.concepts is set: an example needs its concepts')
            text_fields = self.concepts.text(text, concepts.phrases, rng)
            text_fields.update(self.concepts.tags(concepts.tags, rng))
        else:
            text_fields = self._text(text, rng)
        return {
            **text_fields,
            **self.visual(image, rng),
            'is_question': np.int32(is_question),
            'answer_scores': scores.astype(np.float32, copy=False),
            'image_key': np.int32(image_key),
        }

    def _text(self, text: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
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
        return {
            'text_ids': words.values,
            'text_mask': text_mask,
            'mlm_positions': words.positions,
            'mlm_targets': words.targets,
            'mlm_weights': words.weights,
        }


def image_key(image_id: str | int) -> int:
    """A non-negative int32 for an image id: rows with equal keys show the same image, so ITM
    never pairs them as a negative and ITC never scores them as one (a CRC32 collision between
    two images of one batch, about 1 in 2**31 per pair, would only drop a negative)."""
    if isinstance(image_id, (int, np.integer)) and 0 <= image_id < 2**31:
        return int(image_id)
    return zlib.crc32(str(image_id).encode()) & 0x7FFFFFFF


class SceneExample:
    """grain random-map transform: synthetic scene + rng -> one pre-training example, pairing
    the image with one of its captions or (with probability `question_fraction`) questions."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        answers: Sequence[str],
        config: ml_collections.ConfigDict,
        visual: RegionFields | PatchFields,
        phrases: PhraseVocabulary | None = None,
    ):
        self.make = PretrainingExample(tokenizer, config, visual, phrases)
        self.question_fraction = config.question_fraction
        self.answer_index = {a: i for i, a in enumerate(answers)}
        self.with_concepts = self.make.concepts is not None

    def __call__(self, scene: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
        is_question = rng.random() < self.question_fraction and len(scene['questions']) > 0
        if is_question:
            question = scene['questions'][rng.integers(len(scene['questions']))]
            text = question['question']
            scores = answer_scores(question['answers'], self.answer_index)
        else:
            text = scene['captions'][rng.integers(len(scene['captions']))]
            scores = np.zeros(len(self.answer_index), np.float32)
        key = image_key(scene['image_id'])
        if not self.with_concepts:
            return self.make(text, scores, is_question, scene, key, rng)
        found = Concepts(
            phrases=[] if is_question else caption_phrases(text),
            tags=scene_tags(scene['object_labels']),
        )
        return self.make(text, scores, is_question, scene, key, rng, found)


class RecordExample:
    """grain random-map transform: (a caption or question record of a built dataset, its
    image) + rng -> one pre-training example. With `config.data.concepts` (MVPTR) its concepts
    are the caption record's phrases (a question has none) and the tags `object_names` gives
    the image's region object ids (`image['object_labels']`, the regions the example shows)."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        answers: Sequence[str],
        config: ml_collections.ConfigDict,
        visual: RegionFields | PatchFields,
        phrases: PhraseVocabulary | None = None,
        object_names: ObjectNames | None = None,
    ):
        self.make = PretrainingExample(tokenizer, config, visual, phrases)
        self.answer_index = {a: i for i, a in enumerate(answers)}
        if self.make.concepts is not None and object_names is None:
            raise ValueError('config.data.concepts is set: a RecordExample needs object names')
        self.object_names = object_names if self.make.concepts is not None else None

    def __call__(
        self,
        element: tuple[CaptionRecord | VqaRecord | GqaRecord, dict[str, np.ndarray]],
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        record, image = element
        text, answers = pretraining_text(record)
        scores = answer_scores(answers, self.answer_index)
        key = image_key(record.image_id)
        if self.object_names is None:
            return self.make(text, scores, bool(answers), image, key, rng)
        found = Concepts(
            phrases=record.phrase_tuples if isinstance(record, CaptionRecord) else (),
            tags=self.object_names.tags(image['object_labels'], record.image_id),
        )
        return self.make(text, scores, bool(answers), image, key, rng, found)


@dataclasses.dataclass(frozen=True)
class ImageJoin:
    """grain map over one source's records: record -> (record, its image), read where the
    example is made (in the input workers). The image is the region store's arrays, or decoded
    pixels from the image store (`config.data.images`) or, without one, from the record's own
    image bytes (a caption dataset built with `--images`)."""

    source: str  # 'karpathy:train', for messages
    regions: RegionStore | None = None
    pixels: PixelStore | None = None

    def __call__(self, record) -> tuple[CaptionRecord | VqaRecord | GqaRecord, dict]:
        if self.regions is not None:
            return record, self.regions(record.image_id)
        if self.pixels is not None:
            return record, {'pixels': self.pixels(record.image_id)}
        where = (
            f'{self.source} record of image {record.image_id!r} (caption '
            f'{record.caption_index}, file {record.image_path})'
        )
        return record, {'pixels': pixels.decode(record.image, where)}


def pretraining_text(record: CaptionRecord | VqaRecord | GqaRecord) -> tuple[str, tuple[str, ...]]:
    """(text, answers) of a record: a caption has no answers; a VQA question its ten annotator
    answers and a GQA question its one answer, all normalised the way the official VQA evaluator
    normalises them (one answer space for both)."""
    if isinstance(record, CaptionRecord):
        return record.caption, ()
    if isinstance(record, VqaRecord):
        return record.question, tuple(normalize_answer(a) for a in record.answers)
    answer = normalize_answer(record.answer)
    return record.question, (answer,) if answer else ()


def _at(labels: np.ndarray, masked: masking.Masked) -> np.ndarray:
    return np.where(masked.weights > 0, labels[masked.positions], -1).astype(np.int32)


# Validation masks words and regions at BERT's and LXMERT's 15% whatever the training rates
# (`data.mlm_prob`, `data.mop_prob`; with concepts also tags and phrases, `data.concepts.mcr_prob`
# and `phrase_mask_prob`), so masked-token accuracy means one thing across configs.
EVAL_MASK_PROB = 0.15


def eval_masking(data: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`data` with the validation masking rates."""
    data = ml_collections.ConfigDict(data.to_dict())
    data.update(mlm_prob=EVAL_MASK_PROB, mop_prob=EVAL_MASK_PROB)
    if data.get('concepts'):
        data.concepts.update(mcr_prob=EVAL_MASK_PROB, phrase_mask_prob=EVAL_MASK_PROB)
    return data


@dataclasses.dataclass
class PretrainingData:
    train: Iterator[dict[str, np.ndarray]]
    val: list[dict[str, np.ndarray]]  # fixed batches: the same examples and masks at every eval
    dims: DataDims
    tokenizer: Tokenizer
    phrases: PhraseVocabulary | None = None  # with config.data.concepts (MVPTR)


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


def local_batches(
    examples: grain.MapDataset, batch_size: int, process_index: int, process_count: int
) -> grain.MapDataset:
    """This process's rows of each global batch of `batch_size`, batched (the last partial
    batch dropped)."""
    local_rows = process_share(examples, batch_size, process_index, process_count)
    return local_rows.batch(batch_size // process_count, drop_remainder=True)


def iterate(
    batches: grain.MapDataset, reader_threads: int, input_workers: int = 0
) -> Iterator[dict[str, np.ndarray]]:
    """A checkpointable grain iterator over `batches`, made in `input_workers` processes (0: in
    this one), read ahead by `reader_threads` threads in each (see `input_workers.py`)."""
    return batch_iterator(batches, reader_threads=reader_threads, workers=input_workers)


def shuffled_batches(
    source: Sequence,
    to_example: Callable,
    *,
    batch_size: int,
    seed: int,
    reader_threads: int,
    input_workers: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless batches of `to_example(element, rng)` over `source` shuffled anew every epoch:
    this process's rows of each global batch (`batch_size` examples)."""
    examples = (
        grain.MapDataset.source(source)
        .shuffle(seed=seed)
        .repeat()
        .random_map(to_example, seed=seed)
    )
    return iterate(
        local_batches(examples, batch_size, process_index, process_count),
        reader_threads,
        input_workers,
    )


def synthetic_pretraining(
    data: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    *,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    init_bert: str = '',
    pixel_input: PixelInput | None = None,
) -> PretrainingData:
    """The embedded synthetic dataset (`config.data`) as pre-training input: region features,
    or, with `pixel_input`, the scenes rendered at its image size.

    `batch_size` is the global batch; each process gets its `batch_size / process_count` rows of
    every batch (see `process_share`). The tokenizer is trained on the synthetic texts at first
    use and kept in the workdir (or is the `vocab.txt` of `init_bert`, `config.init_bert`).
    """
    scenes = synthetic.SyntheticConfig.from_data(data)
    if pixel_input is not None:
        scenes = synthetic.with_pixels(scenes, pixel_input.image_size)
    tokenizer = run_tokenizer(data, workdir, init_bert=init_bert)
    phrases = None
    if ConceptConfig.of(data) is not None:
        phrases = run_phrases(data, workdir, tokenizer, is_writer=process_index == 0)
    val_data = eval_masking(data)
    to_example = SceneExample(
        tokenizer, synthetic.ANSWERS, data, image_fields(data, pixel_input, train=True), phrases
    )
    to_val_example = SceneExample(
        tokenizer,
        synthetic.ANSWERS,
        val_data,
        image_fields(val_data, pixel_input, train=False),
        phrases,
    )
    shares = dict(process_index=process_index, process_count=process_count)
    train = shuffled_batches(
        synthetic.CachedScenes(synthetic.SyntheticScenes(scenes, 'train', data.num_train)),
        to_example,
        batch_size=batch_size,
        seed=seed,
        reader_threads=data.reader_threads,
        input_workers=data.get('input_workers', 0),
        **shares,
    )
    val = grain.MapDataset.source(
        synthetic.SyntheticScenes(scenes, 'val', data.num_val)
    ).random_map(to_val_example, seed=seed + 1)
    val = list(local_batches(val, batch_size, **shares))
    num_phrases = len(phrases) if phrases is not None else None
    dims = data_dims(data, tokenizer.vocab_size, num_phrases=num_phrases)
    return PretrainingData(train, val, dims, tokenizer, phrases)


def built_pretraining(
    data: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    *,
    batch_size: int,
    seed: int,
    eval_examples: int,
    process_index: int = 0,
    process_count: int = 1,
    init_bert: str = '',
    pixel_input: PixelInput | None = None,
) -> PretrainingData:
    """Pre-training input from built datasets: a weighted mixture of caption and question
    sources (`data.sources`), each paired with its image: regions from `data.regions`, or,
    with `pixel_input`, pixels from the image-file dataset `data.images` (or, when that is
    empty, from the caption records' own image bytes: caption datasets built with `--images`).

    Each source is shuffled with its own seed and repeated, then the sources are interleaved
    in proportion to their weights (grain's mix), so the mixture holds in every stretch of
    training. Every text record's image must be in the store, checked before training starts.
    The answer vocabulary (question sources' answers seen `data.answer_min_count` times) is
    written to WORKDIR/answers.json at the first start and read back on resume. Validation is
    the first `eval_examples` of the same mixture over each source's `val_split`.

    MVPTR's concepts (`data.concepts`): each caption's phrases are those its record carries
    (MVPTR's caption records), kept when in the run's phrase vocabulary, counted over every
    source's training split at the first start and fixed in WORKDIR/phrases.json; an image's
    tags are the class names (`concepts.objects_vocab`) of its regions' object ids. Tags come
    from detector regions, so concepts need them (not pixels).
    """
    settings = ConceptConfig.of(data)
    tag_names = None
    if settings is not None:
        tag_names = _object_names(data, pixel_input)
    tokenizer = run_tokenizer(data, workdir, init_bert=init_bert)
    names = sorted(data.sources)
    store = _image_store(data, names, pixel_input)
    scans = {}
    for name in names:
        for key in ('split', 'val_split'):
            split = data.sources[name].get(key)
            if split:
                where = f'config.data.sources.{name}.{key}={split!r}'
                scans[name, key] = datasets.scan(data.data_dir, name, split)
                if store is not None:
                    store.check_ids(scans[name, key].image_ids, where)
                else:
                    _check_stored_images(data.data_dir, name, split, where)
    answers = fixed_answers(
        RunDir(workdir).pretraining_answers,
        sum((scans[n, 'split'].answers for n in names), collections.Counter()),
        data.answer_min_count,
        'data.answer_min_count',
        is_writer=process_index == 0,
    )
    phrases = None
    if settings is not None:
        phrases = run_phrases(
            data,
            workdir,
            tokenizer,
            is_writer=process_index == 0,
            counts=lambda: _training_phrases(scans, settings),
        )
    val_data = eval_masking(data)
    to_example = RecordExample(
        tokenizer,
        answers,
        data,
        image_fields(data, pixel_input, train=True),
        phrases,
        tag_names,
    )
    to_val_example = RecordExample(
        tokenizer,
        answers,
        val_data,
        image_fields(val_data, pixel_input, train=False),
        phrases,
        tag_names,
    )

    def mixture(key: str, shuffled: bool) -> grain.MapDataset:
        used = [name for name in names if data.sources[name].get(key)]
        sources = []
        for i, name in enumerate(used):
            split = data.sources[name][key]
            source = grain.MapDataset.source(datasets.records(data.data_dir, name, split))
            if shuffled:
                source = source.shuffle(seed=seed + i).repeat()
            join = ImageJoin(
                f'{name}:{split}',
                regions=store if isinstance(store, RegionStore) else None,
                pixels=store if isinstance(store, PixelStore) else None,
            )
            sources.append(source.map(join))
        return grain.MapDataset.mix(sources, [data.sources[name].weight for name in used])

    shares = dict(process_index=process_index, process_count=process_count)
    train = mixture('split', shuffled=True).random_map(to_example, seed=seed)
    train = iterate(
        local_batches(train, batch_size, **shares),
        data.reader_threads,
        data.get('input_workers', 0),
    )
    val = mixture('val_split', shuffled=False)
    if len(val) < eval_examples:
        raise ConfigError(
            f'config.eval_batches x config.batch_size = {eval_examples} validation examples, but '
            f'the val_split mixture of config.data.sources has {len(val)}'
        )
    val = val[:eval_examples].random_map(to_val_example, seed=seed + 1)
    val = list(local_batches(val, batch_size, **shares))
    num_phrases = len(phrases) if phrases is not None else None
    dims = data_dims(data, tokenizer.vocab_size, num_answers=len(answers), num_phrases=num_phrases)
    return PretrainingData(train, val, dims, tokenizer, phrases)


def _training_phrases(
    scans: dict[tuple[str, str], datasets.Scan], settings: ConceptConfig
) -> collections.Counter:
    """{phrase: training captions it is in} over every source's `split` (at a run's first
    start, before the vocabulary is fixed); ConfigError when phrase slots are configured but no
    phrase would be kept, rather than fixing an empty vocabulary in the workdir."""
    counts = sum(
        (scan.phrases for (_, key), scan in sorted(scans.items()) if key == 'split'),
        collections.Counter(),
    )
    if settings.max_phrases and max(counts.values(), default=0) < settings.phrase_min_count:
        sources = sorted({name for name, key in scans if key == 'split'})
        raise ConfigError(
            f'config.data.concepts.max_phrases={settings.max_phrases}, but no phrase is seen in '
            f'phrase_min_count={settings.phrase_min_count} or more training captions of '
            f'config.data.sources ({", ".join(sources)}): phrases come from caption records '
            "with MVPTR's 'phrases' field; set max_phrases=0 to train without them"
        )
    return counts


def _object_names(data: ml_collections.ConfigDict, pixel_input: PixelInput | None) -> ObjectNames:
    """The names MVPTR's tags are made of on built data, checked before anything is read:
    regions, not pixels, and a vocabulary file naming every object id (`object_names`)."""
    if pixel_input is not None:
        raise ConfigError(
            "config.data.concepts with config.model.visual_input='patches': MVPTR's tags are "
            'the class names of detector regions, and pixels have none; use visual_input='
            "'regions' with a region dataset (config.data.regions)"
        )
    return object_names(data)


def _image_store(
    data: ml_collections.ConfigDict, names: Sequence[str], pixel_input: PixelInput | None
) -> RegionStore | PixelStore | None:
    """Where pre-training images come from: the region store; with pixels the image store, or
    None when every source is a caption dataset that stores its own images."""
    if pixel_input is None:
        return region_store(data)
    if data.get('images'):
        return pixel_store(data)
    questions = [name for name in names if name not in datasets.CAPTION_DATASETS]
    if questions:
        raise ConfigError(
            f'{PIXELS_NEED_AN_IMAGE_DATASET} (the question sources {questions} store no images)'
        )
    return None


def _check_stored_images(data_dir: str, name: str, split: str, where: str) -> None:
    """Without an image store, caption records carry their image (built with `--images`);
    the first record shows whether the split was built that way."""
    records = datasets.records(data_dir, name, split)
    if len(records) and not records[0].image:
        raise ConfigError(
            f'{where}: the {name} records hold no image bytes (built without --images); rebuild '
            f'with --images, or build an image-file dataset and set config.data.images '
            "(pixels: config.model.visual_input='patches')"
        )
