"""Tests for the embedded synthetic dataset: determinism, layout, truth of text, balance."""

import collections
import dataclasses
import re

import numpy as np
import pytest

from semvlp_jax.data.synthetic import (
    ANSWERS,
    BACKGROUND_RGB,
    COLOUR_RGB,
    COLOURS,
    PLURALS,
    SHAPES,
    SIZES,
    SPLITS,
    SyntheticConfig,
    SyntheticScenes,
    caption_corpus,
    detector_codes,
)

NUMBER_WORDS = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine']
# Sizes must be clear at a glance: small boxes are narrower than this, large ones wider.
SMALL_MAX_WIDTH, LARGE_MIN_WIDTH = 0.18, 0.21
# Stated relations must be clear too: object centres at least this far apart (normalised).
CLEAR_MARGIN = 0.05

# The caption and question grammar, written out independently of the generator.
_SIZE = r'(?:(small|large) )?'
_COLOUR = rf'(?:({"|".join(COLOURS)}) )?'
_SHAPE = rf'({"|".join(SHAPES)})'
NOUN_PHRASE = rf'an? {_SIZE}{_COLOUR}{_SHAPE}'
REFERENCE = rf'{_SIZE}{_COLOUR}{_SHAPE}'
RELATION = r'(left of|right of|above|below)'
RELATION_CAPTION = re.compile(rf'(?:there is )?{NOUN_PHRASE} {RELATION} {NOUN_PHRASE}')
COUNT_CAPTION = re.compile(r'there are (\w+) objects')
COLOUR_GROUP = re.compile(rf'(\w+) ({"|".join(COLOURS)}) shapes')
SHAPE_GROUP = re.compile(rf'(\w+) ({"|".join(PLURALS.values())})')
NOUN_PHRASE_ONLY = re.compile(NOUN_PHRASE)
_COUNTED = rf'(objects|{"|".join(PLURALS.values())})'
COUNT_QUESTION = re.compile(rf'how many (?:({"|".join(SIZES + COLOURS)}) )?{_COUNTED} are there\?')
COLOUR_QUESTION = re.compile(rf'what color is the {_SHAPE}\?')
EXISTENCE_QUESTION = re.compile(rf'is there {NOUN_PHRASE}\?')
RELATION_QUESTION = re.compile(rf'is the {REFERENCE} {RELATION} the {REFERENCE}\?')


def objects_of(scene):
    """The real objects of a scene as dicts, read back from its region arrays."""
    objects = []
    for row in np.flatnonzero(scene['region_mask']):
        box = scene['region_boxes'][row]
        objects.append(
            {
                'shape': SHAPES[scene['object_labels'][row]],
                'colour': COLOURS[scene['attribute_labels'][row]],
                'size': 'large' if box[2] - box[0] > LARGE_MIN_WIDTH else 'small',
                'centre': ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2),
            }
        )
    return objects


def matching(objects, size, colour, shape):
    return [
        o
        for o in objects
        if o['shape'] == shape and size in (None, o['size']) and colour in (None, o['colour'])
    ]


def relation_holds(a, b, relation):
    (ax, ay), (bx, by) = a['centre'], b['centre']
    return {'left of': bx - ax, 'right of': ax - bx, 'above': by - ay, 'below': ay - by}[
        relation
    ] > CLEAR_MARGIN


def scenes(count, split='val', **config):
    config.setdefault('render_pixels', True)
    dataset = SyntheticScenes(SyntheticConfig(**config), split, count)
    return [dataset[i] for i in range(count)]


def assert_scenes_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key])
        else:
            assert a[key] == b[key], key


def test_same_seed_split_index_gives_identical_scene_in_any_order():
    first = SyntheticScenes(SyntheticConfig(seed=3), 'train', 10)
    second = SyntheticScenes(SyntheticConfig(seed=3), 'train', 10)
    later = first[7]
    assert_scenes_equal(first[2], second[2])
    assert_scenes_equal(later, second[7])


def test_seeds_splits_and_indices_differ():
    base = SyntheticScenes(SyntheticConfig(seed=0), 'train', 5)[1]
    others = [
        SyntheticScenes(SyntheticConfig(seed=1), 'train', 5)[1],
        SyntheticScenes(SyntheticConfig(seed=0), 'val', 5)[1],
        SyntheticScenes(SyntheticConfig(seed=0), 'train', 5)[2],
    ]
    for other in others:
        assert not np.array_equal(base['region_boxes'], other['region_boxes'])
        assert base['captions'] != other['captions']
    image_ids = {
        SyntheticScenes(SyntheticConfig(), split, 20)[i]['image_id']
        for split in SPLITS
        for i in range(20)
    }
    assert len(image_ids) == 60


