"""MVPTR's concepts on the data side: caption phrases, the phrase vocabulary, the phrase and tag
fields of an example (masking included), the dims they change, and the synthetic pipeline."""

import collections

import ml_collections
import numpy as np
import pytest

from semvlp_jax.data import concepts, masking, pipeline, synthetic
from semvlp_jax.data.concepts import ConceptConfig, ConceptFields, PhraseVocabulary
from semvlp_jax.data.dims import DataDims, data_dims
from semvlp_jax.data.synthetic_language import caption_phrases
from semvlp_jax.data.tokenizers import WordPieceTokenizer
from semvlp_jax.errors import ConfigError
from semvlp_jax.workdir import RunDir
from tests.conftest import tiny_config

# --- caption_phrases ------------------------------------------------------------------------


@pytest.mark.parametrize(
    'caption, expected',
    [
        (
            'a small red circle left of a large blue square',
            [
                ('circle',),
                ('circle', 'small'),
                ('circle', 'red'),
                ('square',),
                ('square', 'large'),
                ('square', 'blue'),
                ('circle', 'left of', 'square'),
            ],
        ),
        (
            'there is a triangle above an orange cross',
            [('triangle',), ('cross',), ('cross', 'orange'), ('triangle', 'above', 'cross')],
        ),
        ('a diamond below a diamond', [('diamond',), ('diamond', 'below', 'diamond')]),
        (
            'a green square right of a small square',
            [
                ('square',),
                ('square', 'green'),
                ('square', 'small'),
                ('square', 'right of', 'square'),
            ],
        ),
        (
            'two circles and a large green square and three crosses',
            [('circle',), ('square',), ('square', 'large'), ('square', 'green'), ('cross',)],
        ),
        ('two crosses and a red cross', [('cross',), ('cross', 'red')]),
        (
            'two red shapes and a blue diamond and three green shapes',
            [('diamond',), ('diamond', 'blue')],
        ),
        ('four purple shapes', []),
        ('there are three objects', []),
    ],
)
def test_caption_phrases_of_each_template(caption, expected):
    assert caption_phrases(caption) == expected


@pytest.mark.parametrize(
    'caption',
    [
        'a pink circle left of a square',  # colour not in the grammar
        'a circle near a square',  # relation not in the grammar
        'there are three balls',
        'two circles and a hexagon',
        'there is a red circle',  # "there is" without a relation
        'a circle left of',
        '',
    ],
)
def test_text_outside_the_grammar_raises_naming_the_caption(caption):
    with pytest.raises(ValueError, match='outside the synthetic grammar') as error:
        caption_phrases(caption)
    assert repr(caption) in str(error.value)


def test_every_synthetic_caption_parses_into_phrases_of_its_own_words():
    scenes = synthetic.SyntheticScenes(synthetic.SyntheticConfig(render_pixels=False), 'train', 40)
    kinds = collections.Counter()
    for i in range(len(scenes)):
        shapes = {synthetic.SHAPES[label] for label in scenes[i]['object_labels'] if label >= 0}
        for caption in scenes[i]['captions']:
            phrases = caption_phrases(caption)
            assert len(phrases) == len(set(phrases))
            for phrase in phrases:
                kinds[len(phrase)] += 1
                assert phrase[0] in shapes and phrase[-1] in shapes | set(synthetic.COLOURS) | set(
                    synthetic.SIZES
                )
                assert all(word in caption for word in phrase[1:])
    assert kinds[1] and kinds[2] and kinds[3]


# --- A hand-made WordPiece tokenizer --------------------------------------------------------

WORDS = (
    '[PAD] [UNK] [CLS] [SEP] [MASK] a an there is are and two three small large '
    'left right of above below objects shapes'.split()
    + list(synthetic.COLOURS)
    + list(synthetic.SHAPES)
)
CAPTION = 'a red circle left of a blue square'
CAPTION_PHRASES = [
    ('circle',),
    ('circle', 'red'),
    ('square',),
    ('square', 'blue'),
    ('circle', 'left of', 'square'),
]


