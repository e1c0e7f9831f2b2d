"""MVPTR's concepts on the data side (`config.data.concepts`; PAPERS.md §2.3, §2.4 item 1).

The text side appends the caption's scene-graph phrases to its word pieces, each phrase one
extra vocabulary entry after the words: `[CLS] word-pieces phrase-ids [SEP]`, padded to
T + P (`data.max_text_len` + `concepts.max_phrases`). The visual side gains the image's object
tags as a second text, `[CLS] tag-pieces [SEP]` padded to G (`concepts.max_tags`), masked for
masked concept recovery (MCR, `mcr_*`).

Masking of the text (`ConceptFields.text`): words are masked for MLM as without concepts (word
positions only); then every phrase that contains a masked word becomes [MASK], and every other
phrase is chosen with probability `phrase_mask_prob` and then becomes [MASK] (80%), a random
phrase (10%) or stays (10%). Phrases are never prediction targets.

The phrase vocabulary (`PhraseVocabulary`: the phrases seen in at least `phrase_min_count`
training captions) indexes embedding rows, so a run fixes it at its first start in
WORKDIR/phrases.json and reads it back on resume (`run_phrases`), as it fixes its tokenizer.

Where they come from: synthetic scenes parse their captions (`caption_phrases`) and name their
shapes (`scene_tags`). Built data takes the phrases MVPTR's caption records carry
(`CaptionRecord.phrases`) and the tags from the region store's object ids, named by the Visual
Genome `objects_vocab.txt` at `concepts.objects_vocab` (`ObjectNames`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
from collections.abc import Callable, Iterable, Sequence

import ml_collections
import numpy as np
from etils import epath

from semvlp_jax.data import masking, synthetic
from semvlp_jax.data.synthetic_language import Phrase, caption_phrases
from semvlp_jax.data.tokenizers import TextEncoder, Tokenizer, write_atomically
from semvlp_jax.data.vocabularies import TOKENIZER_CORPUS_SCENES
from semvlp_jax.errors import ConfigError
from semvlp_jax.workdir import RunDir

# Train scenes whose captions the synthetic phrase vocabulary is counted over (as many as the
# tokenizer is trained on: every phrase of the grammar is seen there dozens of times).
PHRASE_CORPUS_SCENES = TOKENIZER_CORPUS_SCENES
# Replacement actions of a chosen phrase (BERT's): [MASK] below the first, a random phrase
# below the second, else kept.
_MASK_BELOW, _RANDOM_BELOW = 0.8, 0.9


@dataclasses.dataclass(frozen=True)
class ConceptConfig:
    """`config.data.concepts`; None from `of` when it is absent or empty (no concepts)."""

    max_tags: int = 12  # G: [CLS] tag pieces [SEP], padded
    max_phrases: int = 5  # P: phrase slots after the caption's word pieces
    phrase_min_count: int = 5  # training captions a phrase must be seen in to be kept
    mcr_prob: float = 0.15
    max_mcr_predictions: int = 3
    phrase_mask_prob: float = 0.15
    # Built data: the Visual Genome objects vocabulary (objects_vocab.txt, line i names object
    # id i) that names the region store's object ids as tags.
    objects_vocab: str = ''

    @classmethod
    def of(cls, data: ml_collections.ConfigDict) -> ConceptConfig | None:
        configured = data.get('concepts')
        if not configured:
            return None
        values = dict(configured)
        unknown = sorted(set(values) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(
                f'config.data.concepts: unknown keys {unknown}; expected some of '
                f'{[field.name for field in dataclasses.fields(cls)]}'
            )
        settings = cls(**values)
        problems = []
        if settings.max_tags < 3:
            problems.append(f'max_tags={settings.max_tags} (needs >= 3: [CLS] a tag [SEP])')
        for key in ('max_phrases', 'max_mcr_predictions'):
            if getattr(settings, key) < 0:
                problems.append(f'{key}={getattr(settings, key)} (needs >= 0)')
        if settings.phrase_min_count < 1:
            problems.append(f'phrase_min_count={settings.phrase_min_count} (needs >= 1)')
        for key in ('mcr_prob', 'phrase_mask_prob'):
            if not 0 <= getattr(settings, key) <= 1:
                problems.append(f'{key}={getattr(settings, key)} (needs 0 <= p <= 1)')
        if problems:
            raise ConfigError('config.data.concepts: ' + '; '.join(problems))
        return settings


# --- Phrase vocabulary ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PhraseVocabulary:
    """Phrases as tuples of words; phrase i has id `first_id + i`, where `first_id` is the word
    tokenizer's vocab_size (the phrases follow the words in one embedding table, so a
    BERT-initialised run keeps BERT's word ids)."""

    phrases: tuple[Phrase, ...]
    first_id: int
    _index: dict[Phrase, int] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        phrases = tuple(tuple(str(word) for word in phrase) for phrase in self.phrases)
        object.__setattr__(self, 'phrases', phrases)
        index = {phrase: self.first_id + i for i, phrase in enumerate(phrases)}
        if len(index) != len(phrases):
            raise ValueError('a phrase vocabulary lists each phrase once')
        object.__setattr__(self, '_index', index)

    def __len__(self) -> int:
        return len(self.phrases)

    def id(self, phrase: Sequence[str]) -> int | None:
        """The id of `phrase`, None when it is not in the vocabulary."""
        return self._index.get(tuple(phrase))

    def phrase(self, phrase_id: int) -> Phrase:
        return self.phrases[phrase_id - self.first_id]

    @property
    def ids(self) -> np.ndarray:
        """Every phrase id, int32 (what a random phrase replacement is drawn from)."""
        return np.arange(self.first_id, self.first_id + len(self), dtype=np.int32)

    @classmethod
    def from_counts(
        cls, counts: collections.Counter, *, first_id: int, min_count: int
    ) -> PhraseVocabulary:
        """The phrases of `counts` (captions each is seen in) seen in >= `min_count` of them,
        most frequent first, ties in tuple order."""
        kept = [phrase for phrase, count in counts.items() if count >= min_count]
        return cls(tuple(sorted(kept, key=lambda p: (-counts[p], p))), first_id)

    def to_json(self) -> str:
        return json.dumps({'first_id': self.first_id, 'phrases': [list(p) for p in self.phrases]})

    @classmethod
    def from_json(cls, text: str) -> PhraseVocabulary:
        stored = json.loads(text)
        return cls(tuple(tuple(p) for p in stored['phrases']), int(stored['first_id']))