def test_shapes_and_dtypes_with_padding():
    config = dict(
        num_regions=7,
        feature_dim=24,
        image_size=40,
        min_objects=3,
        max_objects=6,
        captions_per_scene=3,
    )
    for scene in scenes(30, **config):
        assert scene['pixels'].shape == (40, 40, 3) and scene['pixels'].dtype == np.uint8
        assert scene['region_features'].shape == (7, 24)
        assert scene['region_features'].dtype == np.float32
        assert scene['region_boxes'].shape == (7, 4)
        assert scene['region_boxes'].dtype == np.float32
        assert scene['region_mask'].dtype == np.bool_
        assert scene['object_labels'].dtype == np.int32
        assert scene['attribute_labels'].dtype == np.int32
        mask = scene['region_mask']
        assert 3 <= mask.sum() <= 6
        assert not np.any(scene['region_features'][~mask])
        assert not np.any(scene['region_boxes'][~mask])
        assert np.all(scene['object_labels'][~mask] == -1)
        assert np.all(scene['attribute_labels'][~mask] == -1)
        assert np.all(scene['object_labels'][mask] >= 0)
        assert len(scene['captions']) == 3
        assert len(scene['questions']) == 4


def test_row_order_is_random():
    sorted_by = collections.Counter()
    for scene in scenes(100):
        mask = scene['region_mask']
        # Real objects come first, then padding.
        assert np.all(mask[: mask.sum()])
        boxes = scene['region_boxes'][mask]
        for name, key in [
            ('x', boxes[:, 0]),
            ('y', boxes[:, 1]),
            ('width', boxes[:, 2] - boxes[:, 0]),
        ]:
            sorted_by[name] += bool(np.all(np.diff(key) >= 0) or np.all(np.diff(key) <= 0))
    # Random order sorts 2, 3, 4 and 5 objects (each a quarter of scenes) with chance
    # 1, 1/3, 1/12 and 1/60; about 36 of 100 scenes.
    assert max(sorted_by.values()) < 50, sorted_by


def test_render_pixels_false_omits_pixels_only():
    with_pixels = SyntheticScenes(SyntheticConfig(render_pixels=True), 'test', 3)[2]
    without = SyntheticScenes(SyntheticConfig(render_pixels=False), 'test', 3)[2]
    assert 'pixels' not in without
    del with_pixels['pixels']
    assert_scenes_equal(with_pixels, without)


def test_boxes_are_separate_and_centre_pixels_have_the_object_colour():
    for scene in scenes(50):
        boxes = scene['region_boxes'][scene['region_mask']]
        assert np.all((boxes >= 0) & (boxes <= 1))
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        np.testing.assert_allclose(widths, heights, atol=1e-6)
        assert np.all((widths < SMALL_MAX_WIDTH) | (widths > LARGE_MIN_WIDTH)), widths
        for i in range(len(boxes)):
            for j in range(i):
                overlap_x = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
                overlap_y = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
                assert overlap_x <= 0 or overlap_y <= 0
        for obj in objects_of(scene):
            cx, cy = obj['centre']
            pixel = scene['pixels'][int(cy * 64), int(cx * 64)]
            assert tuple(pixel) == COLOUR_RGB[obj['colour']]
        # Away from every box (by more than a pixel) the image is plain background.
        centres = (np.arange(64) + 0.5) / 64
        inside_any = np.zeros((64, 64), bool)
        for x1, y1, x2, y2 in boxes + np.array([-1, -1, 1, 1]) / 64:
            inside_any |= np.outer((centres > y1) & (centres < y2), (centres > x1) & (centres < x2))
        assert np.all(scene['pixels'][~inside_any] == BACKGROUND_RGB)