@pytest.fixture(scope='module')
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp('wordpiece') / 'vocab.txt'
    path.write_text('\n'.join(WORDS) + '\n')
    return WordPieceTokenizer(path)


def concept_data(**concept_overrides):
    data = ml_collections.ConfigDict(
        dict(
            name='synthetic',
            max_text_len=12,
            mlm_prob=0.0,
            max_mlm_predictions=4,
            concepts=dict(
                max_tags=6,
                max_phrases=4,
                phrase_min_count=1,
                mcr_prob=0.0,
                max_mcr_predictions=3,
                phrase_mask_prob=0.0,
            ),
        )
    )
    data.concepts.update(concept_overrides)
    return data


def fields_for(tokenizer, data, phrases=CAPTION_PHRASES):
    vocabulary = PhraseVocabulary(tuple(phrases), first_id=tokenizer.vocab_size)
    return ConceptFields(tokenizer, vocabulary, ConceptConfig.of(data), data), vocabulary


REAL_MASK_TOKENS = masking.mask_tokens


def only_masking(monkeypatch, word_ids):
    """Word masking that chooses exactly the positions holding `word_ids`."""
    real = REAL_MASK_TOKENS

    def mask_tokens(ids, eligible, rng, **kwargs):
        kwargs.update(prob=1.0, max_predictions=len(ids))
        return real(ids, eligible & np.isin(ids, word_ids), rng, **kwargs)

    monkeypatch.setattr(masking, 'mask_tokens', mask_tokens)


def phrase_slots(out):
    return out['text_ids'][out['phrase_positions'][out['phrase_weights'] > 0]]


# --- Phrase masking -------------------------------------------------------------------------


def test_unmasked_text_is_cls_words_phrases_sep_padded(tokenizer):
    fields, vocabulary = fields_for(tokenizer, concept_data())
    out = fields.text(CAPTION, CAPTION_PHRASES, np.random.default_rng(0))
    words = tokenizer.encode(CAPTION)
    assert len(words) == 8
    # Four phrase slots (max_phrases): the triple, fifth, is left out.
    phrase_ids = [vocabulary.first_id + i for i in range(4)]
    expected = [tokenizer.cls_id, *words, *phrase_ids, tokenizer.sep_id]
    expected += [tokenizer.pad_id] * (12 + 4 - len(expected))
    np.testing.assert_array_equal(out['text_ids'], expected)
    np.testing.assert_array_equal(out['text_mask'], [1] * 14 + [0] * 2)
    np.testing.assert_array_equal(out['phrase_positions'], [9, 10, 11, 12])
    np.testing.assert_array_equal(out['phrase_weights'], [1, 1, 1, 1])
    assert not out['mlm_weights'].any()


def test_phrases_containing_a_masked_word_become_mask(tokenizer, monkeypatch):
    fields, vocabulary = fields_for(tokenizer, concept_data(max_phrases=5))
    unmasked = fields.text(CAPTION, CAPTION_PHRASES, np.random.default_rng(0))['text_ids']
    (red,) = tokenizer.encode('red')
    (circle,) = tokenizer.encode('circle')
    only_masking(monkeypatch, [red])
    for seed in range(20):
        out = fields.text(CAPTION, CAPTION_PHRASES, np.random.default_rng(seed))
        # 'red' is the one MLM target; only ('circle', 'red') contains it.
        assert out['mlm_weights'].sum() == 1
        assert out['mlm_targets'][0] == red and out['mlm_positions'][0] == 2
        slots = phrase_slots(out)
        assert slots[1] == tokenizer.mask_id
        np.testing.assert_array_equal(np.delete(slots, 1), np.delete(unmasked[9:14], 1))
    only_masking(monkeypatch, [circle])
    out = fields.text(CAPTION, CAPTION_PHRASES, np.random.default_rng(0))
    mask = tokenizer.mask_id
    # circle, (circle, red) and the triple hold 'circle'; the square phrases do not.
    np.testing.assert_array_equal(phrase_slots(out), [mask, mask, *unmasked[11:13], mask])