def count_phrases(captions_phrases: Iterable[Sequence[Phrase]]) -> collections.Counter:
    """{phrase: number of captions it is seen in}, from each caption's phrases."""
    counts: collections.Counter = collections.Counter()
    for phrases in captions_phrases:
        counts.update(set(map(tuple, phrases)))
    return counts


def fixed_phrases(
    path: epath.Path,
    counts: Callable[[], collections.Counter],
    *,
    first_id: int,
    min_count: int,
    is_writer: bool,
) -> PhraseVocabulary:
    """The vocabulary kept at `path`, or, at the first start, the one of `counts()` (called only
    then) written there by the writer process; the others make the same one themselves.

    A kept vocabulary must follow the tokenizer it was made with (`first_id`)."""
    path = epath.Path(path)
    if path.exists():
        vocabulary = PhraseVocabulary.from_json(path.read_text())
        if vocabulary.first_id != first_id:
            raise ConfigError(
                f'{path}: the phrase ids start at {vocabulary.first_id}, but the tokenizer has '
                f'{first_id} words; the phrase vocabulary was made with another tokenizer'
            )
        return vocabulary
    vocabulary = PhraseVocabulary.from_counts(counts(), first_id=first_id, min_count=min_count)
    if is_writer:
        write_atomically(path, vocabulary.to_json().encode())
    return vocabulary


def synthetic_phrase_counts(data: ml_collections.ConfigDict) -> collections.Counter:
    """Phrase counts over the captions of the first PHRASE_CORPUS_SCENES train scenes."""
    scenes = synthetic.text_scenes(synthetic.SyntheticConfig.from_data(data), PHRASE_CORPUS_SCENES)
    return count_phrases(
        caption_phrases(caption) for i in range(len(scenes)) for caption in scenes[i]['captions']
    )