def check_caption(caption, objects):
    """Asserts that ``caption`` follows the grammar and is true of ``objects``."""
    if match := RELATION_CAPTION.fullmatch(caption):
        size_a, colour_a, shape_a, relation, size_b, colour_b, shape_b = match.groups()
        assert any(
            relation_holds(a, b, relation)
            for a in matching(objects, size_a, colour_a, shape_a)
            for b in matching(objects, size_b, colour_b, shape_b)
        ), caption
        return 'relation'
    if match := COUNT_CAPTION.fullmatch(caption):
        assert NUMBER_WORDS.index(match.group(1)) == len(objects), caption
        return 'count'
    for part in caption.split(' and '):
        if match := COLOUR_GROUP.fullmatch(part):
            count = sum(o['colour'] == match.group(2) for o in objects)
            assert NUMBER_WORDS.index(match.group(1)) == count, caption
        elif match := SHAPE_GROUP.fullmatch(part):
            shape = SHAPES[list(PLURALS.values()).index(match.group(2))]
            count = sum(o['shape'] == shape for o in objects)
            assert NUMBER_WORDS.index(match.group(1)) == count, caption
        else:
            match = NOUN_PHRASE_ONLY.fullmatch(part)
            assert match, f'{caption!r} does not follow the grammar'
            assert matching(objects, *match.groups()), caption
    return 'group'


def test_captions_follow_the_grammar_and_are_true():
    kinds = collections.Counter()
    for scene in scenes(200):
        objects = objects_of(scene)
        assert len(set(scene['captions'])) == len(scene['captions'])
        for caption in scene['captions']:
            assert caption == caption.lower()
            kinds[check_caption(caption, objects)] += 1
    assert set(kinds) == {'relation', 'count', 'group'}


def test_check_caption_rejects_false_relations():
    left = {'shape': 'circle', 'colour': 'red', 'size': 'small', 'centre': (0.2, 0.5)}
    right = {'shape': 'square', 'colour': 'blue', 'size': 'large', 'centre': (0.8, 0.5)}
    check_caption('a red circle left of a blue square', [left, right])
    with pytest.raises(AssertionError):
        check_caption('a red circle right of a blue square', [left, right])


def true_answer(question, objects):
    """The answer to ``question`` computed from the objects alone."""
    text = question['question']
    if match := COUNT_QUESTION.fullmatch(text):
        adjective, noun = match.groups()
        if noun != 'objects':
            shape = SHAPES[list(PLURALS.values()).index(noun)]
            return str(sum(o['shape'] == shape for o in objects))
        if adjective is None:
            return str(len(objects))
        return str(sum(adjective in (o['colour'], o['size']) for o in objects))
    if match := COLOUR_QUESTION.fullmatch(text):
        (obj,) = matching(objects, None, None, match.group(1))  # the shape is unique
        return obj['colour']
    if match := EXISTENCE_QUESTION.fullmatch(text):
        return 'yes' if matching(objects, *match.groups()) else 'no'
    match = RELATION_QUESTION.fullmatch(text)
    assert match, f'{text!r} does not follow the grammar'
    size_a, colour_a, shape_a, relation, size_b, colour_b, shape_b = match.groups()
    (a,) = matching(objects, size_a, colour_a, shape_a)  # references name one object
    (b,) = matching(objects, size_b, colour_b, shape_b)
    if relation_holds(a, b, relation):
        return 'yes'
    opposite = {'left of': 'right of', 'right of': 'left of', 'above': 'below', 'below': 'above'}
    assert relation_holds(a, b, opposite[relation]), f'{text!r} is ambiguous'
    return 'no'


def test_question_answers_are_true():
    for scene in scenes(200):
        objects = objects_of(scene)
        types = [q['question_type'] for q in scene['questions']]
        assert types == ['how many', 'what color is the', 'is there a', 'is the']
        for question in scene['questions']:
            assert question['question'].startswith(question['question_type'])
            assert question['answer'] == true_answer(question, objects), question
            assert question['answer'] in ANSWERS


def test_annotators_mostly_agree_with_the_truth():
    majority_right = total = 0
    for scene in scenes(200):
        for question in scene['questions']:
            answers = question['answers']
            assert len(answers) == 10 and set(answers) <= set(ANSWERS)
            majority = collections.Counter(answers).most_common(1)[0][0]
            majority_right += majority == question['answer']
            total += 1
            if question['answer_type'] == 'yes/no':
                assert set(answers) <= {'yes', 'no'}
            elif question['answer_type'] == 'number':
                assert all(abs(int(a) - int(question['answer'])) <= 1 for a in answers)
            else:
                assert set(answers) <= set(COLOURS)
    assert majority_right / total > 0.97
    exact = scenes(20, annotator_accuracy=1.0)
    assert all(q['answers'] == [q['answer']] * 10 for s in exact for q in s['questions'])
    wrong = scenes(20, annotator_accuracy=0.0)
    assert all(q['answer'] not in q['answers'] for s in wrong for q in s['questions'])