def test_other_phrases_are_masked_80_10_10_at_phrase_mask_prob(tokenizer):
    fields, vocabulary = fields_for(tokenizer, concept_data(max_phrases=5, phrase_mask_prob=1.0))
    original = fields_for(tokenizer, concept_data(max_phrases=5))[0].encode(
        CAPTION, CAPTION_PHRASES
    )[0]
    words, phrase_part = original[:9], original[9:14]
    outcomes = collections.Counter()
    draws = 2000
    for seed in range(draws):
        out = fields.text(CAPTION, CAPTION_PHRASES, np.random.default_rng(seed))
        np.testing.assert_array_equal(out['text_ids'][:9], words)  # no word is masked
        for value, before in zip(phrase_slots(out), phrase_part):
            if value == tokenizer.mask_id:
                outcomes['mask'] += 1
            elif value == before:
                outcomes['same'] += 1
            else:
                assert value in vocabulary.ids  # a random phrase, never a word
                outcomes['other'] += 1
    total = 5 * draws
    # A random phrase is the same one 1 time in 5: kept 0.1 + 0.1 / 5, another 0.1 * 4 / 5.
    assert outcomes['mask'] / total == pytest.approx(0.8, abs=0.02)
    assert outcomes['same'] / total == pytest.approx(0.12, abs=0.015)
    assert outcomes['other'] / total == pytest.approx(0.08, abs=0.015)


def test_mlm_targets_only_words_and_replaces_with_words(tokenizer):
    data = concept_data(max_phrases=5)
    data.update(mlm_prob=1.0, max_mlm_predictions=20)
    fields, vocabulary = fields_for(tokenizer, data)
    for seed in range(30):
        out = fields.text(CAPTION, CAPTION_PHRASES, np.random.default_rng(seed))
        np.testing.assert_array_equal(out['mlm_positions'][:8], np.arange(1, 9))
        assert out['mlm_weights'].sum() == 8
        assert (out['mlm_targets'] < tokenizer.vocab_size).all()
        assert (out['text_ids'][1:9] < tokenizer.vocab_size).all()
        # Every phrase holds a masked word, so every phrase is [MASK].
        assert (phrase_slots(out) == tokenizer.mask_id).all()


def test_unknown_phrases_are_dropped_and_a_question_has_none(tokenizer):
    fields, vocabulary = fields_for(tokenizer, concept_data(), phrases=[('square',)])
    out = fields.text(CAPTION, CAPTION_PHRASES, np.random.default_rng(0))
    np.testing.assert_array_equal(out['phrase_weights'], [1, 0, 0, 0])
    np.testing.assert_array_equal(out['phrase_positions'], [9, 0, 0, 0])
    assert out['text_ids'][9] == vocabulary.id(('square',)) == tokenizer.vocab_size
    assert out['text_ids'][10] == tokenizer.sep_id
    out = fields.text('is there a circle', [], np.random.default_rng(0))
    assert not out['phrase_weights'].any()
    assert out['text_mask'].sum() == 4 + 2


def test_long_text_keeps_t_minus_2_word_pieces_then_phrases(tokenizer):
    fields, vocabulary = fields_for(tokenizer, concept_data())
    long = CAPTION + ' and ' + CAPTION
    out = fields.text(long, CAPTION_PHRASES, np.random.default_rng(0))
    np.testing.assert_array_equal(out['text_ids'][1:11], tokenizer.encode(long)[:10])
    np.testing.assert_array_equal(out['phrase_positions'], [11, 12, 13, 14])
    assert out['text_ids'][15] == tokenizer.sep_id and out['text_mask'].all()


# --- Tags -----------------------------------------------------------------------------------


def test_tags_are_real_region_class_names_in_row_order():
    assert concepts.scene_tags(np.array([3, 0, 3, -1, -1])) == ['diamond', 'circle', 'diamond']