def run_phrases(
    data: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    tokenizer: Tokenizer,
    *,
    is_writer: bool,
    init_from: str = '',
    counts: Callable[[], collections.Counter] | None = None,
) -> PhraseVocabulary:
    """The phrase vocabulary of the run in `workdir` (`config.data.concepts` must be set),
    kept in WORKDIR/phrases.json: at the first start the pre-training run's copy for a
    fine-tune (`init_from`, the value of `config.init_from`) when it kept one, else counted
    over the training captions: the synthetic ones, or on built data `counts()` (called only
    then: {phrase: training captions it is in}, from the caption records, `datasets.scan`)."""
    settings = ConceptConfig.of(data)
    if settings is None:
        raise ValueError('run_phrases: config.data.concepts is not set')
    path = RunDir(workdir).phrases
    kept = RunDir.of(init_from).phrases if init_from else None
    if not path.exists() and kept is not None and kept.exists():
        if is_writer:
            write_atomically(path, kept.read_bytes())
        else:
            path = kept
    if counts is None:
        if not path.exists() and data.name != 'synthetic':
            raise ConfigError(
                f'config.data.concepts with config.data.name={data.name!r}: the phrase '
                'vocabulary is counted over the training caption records when pre-training '
                'starts, or copied from the run of config.init_from; neither is available here'
            )
        counts = functools.partial(synthetic_phrase_counts, data)
    return fixed_phrases(
        path,
        counts,
        first_id=tokenizer.vocab_size,
        min_count=settings.phrase_min_count,
        is_writer=is_writer,
    )


# --- Tags -----------------------------------------------------------------------------------


def scene_tags(object_labels: np.ndarray) -> list[str]:
    """A synthetic scene's tags: the class names of its real regions in row order
    (`object_labels` index into `synthetic.SHAPES`, -1 for padding)."""
    return [synthetic.SHAPES[label] for label in np.asarray(object_labels) if label >= 0]


OBJECTS_VOCAB_KEY = 'config.data.concepts.objects_vocab'


@dataclasses.dataclass(frozen=True)
class ObjectNames:
    """The class names of detector object ids: name i is object id i. Read from a Visual Genome
    `objects_vocab.txt` (bottom-up attention's, 1600 lines), one class per line; a line of
    comma-separated synonyms ("man,men") names its class by the first."""

    names: tuple[str, ...]
    path: str = ''  # the file read, for messages

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def read(cls, path: str | os.PathLike) -> ObjectNames:
        """The names of the file at `path`; ConfigError (naming OBJECTS_VOCAB_KEY) when it is
        missing, empty or has a blank line before its last name."""
        where = f'{OBJECTS_VOCAB_KEY}={str(path)!r}'
        file = epath.Path(path)
        if not str(path) or not file.is_file():
            raise ConfigError(
                f'{where}: no such file (the Visual Genome objects_vocab.txt: one object class '
                'per line, line i = object id i)'
            )
        lines = file.read_text(encoding='utf-8').splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        if not lines:
            raise ConfigError(
                f'{where}: the file is empty; expected one object class per line (line i = '
                'object id i)'
            )
        names = []
        for number, line in enumerate(lines, start=1):
            name = line.split(',')[0].strip()
            if not name:
                raise ConfigError(
                    f'{where}: line {number} (object id {number - 1}) names no class '
                    f'({line!r}); every line up to the last names one, in id order'
                )
            names.append(name)
        return cls(tuple(names), str(path))

    def check_covers(self, num_object_labels: int) -> None:
        """ConfigError unless every object id a region store passes (those below
        `config.data.num_object_labels`; it refuses larger ones) has a name here."""
        if len(self) < num_object_labels:
            raise ConfigError(
                f'{OBJECTS_VOCAB_KEY}={self.path!r} names {len(self)} object classes but '
                f'config.data.num_object_labels={num_object_labels}: object ids {len(self)}..'
                f'{num_object_labels - 1} would have no tag; is it the objects (not the '
                'attributes) vocabulary of these features?'
            )

    def tags(self, objects: np.ndarray, image_id: str) -> list[str]:
        """An image's tags: the class names of its regions' object ids in row order, -1 (no
        label) skipped; an id with no name raises ValueError naming the image, the row, the
        id and the vocabulary file."""
        tags = []
        for row, label in enumerate(np.asarray(objects).tolist()):
            if label < 0:
                continue
            if label >= len(self.names):
                raise ValueError(
                    f'image {image_id!r} region {row}: object id {label} is outside '
                    f'{OBJECTS_VOCAB_KEY}={self.path!r} ({len(self.names)} classes, ids '
                    f'0..{len(self.names) - 1})'
                )
            tags.append(self.names[label])
        return tags