def test_answers_are_balanced():
    answers = collections.defaultdict(collections.Counter)
    for scene in scenes(500, render_pixels=False):
        for question in scene['questions']:
            answers[question['question_type']][question['answer']] += 1
    for question_type, counts in answers.items():
        assert max(counts.values()) / 500 < 0.6, (question_type, counts)
    assert len(answers['how many']) >= 5
    assert set(answers['what color is the']) == set(COLOURS)
    assert min(answers['is there a'].values()) > 200
    assert min(answers['is the'].values()) > 200


def test_existence_negatives_mention_colours_and_shapes_of_the_scene():
    plausible = negatives = 0
    for scene in scenes(300, render_pixels=False):
        objects = objects_of(scene)
        question = scene['questions'][2]
        if question['answer'] == 'no':
            _, colour, shape = EXISTENCE_QUESTION.fullmatch(question['question']).groups()
            plausible += bool(
                matching(objects, None, None, shape) and any(o['colour'] == colour for o in objects)
            )
            negatives += 1
    assert plausible / negatives > 0.85


def decode_regions(features, feature_dim):
    codes = detector_codes(feature_dim)
    code_part = features[:, : codes.shapes.shape[1]]
    return np.argmax(code_part @ codes.shapes.T, 1), np.argmax(code_part @ codes.colours.T, 1)


def test_region_features_decode_to_labels_but_are_noisy():
    shape_right = colour_right = regions = 0
    for noisy, clean in zip(
        scenes(100, 'train', render_pixels=False),
        scenes(100, 'train', render_pixels=False, feature_noise=0.0),
    ):
        mask = noisy['region_mask']
        shapes, colours = decode_regions(noisy['region_features'][mask], 64)
        shape_right += np.sum(shapes == noisy['object_labels'][mask])
        colour_right += np.sum(colours == noisy['attribute_labels'][mask])
        regions += mask.sum()
        noise = noisy['region_features'][mask] - clean['region_features'][mask]
        assert 0.2 < noise.std() < 0.4
    assert shape_right / regions > 0.95 and colour_right / regions > 0.95


def test_detector_is_shared_across_seeds_and_splits():
    a = SyntheticScenes(SyntheticConfig(seed=5, feature_noise=0.0), 'train', 1)[0]
    b = SyntheticScenes(SyntheticConfig(seed=9, feature_noise=0.0), 'test', 1)[0]
    codes = detector_codes(64)
    for scene in (a, b):
        row = int(np.flatnonzero(scene['region_mask'])[0])
        shape, colour = scene['object_labels'][row], scene['attribute_labels'][row]
        residual = scene['region_features'][row, :-4] - codes.shapes[shape] - codes.colours[colour]
        # What is left is the size direction scaled by the side length.
        cosine = (
            residual
            @ codes.size_direction
            / (np.linalg.norm(residual) * np.linalg.norm(codes.size_direction))
        )
        assert cosine == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    'field, value',
    [
        ('max_objects', 9),
        ('min_objects', 1),
        ('annotator_accuracy', 1.5),
        ('feature_noise', -0.1),
        ('image_size', 8),
        ('seed', -1),
        ('captions_per_scene', 0),
    ],
)
def test_bad_config_value_names_the_field(field, value):
    with pytest.raises(ValueError, match=f'SyntheticConfig.{field}='):
        SyntheticConfig(**{field: value})


def test_unknown_split_and_bad_index():
    with pytest.raises(ValueError, match="'dev'"):
        SyntheticScenes(SyntheticConfig(), 'dev', 3)
    with pytest.raises(IndexError):
        SyntheticScenes(SyntheticConfig(), 'train', 3)[3]


def test_caption_corpus_holds_captions_and_questions_of_train_scenes():
    config = SyntheticConfig(captions_per_scene=2)
    corpus = list(caption_corpus(config, 3))
    train = SyntheticScenes(dataclasses.replace(config, render_pixels=False), 'train', 3)
    expected = [
        text
        for i in range(3)
        for text in train[i]['captions'] + [q['question'] for q in train[i]['questions']]
    ]
    assert corpus == expected and len(corpus) == 18
    words = {word for text in caption_corpus(SyntheticConfig(), 300) for word in text.split()}
    assert len(words) < 60