def test_tag_fields_and_mcr_targets(tokenizer):
    fields, _ = fields_for(tokenizer, concept_data())
    tags = ['square', 'circle', 'cross', 'diamond', 'triangle']
    out = fields.tags(tags, np.random.default_rng(0))
    pieces = tokenizer.encode(' '.join(tags))
    # G = 6: [CLS], four tag pieces, [SEP].
    np.testing.assert_array_equal(out['tag_ids'], [tokenizer.cls_id, *pieces[:4], tokenizer.sep_id])
    np.testing.assert_array_equal(out['tag_mask'], [1] * 6)
    assert not out['mcr_weights'].any()
    fields, _ = fields_for(tokenizer, concept_data(mcr_prob=1.0))
    unmasked = [tokenizer.cls_id, *pieces[:2], tokenizer.sep_id, 0, 0]
    for seed in range(20):
        out = fields.tags(tags[:2], np.random.default_rng(seed))
        np.testing.assert_array_equal(out['mcr_positions'], [1, 2, 0])
        np.testing.assert_array_equal(out['mcr_weights'], [1, 1, 0])
        np.testing.assert_array_equal(out['mcr_targets'], [*pieces[:2], 0])
        np.testing.assert_array_equal(out['tag_mask'], [1, 1, 1, 1, 0, 0])
        np.testing.assert_array_equal(
            np.delete(out['tag_ids'], [1, 2]), np.delete(unmasked, [1, 2])
        )
        assert (out['tag_ids'][1:3] < tokenizer.vocab_size).all()


# --- Vocabulary -----------------------------------------------------------------------------

COUNTED_CAPTIONS = [
    'a red circle left of a square',
    'a red circle and two squares',
    'there is a square above a red circle',
    'two circles and a blue triangle',
    'a square below a blue triangle',
]


def counted():
    return concepts.count_phrases(map(caption_phrases, COUNTED_CAPTIONS))


def test_vocabulary_keeps_frequent_phrases_most_frequent_first():
    counts = counted()
    assert counts[('circle',)] == 4 and counts[('circle', 'red')] == 3
    vocabulary = PhraseVocabulary.from_counts(counts, first_id=100, min_count=2)
    assert vocabulary.phrases == (
        ('circle',),
        ('square',),
        ('circle', 'red'),
        ('triangle',),
        ('triangle', 'blue'),
    )
    assert vocabulary.id(('circle',)) == 100 and vocabulary.id(['triangle', 'blue']) == 104
    np.testing.assert_array_equal(vocabulary.ids, np.arange(100, 105))
    assert vocabulary.phrase(102) == ('circle', 'red')
    assert vocabulary.id(('circle', 'left of', 'square')) is None  # seen once
    assert vocabulary.id(('hexagon',)) is None
    # The same counts in another order give the same vocabulary.
    shuffled = collections.Counter(dict(reversed(list(counts.items()))))
    assert PhraseVocabulary.from_counts(shuffled, first_id=100, min_count=2) == vocabulary
    everything = PhraseVocabulary.from_counts(counts, first_id=100, min_count=1)
    assert len(everything) == len(counts) == 8


def test_vocabulary_is_fixed_in_the_workdir(tmp_path):
    path = RunDir(tmp_path).phrases
    assert path == tmp_path / 'phrases.json'
    # Another process computes it too but does not write.
    other = concepts.fixed_phrases(path, counted, first_id=50, min_count=2, is_writer=False)
    assert not path.exists()
    first = concepts.fixed_phrases(path, counted, first_id=50, min_count=2, is_writer=True)
    assert first == other and path.exists()

    def must_not_count():
        raise AssertionError('a kept vocabulary is read, not counted again')

    again = concepts.fixed_phrases(path, must_not_count, first_id=50, min_count=9, is_writer=True)
    assert again == first and again.phrases[0] == ('circle',) and again.first_id == 50
    with pytest.raises(ConfigError, match='another tokenizer'):
        concepts.fixed_phrases(path, must_not_count, first_id=51, min_count=2, is_writer=True)