def object_names(data: ml_collections.ConfigDict) -> ObjectNames:
    """The names built data's tags are made of (`concepts.objects_vocab`), checked to name
    every object id the region store passes (ids below `data.num_object_labels`), so that no
    example can meet an unnamed one."""
    settings = ConceptConfig.of(data)
    if settings is None or not settings.objects_vocab:
        raise ConfigError(
            f'{OBJECTS_VOCAB_KEY} is not set: on built data the tags are the class names of the '
            "regions' object ids; point it at the Visual Genome objects_vocab.txt of the "
            'features (line i names object id i)'
        )
    names = ObjectNames.read(settings.objects_vocab)
    names.check_covers(data.num_object_labels)
    return names


# --- Example fields -------------------------------------------------------------------------


def mask_phrases(
    ids: np.ndarray,
    slots: np.ndarray,
    contains_masked_word: np.ndarray,
    rng: np.random.Generator,
    *,
    mask_id: int,
    random_phrase_ids: np.ndarray,
    prob: float,
) -> np.ndarray:
    """`ids` with its phrases at positions `slots` masked: those where `contains_masked_word`
    (bool, one per slot) become `mask_id`; each other is chosen with probability `prob` and then
    becomes `mask_id` (80%), a random id of `random_phrase_ids` (10%) or stays (10%). Draws
    2 * len(slots) uniforms, then one id per random replacement."""
    masked = ids.copy()
    chosen = rng.random(len(slots)) < prob
    action = rng.random(len(slots))
    to_mask = contains_masked_word | (chosen & (action < _MASK_BELOW))
    to_random = ~contains_masked_word & chosen & (action >= _MASK_BELOW) & (action < _RANDOM_BELOW)
    masked[slots[to_mask]] = mask_id
    if to_random.any():
        masked[slots[to_random]] = rng.choice(random_phrase_ids, int(to_random.sum()))
    return masked


class ConceptFields:
    """(caption, its phrases, the image's tags) + rng -> an example's concept inputs:

    text_ids, text_mask         int32 [T + P]: [CLS] word-pieces phrase-ids [SEP], padded
    phrase_positions            int32 [P]: index in text_ids of each phrase (0 where unused)
    phrase_weights              float32 [P]: 1 for each real phrase
    mlm_positions, mlm_targets  int32 [max_mlm_predictions] (word positions only)
    mlm_weights                 float32 [max_mlm_predictions]
    tag_ids, tag_mask           int32 [G]: [CLS] tag-pieces [SEP], padded (tag_ids masked)
    mcr_positions, mcr_targets  int32 [max_mcr_predictions]
    mcr_weights                 float32 [max_mcr_predictions]
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        phrases: PhraseVocabulary,
        settings: ConceptConfig,
        data: ml_collections.ConfigDict,
    ):
        if phrases.first_id != tokenizer.vocab_size:
            raise ValueError(
                f"phrase ids start at {phrases.first_id}, not after the tokenizer's "
                f'{tokenizer.vocab_size} words'
            )
        self.tokenizer, self.phrases, self.settings = tokenizer, phrases, settings
        self.max_words = data.max_text_len  # T: [CLS] word pieces [SEP]
        self.mlm_prob, self.max_mlm_predictions = data.mlm_prob, data.max_mlm_predictions
        self.special_ids = np.array(sorted(tokenizer.special_ids))
        self.random_ids = np.setdiff1d(np.arange(tokenizer.vocab_size), self.special_ids)
        # The word pieces of each phrase, for "contains a masked word".
        self.phrase_pieces = {
            phrases.id(phrase): frozenset(tokenizer.encode(' '.join(phrase)))
            for phrase in phrases.phrases
        }

    @property
    def text_len(self) -> int:
        return self.max_words + self.settings.max_phrases

    def encode(self, text: str, phrases: Sequence[Phrase]) -> tuple[np.ndarray, ...]:
        """(ids, mask, phrase_positions, phrase_weights) of a text and its phrases, unmasked;
        phrases not in the vocabulary are dropped, then those beyond P."""
        t, p = self.tokenizer, self.settings.max_phrases
        pieces = t.encode(text)[: self.max_words - 2]
        known = [i for i in map(self.phrases.id, phrases) if i is not None][:p]
        tokens = [t.cls_id, *pieces, *known, t.sep_id]
        ids = np.full(self.text_len, t.pad_id, np.int32)
        ids[: len(tokens)] = tokens
        mask = np.zeros(self.text_len, np.int32)
        mask[: len(tokens)] = 1
        positions = np.zeros(p, np.int32)
        positions[: len(known)] = np.arange(len(known)) + 1 + len(pieces)
        weights = np.zeros(p, np.float32)
        weights[: len(known)] = 1.0
        return ids, mask, positions, weights

    def text(
        self, text: str, phrases: Sequence[Phrase], rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        ids, mask, positions, weights = self.encode(text, phrases)
        is_phrase = np.zeros(len(ids), bool)
        is_phrase[positions[weights > 0]] = True
        eligible = mask.astype(bool) & ~np.isin(ids, self.special_ids) & ~is_phrase
        words = masking.mask_tokens(
            ids,
            eligible,
            rng,
            mask_id=self.tokenizer.mask_id,
            random_ids=self.random_ids,
            prob=self.mlm_prob,
            max_predictions=self.max_mlm_predictions,
        )
        masked_words = set(words.targets[words.weights > 0].tolist())
        slots = positions[weights > 0]
        contains = np.array(
            [bool(self.phrase_pieces[int(ids[slot])] & masked_words) for slot in slots], bool
        )
        values = mask_phrases(
            words.values,
            slots,
            contains,
            rng,
            mask_id=self.tokenizer.mask_id,
            random_phrase_ids=self.phrases.ids,
            prob=self.settings.phrase_mask_prob,
        )
        return {
            'text_ids': values,
            'text_mask': mask,
            'phrase_positions': positions,
            'phrase_weights': weights,
            'mlm_positions': words.positions,
            'mlm_targets': words.targets,
            'mlm_weights': words.weights,
        }

    def tag_segment(self, tags: Sequence[str]) -> dict[str, np.ndarray]:
        """`tag_ids`, `tag_mask` of an image's tags, unmasked (what fine-tuning reads)."""
        ids, mask = TextEncoder(self.tokenizer, self.settings.max_tags)(' '.join(tags))
        return {'tag_ids': ids, 'tag_mask': mask}

    def tags(self, tags: Sequence[str], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The tag segment masked for MCR, with its targets."""
        t = self.tokenizer
        segment = self.tag_segment(tags)
        ids, mask = segment['tag_ids'], segment['tag_mask']
        eligible = mask.astype(bool) & ~np.isin(ids, self.special_ids)
        concepts = masking.mask_tokens(
            ids,
            eligible,
            rng,
            mask_id=t.mask_id,
            random_ids=self.random_ids,
            prob=self.settings.mcr_prob,
            max_predictions=self.settings.max_mcr_predictions,
        )
        return {
            'tag_ids': concepts.values,
            'tag_mask': mask,
            'mcr_positions': concepts.positions,
            'mcr_targets': concepts.targets,
            'mcr_weights': concepts.weights,
        }