def test_run_phrases_counts_synthetic_captions_once(tmp_path, tokenizer):
    data = tiny_config().data
    data.concepts = dict(phrase_min_count=5)
    vocabulary = concepts.run_phrases(data, tmp_path, tokenizer, is_writer=True)
    assert vocabulary.first_id == tokenizer.vocab_size
    # 5 objects, 5 x 8 attribute pairs, 5 x 4 x 5 relation triples: all frequent.
    assert len(vocabulary) == 145
    assert collections.Counter(map(len, vocabulary.phrases)) == {1: 5, 2: 40, 3: 100}
    kept = RunDir(tmp_path).phrases.read_text()
    data.concepts.phrase_min_count = 10**6  # a resumed run reads the kept file
    assert concepts.run_phrases(data, tmp_path, tokenizer, is_writer=True) == vocabulary
    assert RunDir(tmp_path).phrases.read_text() == kept
    # A fine-tune starts from its pre-training run's file.
    finetune = tmp_path / 'finetune'
    copied = concepts.run_phrases(
        data, finetune, tokenizer, is_writer=True, init_from=str(tmp_path)
    )
    assert copied == vocabulary and RunDir(finetune).phrases.read_text() == kept


# --- Config, dims and eval masking ----------------------------------------------------------


def test_concept_config_absent_empty_and_checked():
    data = ml_collections.ConfigDict(dict(name='synthetic'))
    assert ConceptConfig.of(data) is None
    data.concepts = {}
    assert ConceptConfig.of(data) is None
    data.concepts = dict(max_phrases=7)
    assert ConceptConfig.of(data) == ConceptConfig(max_phrases=7)
    data.concepts = dict(max_phrase=7)
    with pytest.raises(ConfigError, match='unknown keys'):
        ConceptConfig.of(data)
    data.concepts = dict(mcr_prob=1.5, max_tags=2)
    with pytest.raises(ConfigError, match='max_tags=2.*mcr_prob=1.5'):
        ConceptConfig.of(data)


def test_dims_with_concepts_grow_the_vocabulary_and_the_text():
    data = tiny_config().data
    plain = data_dims(data, 100)
    assert plain == DataDims(100, 20, 64, 5, 6, len(synthetic.ANSWERS))
    assert (plain.num_phrases, plain.max_tags) == (0, 0)
    data.concepts = dict(max_tags=9, max_phrases=4)
    dims = data_dims(data, 100, num_phrases=30)
    assert (dims.vocab_size, dims.max_text_len, dims.num_phrases, dims.max_tags) == (
        130,
        24,
        30,
        9,
    )
    with pytest.raises(ValueError, match='needs num_phrases'):
        data_dims(data, 100)
    with pytest.raises(ValueError, match='without config.data.concepts'):
        data_dims(tiny_config().data, 100, num_phrases=3)


def test_eval_masking_sets_concept_rates_and_adds_nothing_without():
    data = tiny_config().data
    assert 'concepts' not in pipeline.eval_masking(data)
    data.concepts = dict(mcr_prob=0.5, phrase_mask_prob=0.4, max_tags=7)
    val = pipeline.eval_masking(data).concepts
    assert (val.mcr_prob, val.phrase_mask_prob, val.max_tags) == (0.15, 0.15, 7)
    assert data.concepts.mcr_prob == 0.5


# --- Whole examples and the pipeline --------------------------------------------------------


def test_scene_example_layout(tokenizer):
    data = tiny_config().data
    data.update(max_text_len=12, question_fraction=0.0, mlm_prob=0.0)
    data.concepts = dict(max_tags=8, max_phrases=5, mcr_prob=1.0, phrase_mask_prob=0.0)
    scene = synthetic.SyntheticScenes(synthetic.SyntheticConfig(render_pixels=False), 'val', 1)[0]
    scene = dict(scene, captions=[CAPTION])
    vocabulary = PhraseVocabulary(tuple(reversed(CAPTION_PHRASES)), tokenizer.vocab_size)
    make = pipeline.SceneExample(
        tokenizer, synthetic.ANSWERS, data, pipeline.RegionFields(data), vocabulary
    )
    out = make(scene, np.random.default_rng(0))
    v = tokenizer.vocab_size
    # The caption's phrases in caption order, with the vocabulary's (reversed) ids.
    phrase_ids = [v + 4, v + 3, v + 2, v + 1, v]
    text = [tokenizer.cls_id, *tokenizer.encode(CAPTION), *phrase_ids, tokenizer.sep_id]
    np.testing.assert_array_equal(out['text_ids'], text + [tokenizer.pad_id] * 2)
    np.testing.assert_array_equal(out['text_mask'], [1] * 15 + [0] * 2)
    np.testing.assert_array_equal(out['text_ids'][out['phrase_positions']], phrase_ids)
    tags = concepts.scene_tags(scene['object_labels'])
    assert len(tags) == scene['region_mask'].sum()
    unmasked = [tokenizer.cls_id, *tokenizer.encode(' '.join(tags)), tokenizer.sep_id]
    real = out['mcr_weights'] > 0
    assert real.sum() == min(len(tags), 3)
    np.testing.assert_array_equal(
        out['mcr_targets'][real], np.array(unmasked)[out['mcr_positions'][real]]
    )
    np.testing.assert_array_equal(out['tag_mask'], [1] * len(unmasked) + [0] * (8 - len(unmasked)))
    unchosen = np.ones(8, bool)
    unchosen[out['mcr_positions'][real]] = False
    np.testing.assert_array_equal(
        out['tag_ids'][unchosen], np.pad(unmasked, (0, 8 - len(unmasked)))[unchosen]
    )
    assert {'region_features', 'mop_positions', 'answer_scores', 'image_key'} <= set(out)


def test_built_data_with_concepts_needs_an_objects_vocabulary(tmp_path):
    # Built data reads its concepts from the files (tests/test_concept_files.py); without the
    # vocabulary that names the regions' object ids it is refused before anything is read.
    data = tiny_config().data
    data.name = 'coco'
    data.concepts = dict(max_tags=8)
    with pytest.raises(ConfigError, match=r'config\.data\.concepts\.objects_vocab is not set'):
        pipeline.built_pretraining(data, tmp_path, batch_size=8, seed=0, eval_examples=8)


def test_synthetic_pipeline_with_concepts_has_every_field(tmp_path):
    config = tiny_config()
    config.data.update(num_train=16, num_val=8)
    config.data.concepts = dict(max_tags=10, max_phrases=5, max_mcr_predictions=3)
    data = pipeline.synthetic_pretraining(config.data, tmp_path, batch_size=8, seed=0)
    assert RunDir(tmp_path).phrases.exists()
    v, n = data.tokenizer.vocab_size, len(data.phrases)
    assert data.phrases.first_id == v and n == 145
    assert (data.dims.vocab_size, data.dims.max_text_len) == (v + n, 25)
    assert (data.dims.num_phrases, data.dims.max_tags) == (n, 10)
    expected = {
        'text_ids': ((8, 25), np.int32),
        'text_mask': ((8, 25), np.int32),
        'phrase_positions': ((8, 5), np.int32),
        'phrase_weights': ((8, 5), np.float32),
        'mlm_positions': ((8, 6), np.int32),
        'mlm_targets': ((8, 6), np.int32),
        'mlm_weights': ((8, 6), np.float32),
        'tag_ids': ((8, 10), np.int32),
        'tag_mask': ((8, 10), np.int32),
        'mcr_positions': ((8, 3), np.int32),
        'mcr_targets': ((8, 3), np.int32),
        'mcr_weights': ((8, 3), np.float32),
    }
    for batch in (next(data.train), data.val[0]):
        for field, (shape, dtype) in expected.items():
            assert batch[field].shape == shape and batch[field].dtype == dtype, field
        rows, slots = np.nonzero(batch['phrase_weights'])
        assert len(rows)
        phrases = batch['text_ids'][rows, batch['phrase_positions'][rows, slots]]
        assert ((phrases >= v) | (phrases == data.tokenizer.mask_id)).all()
        assert (phrases < v + n).all()
        assert batch['tag_mask'].sum(axis=1).min() >= 4  # [CLS], two tags or more, [SEP]
        assert (batch['mlm_targets'] < v).all() and (batch['mcr_targets'] < v).all()
        # A question has no phrases (it is not a caption of the grammar).
        assert not batch['phrase_weights'][batch['is_question'] == 1].any()


def test_examples_without_concepts_have_no_concept_fields(tiny_batch):
    assert not {'phrase_positions', 'tag_ids', 'mcr_positions'} & set(tiny_batch)
    assert tiny_batch['text_ids'].shape == (8, 20)
