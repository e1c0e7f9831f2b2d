"""Dataset builders: raw files in the real formats -> tfds ArrayRecord datasets read back without
TensorFlow, as records (`semvlp_jax.data.records`). Every value read back is compared with what
was written; every kind of bad input is named (file, record, reason) or, with skip_bad, skipped
and counted."""

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from semvlp_jax.data import build, build_report, builders, datasets, formats, records
from semvlp_jax.data.image_index import ImageIndex
from tests import raw_files as rf

# Sorted file order (a.tsv, b.tsv) differs from the ids' own order on purpose.
REGION_IDS = (
    'COCO_val2014_000000000042',
    'COCO_val2014_000000000007',
    'COCO_val2014_000000000003',
    'COCO_train2014_000000000011',
)


def make(name, manual_dir, data_dir, **kwargs):
    builder = builders.BUILDERS[name](data_dir=data_dir, **kwargs)
    return builder, builder.build(manual_dir)


def read_split(builder, split):
    """The split's records, read back as `datasets.records` gives them to pipelines."""
    source = datasets.records(Path(builder.data_dir).parents[1], builder.name, split)
    return [source[i] for i in range(len(source))]


def splits(builder):
    return {name: info.num_examples for name, info in builder.info.splits.items()}


def text_fields(records, *fields):
    return sorted(tuple(getattr(r, f) for f in fields) for r in records)


# ---------------------------------------------------------------- region features


@pytest.fixture(scope='module')
def region_images():
    return [
        rf.RegionImage.random(image_id, num_boxes=2 + i % 2, dim=8, seed=i)
        for i, image_id in enumerate(REGION_IDS)
    ]


@pytest.fixture(scope='module')
def region_tsv(tmp_path_factory, region_images):
    raw = tmp_path_factory.mktemp('raw_tsv')
    rf.write_region_tsv(raw / 'b.tsv', region_images[2:])
    rf.write_region_tsv(raw / 'a.tsv', region_images[:2])
    builder, report = make('region_tsv', raw, tmp_path_factory.mktemp('data'))
    return builder, report


def assert_region(record, image, labels=True):
    assert isinstance(record, records.RegionRecord)
    assert record.image_id == image.image_id
    assert (record.image_height, record.image_width) == (image.height, image.width)
    assert record.features.dtype == np.float32
    np.testing.assert_array_equal(record.features, image.features)
    np.testing.assert_array_equal(record.boxes, image.normalised_boxes)
    pixels = record.boxes * [image.width, image.height, image.width, image.height]
    np.testing.assert_allclose(pixels, image.boxes, rtol=1e-6)
    minus = np.full(len(image.boxes), -1)
    np.testing.assert_array_equal(record.objects, image.objects if labels else minus)
    np.testing.assert_array_equal(record.attributes, image.attrs if labels else minus)
    assert record.objects.dtype == record.attributes.dtype == np.int32


def test_region_tsv_values_and_order(region_tsv, region_images):
    builder, report = region_tsv
    assert splits(builder) == {'images': 4}
    records = read_split(builder, 'images')
    # a.tsv holds images 0-1 and b.tsv images 2-3: records follow sorted files, then lines.
    for record, image in zip(records, region_images, strict=True):
        assert_region(record, image)
    index = ImageIndex.read(builder.data_dir)
    assert index.image_ids == [r.image_id for r in records] == list(REGION_IDS)
    assert report.written == {'images': 4} and report.num_skipped() == 0
    assert report.feature_dim == 8


def test_region_npz_values_order_and_missing_labels(tmp_path, region_images):
    raw = tmp_path / 'raw'
    unlabelled = dataclasses.replace(region_images[3], objects=None, attrs=None)
    rf.write_region_npz(raw / 'sub2', region_images[:2])
    rf.write_region_npz(raw / 'sub1', [region_images[2], unlabelled])
    builder, _ = make('region_npz', raw, tmp_path / 'data')
    records = read_split(builder, 'images')
    # Sorted paths: sub1/COCO_train..11, sub1/COCO_val..03, sub2/COCO_val..07, sub2/COCO_val..42.
    expected = [unlabelled, region_images[2], region_images[1], region_images[0]]
    assert [r.image_id for r in records] == [i.image_id for i in expected]
    assert_region(records[0], region_images[3], labels=False)
    for record, image in zip(records[1:], expected[1:], strict=True):
        assert_region(record, image)
    assert ImageIndex.read(builder.data_dir).image_ids == [i.image_id for i in expected]


def test_open_dataset_and_saved_report(region_tsv, tmp_path):
    builder, _ = region_tsv
    data_dir = Path(builder.data_dir).parents[1]
    opened = builders.open_dataset('region_tsv', data_dir)
    assert len(opened.as_data_source('images')) == 4
    report = build_report.load_report(opened)
    assert report.written == {'images': 4} and report.feature_dim == 8
    with pytest.raises(FileNotFoundError, match='python -m semvlp_jax.data.build --dataset gqa'):
        builders.open_dataset('gqa', tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'coco'"):
        builders.open_dataset('coco', tmp_path)


def test_feature_dim_option(tmp_path, region_images):
    rf.write_region_tsv(tmp_path / 'raw' / 'a.tsv', region_images[:1])
    with pytest.raises(formats.BadInput, match='8-d features, expected 16'):
        make('region_tsv', tmp_path / 'raw', tmp_path / 'data', feature_dim=16)
    builder, report = make('region_tsv', tmp_path / 'raw', tmp_path / 'data', feature_dim=8)
    assert report.feature_dim == 8 and splits(builder) == {'images': 1}


# ---------------------------------------------------------------- captions

COCO_VAL = {
    'COCO_val2014_000000000042.png': ['A cat on a mat.', '  A white cat.  '],
    'COCO_val2014_000000000007.png': ['Two dogs.', 'Dogs play.', 'A park.'],
}
COCO_TRAIN = {'COCO_train2014_000000000011.png': ['A tree.']}


@pytest.fixture(scope='module')
def coco_with_images(tmp_path_factory):
    raw = tmp_path_factory.mktemp('raw_coco')
    rf.write_coco_captions(raw / 'annotations' / 'captions_val2014.json', COCO_VAL)
    rf.write_coco_captions(raw / 'annotations' / 'captions_train2014.json', COCO_TRAIN)
    pixels = {}
    for split, captions in (('val2014', COCO_VAL), ('train2014', COCO_TRAIN)):
        for seed, name in enumerate(captions):
            pixels[f'{split}/{name}'] = rf.write_image(raw / split / name, (5 + seed, 4), seed)
    builder, _ = make('coco_captions', raw, tmp_path_factory.mktemp('data'), images=True)
    return builder, raw, pixels


def test_coco_captions_values(coco_with_images):
    builder, _, _ = coco_with_images
    assert splits(builder) == {'val2014': 5, 'train2014': 1}
    fields = ('image_id', 'image_path', 'caption', 'caption_index')
    stem = 'COCO_val2014_000000000'
    assert text_fields(read_split(builder, 'val2014'), *fields) == sorted(
        [
            (f'{stem}042', f'val2014/{stem}042.png', 'A cat on a mat.', 0),
            (f'{stem}042', f'val2014/{stem}042.png', 'A white cat.', 1),
            (f'{stem}007', f'val2014/{stem}007.png', 'Two dogs.', 0),
            (f'{stem}007', f'val2014/{stem}007.png', 'Dogs play.', 1),
            (f'{stem}007', f'val2014/{stem}007.png', 'A park.', 2),
        ]
    )
    path = 'train2014/COCO_train2014_000000000011.png'
    assert text_fields(read_split(builder, 'train2014'), *fields) == [
        ('COCO_train2014_000000000011', path, 'A tree.', 0)
    ]


def test_images_are_the_file_bytes(coco_with_images):
    builder, raw, pixels = coco_with_images
    assert builder.info.features['image'].np_dtype == np.uint8
    for record in read_split(builder, 'val2014') + read_split(builder, 'train2014'):
        assert record.image == (raw / record.image_path).read_bytes()
        decoded = np.asarray(Image.open(io.BytesIO(record.image)))
        np.testing.assert_array_equal(decoded, pixels[record.image_path])


def test_caption_records_values(tmp_path):
    cat = 'val2014/COCO_val2014_000000000042.jpg'
    rf.write_caption_records(
        tmp_path / 'raw' / 'albef-coco_train.json',
        [(cat, 'A cat.'), ('flickr/1000092795.jpg', 'Men.'), (cat, ['Another cat.', ' Cat. '])],
    )
    rf.write_caption_records(tmp_path / 'raw' / 'test.json', [(cat, ['One.'])])
    builder, _ = make('caption_records', tmp_path / 'raw', tmp_path / 'data')
    assert splits(builder) == {'albef_coco_train': 4, 'test': 1}
    records = read_split(builder, 'albef_coco_train')
    fields = ('image_id', 'image_path', 'caption', 'caption_index')
    assert text_fields(records, *fields) == sorted(
        [
            ('COCO_val2014_000000000042', cat, 'A cat.', 0),
            ('1000092795', 'flickr/1000092795.jpg', 'Men.', 0),
            ('COCO_val2014_000000000042', cat, 'Another cat.', 1),
            ('COCO_val2014_000000000042', cat, 'Cat.', 2),
        ]
    )
    assert builder.info.features['image'].np_dtype == np.uint8
    assert all(r.image == b'' for r in records)
    assert text_fields(read_split(builder, 'test'), *fields) == [
        ('COCO_val2014_000000000042', cat, 'One.', 0)
    ]


def test_karpathy_values(tmp_path):
    rf.write_karpathy(
        tmp_path / 'raw' / 'dataset_coco.json',
        [
            ('COCO_val2014_000000000042.jpg', 'test', ['A cat.', 'A cat sits.'], 'val2014'),
            ('COCO_val2014_000000000007.jpg', 'restval', ['Dogs.'], 'val2014'),
            ('COCO_train2014_000000000011.jpg', 'train', ['A tree.'], 'train2014'),
            ('1000092795.jpg', 'val', ['Men.']),
        ],
    )
    builder, _ = make('karpathy', tmp_path / 'raw', tmp_path / 'data')
    assert splits(builder) == {'train': 2, 'val': 1, 'test': 2}
    fields = ('image_id', 'image_path', 'caption', 'caption_index')
    assert text_fields(read_split(builder, 'train'), *fields) == sorted(
        [
            ('COCO_val2014_000000000007', 'val2014/COCO_val2014_000000000007.jpg', 'Dogs.', 0),
            (
                'COCO_train2014_000000000011',
                'train2014/COCO_train2014_000000000011.jpg',
                'A tree.',
                0,
            ),
        ]
    )
    assert text_fields(read_split(builder, 'val'), *fields) == [
        ('1000092795', '1000092795.jpg', 'Men.', 0)
    ]
    cat = ('COCO_val2014_000000000042', 'val2014/COCO_val2014_000000000042.jpg')
    assert text_fields(read_split(builder, 'test'), *fields) == [
        (*cat, 'A cat sits.', 1),
        (*cat, 'A cat.', 0),
    ]


# ---------------------------------------------------------------- questions and statements

CAT_ANSWERS = ['white'] * 7 + ['grey'] * 3
DOG_ANSWERS = ['2', '2', 'two', '3', '2', '2', '1', '2', '2', '4']
DOG_CONFIDENCES = ('yes', 'yes', 'maybe', 'no', 'yes', 'yes', 'maybe', 'yes', 'yes', 'no')


def write_vqa_files(raw, extra_questions=(), extra_annotations=()):
    rf.write_vqa(
        raw,
        'val2014',
        [
            rf.vqa_question(420, 42, 'What color is the cat?'),
            rf.vqa_question(70, 7, 'How many dogs are there?'),
            *extra_questions,
        ],
        [
            rf.vqa_annotation(420, 42, CAT_ANSWERS),
            rf.vqa_annotation(
                70,
                7,
                DOG_ANSWERS,
                question_type='how many',
                answer_type='number',
                confidences=DOG_CONFIDENCES,
            ),
            *extra_annotations,
        ],
    )
    rf.write_vqa(raw, 'test-dev2015', [rf.vqa_question(30, 3, 'Is it raining?')])


def test_vqa_values(tmp_path):
    write_vqa_files(tmp_path / 'raw')
    builder, _ = make('vqa_v2', tmp_path / 'raw', tmp_path / 'data')
    assert splits(builder) == {'val': 2, 'test_dev': 1}
    assert isinstance(builder.info.features['question_id'], tfds.features.Text)  # ids are text
    by_id = {r.question_id: r for r in read_split(builder, 'val')}
    assert by_id['420'] == records.VqaRecord(
        question_id='420',
        image_id='42',
        question='What color is the cat?',
        question_type='what color is the',
        answer_type='other',
        multiple_choice_answer='white',
        answers=tuple(CAT_ANSWERS),
        answer_confidences=('yes',) * 10,
    )
    assert by_id['70'].answers == tuple(DOG_ANSWERS)  # file order, not sorted or deduplicated
    assert by_id['70'].answer_confidences == DOG_CONFIDENCES  # as written, answer by answer
    assert (by_id['70'].answer_type, by_id['70'].multiple_choice_answer) == ('number', '2')
    assert read_split(builder, 'test_dev') == [
        records.VqaRecord(
            question_id='30',
            image_id='3',
            question='Is it raining?',
            question_type='',
            answer_type='',
            multiple_choice_answer='',
            answers=(),
            answer_confidences=(),
        )
    ]


def test_vqa_answer_without_confidence_has_none(tmp_path):
    """Some re-exported annotation files drop `answer_confidence`: it is empty, not guessed."""
    confidences = ['yes', None, 'maybe', None, 'no', 'yes', 'yes', None, 'yes', 'yes']
    rf.write_vqa(
        tmp_path / 'raw',
        'val2014',
        [rf.vqa_question(5, 42, 'What is it?')],
        [rf.vqa_annotation(5, 42, ['cat'] * 10, confidences=confidences)],
    )
    builder, _ = make('vqa_v2', tmp_path / 'raw', tmp_path / 'data')
    [record] = read_split(builder, 'val')
    assert record.answer_confidences == tuple(c or '' for c in confidences)


def test_gqa_values(tmp_path):
    rf.write_gqa(
        tmp_path / 'raw',
        'train',
        {
            '201': rf.gqa_question('2354786', 'Is the sky dark?', 'yes', 'verify'),
            '202': rf.gqa_question('2354786', 'What is on the table?', 'cup', 'query'),
        },
    )
    rf.write_gqa(
        tmp_path / 'raw',
        'testdev',
        {'t1': rf.gqa_question('n161313', 'Which color is the car?', None, None)},
    )
    builder, _ = make('gqa', tmp_path / 'raw', tmp_path / 'data')
    assert splits(builder) == {'train': 2, 'testdev': 1}
    fields = ('question_id', 'image_id', 'question', 'answer', 'structural')
    assert text_fields(read_split(builder, 'train'), *fields) == [
        ('201', '2354786', 'Is the sky dark?', 'yes', 'verify'),
        ('202', '2354786', 'What is on the table?', 'cup', 'query'),
    ]
    assert text_fields(read_split(builder, 'testdev'), *fields) == [
        ('t1', 'n161313', 'Which color is the car?', '', '')
    ]


def write_nlvr2_files(raw):
    rf.write_nlvr2(
        raw / 'dev.json',
        [
            rf.nlvr2_record('dev-850-0-0', 'The left image has two dogs.', 'True'),
            rf.nlvr2_record('dev-850-0-1', 'There are no dogs.', 'False'),
        ],
    )
    rf.write_nlvr2(raw / 'test1.jsonl', [rf.nlvr2_record('test1-3-1-0', 'A dog.', None)])


def test_nlvr2_values(tmp_path):
    write_nlvr2_files(tmp_path / 'raw')
    builder, _ = make('nlvr2', tmp_path / 'raw', tmp_path / 'data')
    assert splits(builder) == {'dev': 2, 'test1': 1}
    fields = ('identifier', 'sentence', 'label', 'left_image_id', 'right_image_id')
    assert text_fields(read_split(builder, 'dev'), *fields) == [
        ('dev-850-0-0', 'The left image has two dogs.', 1, 'dev-850-0-img0', 'dev-850-0-img1'),
        ('dev-850-0-1', 'There are no dogs.', 0, 'dev-850-0-img0', 'dev-850-0-img1'),
    ]
    assert text_fields(read_split(builder, 'test1'), *fields) == [
        ('test1-3-1-0', 'A dog.', -1, 'test1-3-1-img0', 'test1-3-1-img1')
    ]
    assert builder.info.features['label'].np_dtype == np.int32


# ---------------------------------------------------------------- bad input, one kind at a time


def _tsv_line(image, **columns):
    fields = rf.region_tsv_fields(image)
    for name, value in columns.items():
        fields[formats.TSV_COLUMNS.index(name)] = value
    return '\t'.join(fields)


def _image(i=0, **changes):
    image = rf.RegionImage.random(f'img{i}', num_boxes=3, dim=8, seed=i)
    return dataclasses.replace(image, **changes)


def _with(array, index, value):
    array = array.copy()
    array[index] = value
    return array


def _tsv_case(lines):
    def write(raw):
        rf.write_region_tsv(raw / 'r.tsv', lines)

    return write


def _coco_case(annotations_edit=None, images=False, image_bytes=None):
    def write(raw):
        doc = rf.coco_captions_doc({'COCO_val2014_000000000042.png': ['A cat.', 'A mat.']})
        if annotations_edit:
            annotations_edit(doc['annotations'])
        rf.write_json(raw / 'annotations' / 'captions_val2014.json', doc)
        if image_bytes is not None:
            (raw / 'val2014').mkdir()
            (raw / 'val2014' / 'COCO_val2014_000000000042.png').write_bytes(image_bytes)

    return write


def _vqa_case(questions=None, answers=None):
    def write(raw):
        rf.write_vqa(
            raw,
            'val2014',
            questions or [rf.vqa_question(5, 42, 'What is it?')],
            [rf.vqa_annotation(5, 42, answers or ['cat'] * 10)],
        )

    return write


def _nlvr2_case(*lines):
    def write(raw):
        rf.write_nlvr2(raw / 'dev.json', [rf.nlvr2_record('dev-1-0-0', 'Dogs.'), *lines])

    return write


def _npz_case(image, omit=()):
    def write(raw):
        rf.write_region_npz(raw, [image], omit=omit)

    return write


_DUPLICATE = _image(0)
_BROKEN_PNG = b'\x89PNG\r\n\x1a\n' + b'\0' * 40


def bad(case_id, name, write, file, where, reason, detail, **kwargs):
    """A build of dataset `name` from what `write(raw)` writes must fail naming `file`, `where`
    and `reason`, with `detail` in its detail; `kwargs` go to the builder."""
    return pytest.param(name, kwargs, write, file, where, reason, detail, id=case_id)


BAD_CASES = [
    bad(
        'tsv columns',
        'region_tsv',
        _tsv_case([_image(0), 'a\tb\tc']),
        'r.tsv',
        2,
        formats.MALFORMED_TSV,
        '3 tab-separated columns',
    ),
    bad(
        'tsv base64',
        'region_tsv',
        _tsv_case([_tsv_line(_image(0), boxes='@@@@')]),
        'r.tsv',
        1,
        formats.MALFORMED_TSV,
        'boxes is not base64',
    ),
    bad(
        'tsv buffer size',
        'region_tsv',
        _tsv_case([_tsv_line(_image(0), num_boxes='4')]),
        'r.tsv',
        1,
        formats.MALFORMED_TSV,
        'objects_id holds 24 bytes, expected 32',
    ),
    bad(
        'tsv box outside',
        'region_tsv',
        _tsv_case([_image(0), _image(1, boxes=_with(_image(1).boxes, (1, 2), 65.0))]),
        'r.tsv',
        2,
        formats.BOX_OUTSIDE_IMAGE,
        'region 1 box',
    ),
    bad(
        'tsv box reversed',
        'region_tsv',
        _tsv_case([_image(0, boxes=_with(_image(0).boxes, 0, [30, 10, 20, 20]))]),
        'r.tsv',
        1,
        formats.BOX_OUTSIDE_IMAGE,
        'region 0',
    ),
    bad(
        'tsv nan',
        'region_tsv',
        _tsv_case([_image(0, features=_with(_image(0).features, (2, 3), np.nan))]),
        'r.tsv',
        1,
        formats.NON_FINITE,
        'features of region 2',
    ),
    bad(
        'tsv size',
        'region_tsv',
        _tsv_case([_tsv_line(_image(0), img_h='')]),
        'r.tsv',
        1,
        formats.MISSING_IMAGE_SIZE,
        'img_h is empty',
    ),
    bad(
        'tsv duplicate',
        'region_tsv',
        _tsv_case([_DUPLICATE, _image(1), _DUPLICATE]),
        'r.tsv',
        3,
        formats.DUPLICATE_ID,
        "'img0' already has features",
    ),
    bad(
        'tsv dimension',
        'region_tsv',
        _tsv_case([_image(0), _image(1, features=np.ones((3, 6), np.float32))]),
        'r.tsv',
        2,
        formats.WRONG_DIMENSION,
        '6-d features, expected 8',
    ),
    bad(
        'npz size',
        'region_npz',
        _npz_case(_image(3), omit=('image_h',)),
        'img3.npz',
        'image_h',
        formats.MISSING_IMAGE_SIZE,
        'boxes are normalised by it',
    ),
    bad(
        'npz inf',
        'region_npz',
        _npz_case(_image(3, boxes=_with(_image(3).boxes, (0, 1), np.inf))),
        'img3.npz',
        'file',
        formats.NON_FINITE,
        'boxes of region 0',
    ),
    bad(
        'coco key',
        'coco_captions',
        _coco_case(lambda a: a[1].pop('caption')),
        'annotations/captions_val2014.json',
        'annotations[1]',
        formats.MALFORMED_RECORD,
        "missing key 'caption'",
    ),
    bad(
        'coco empty',
        'coco_captions',
        _coco_case(lambda a: a[0].update(caption=' \n')),
        'annotations/captions_val2014.json',
        'annotations[0]',
        formats.EMPTY_CAPTION,
        'caption is blank',
    ),
    bad(
        'coco missing image',
        'coco_captions',
        _coco_case(),
        'annotations/captions_val2014.json',
        'annotations[0]',
        formats.MISSING_IMAGE,
        'COCO_val2014_000000000042.png',
        images=True,
    ),
    bad(
        'coco broken image',
        'coco_captions',
        _coco_case(image_bytes=_BROKEN_PNG),
        'annotations/captions_val2014.json',
        'annotations[0]',
        formats.UNDECODABLE_IMAGE,
        'COCO_val2014_000000000042.png',
        images=True,
    ),
    bad(
        'records empty',
        'caption_records',
        lambda raw: rf.write_caption_records(raw / 'c.json', [('a.jpg', ['A.', ''])]),
        'c.json',
        '[0].caption[1]',
        formats.EMPTY_CAPTION,
        'blank',
    ),
    bad(
        'records type',
        'caption_records',
        lambda raw: rf.write_caption_records(raw / 'c.json', [{'image': 'a.jpg', 'caption': 3}]),
        'c.json',
        '[0]',
        formats.MALFORMED_RECORD,
        "'caption' is integer",
    ),
    bad(
        'karpathy empty',
        'karpathy',
        lambda raw: rf.write_karpathy(raw / 'dataset_f.json', [('1.jpg', 'train', ['A.', ' '])]),
        'dataset_f.json',
        'images[0].sentences[1]',
        formats.EMPTY_CAPTION,
        'blank',
    ),
    bad(
        'vqa json',
        'vqa_v2',
        lambda raw: (raw / 'v2_OpenEnded_mscoco_val2014_questions.json').write_text(
            '{"questions": [\n  {"image_id": 4'
        ),
        'v2_OpenEnded_mscoco_val2014_questions.json',
        '2:17',
        formats.MALFORMED_JSON,
        'Expecting',
        skip_bad=True,
    ),
    bad(
        'vqa empty',
        'vqa_v2',
        _vqa_case([rf.vqa_question(5, 42, '  ')]),
        'v2_OpenEnded_mscoco_val2014_questions.json',
        'question 5',
        formats.EMPTY_QUESTION,
        'blank',
    ),
    bad(
        'vqa answers',
        'vqa_v2',
        _vqa_case(answers=['cat'] * 9),
        'v2_mscoco_val2014_annotations.json',
        'annotations[0] (question 5)',
        formats.MALFORMED_RECORD,
        '9 answers, expected 10',
    ),
    bad(
        'vqa no annotation',
        'vqa_v2',
        _vqa_case([rf.vqa_question(5, 42, 'A?'), rf.vqa_question(6, 42, 'B?')]),
        'v2_OpenEnded_mscoco_val2014_questions.json',
        'question 6',
        formats.MALFORMED_RECORD,
        'no annotation in v2_mscoco_val2014_annotations.json',
    ),
    bad(
        'vqa join',
        'vqa_v2',
        _vqa_case(),
        'v2_OpenEnded_mscoco_val2014_questions.json',
        'question 5',
        formats.NO_FEATURES,
        "image id '42' has no region features",
        image_index=ImageIndex(['COCO_val2014_000000000007']),
    ),
    bad(
        'gqa empty',
        'gqa',
        lambda raw: rf.write_gqa(raw, 'val', {'q1': rf.gqa_question('i1', '')}),
        'val_balanced_questions.json',
        'question q1',
        formats.EMPTY_QUESTION,
        'blank',
    ),
    bad(
        'nlvr2 json',
        'nlvr2',
        _nlvr2_case('{"identifier": "dev-1-0-1",'),
        'dev.json',
        2,
        formats.MALFORMED_JSON,
        'column',
    ),
    bad(
        'nlvr2 sentence',
        'nlvr2',
        _nlvr2_case(rf.nlvr2_record('dev-1-0-1', '')),
        'dev.json',
        2,
        formats.EMPTY_SENTENCE,
        'blank',
    ),
    bad(
        'nlvr2 label',
        'nlvr2',
        _nlvr2_case(rf.nlvr2_record('dev-1-0-1', 'A.', 'maybe')),
        'dev.json',
        2,
        formats.BAD_LABEL,
        "'maybe'",
    ),
    bad(
        'nlvr2 identifier',
        'nlvr2',
        _nlvr2_case(rf.nlvr2_record('dev_1_0_1', 'A.')),
        'dev.json',
        2,
        formats.MALFORMED_RECORD,
        'dev_1_0_1',
    ),
    bad(
        'nlvr2 duplicate',
        'nlvr2',
        _nlvr2_case(rf.nlvr2_record('dev-1-0-0', 'A.')),
        'dev.json',
        2,
        formats.DUPLICATE_ID,
        'dev-1-0-0',
    ),
    bad(
        'nlvr2 join',
        'nlvr2',
        _nlvr2_case(),
        'dev.json',
        1,
        formats.NO_FEATURES,
        "'dev-1-0-img1'",
        image_index=ImageIndex(['dev-1-0-img0']),
    ),
]


@pytest.mark.parametrize('name, kwargs, write, file, where, reason, detail', BAD_CASES)
def test_bad_input_is_named(tmp_path, name, kwargs, write, file, where, reason, detail):
    raw = tmp_path / 'raw'
    raw.mkdir()
    write(raw)
    builder = builders.BUILDERS[name](data_dir=tmp_path / 'data', **kwargs)
    with pytest.raises(formats.BadInput) as caught:
        builder.build(raw)
    error = caught.value
    assert (error.path, error.where, error.reason) == (str(raw / file), where, reason)
    assert str(error).startswith(f'{raw / file}:{where}: {reason}: ')
    assert detail in error.detail
    assert not builders.is_built(builder)  # nothing half-built is left to be mistaken for data


def test_every_reason_has_a_case():
    assert {case.values[5] for case in BAD_CASES} == set(formats.REASONS)


def test_missing_or_ambiguous_input_files(tmp_path):
    raw = tmp_path / 'raw'
    rf.write_karpathy(raw / 'dataset_coco.json', [('1.jpg', 'train', ['A.'])])
    rf.write_karpathy(raw / 'dataset_flickr30k.json', [('1.jpg', 'train', ['A.'])])
    with pytest.raises(formats.InputError, match='found dataset_coco.json, dataset_flickr30k.json'):
        make('karpathy', raw, tmp_path / 'data')
    with pytest.raises(formats.InputError, match=r'no \*\.tsv region-feature files'):
        make('region_tsv', raw, tmp_path / 'data')
    with pytest.raises(FileNotFoundError, match='nowhere'):
        make('gqa', tmp_path / 'nowhere', tmp_path / 'data')


# ---------------------------------------------------------------- skip_bad


def test_skip_bad_regions_counts_each_reason(tmp_path):
    good = [_image(0), _image(1), _image(2)]
    lines = [
        good[0],
        'only\tthree\tcolumns',
        good[1],
        _image(5, boxes=_with(_image(5).boxes, (0, 3), 49.0)),  # y2 > height 48
        _image(6, features=_with(_image(6).features, (0, 0), np.inf)),
        '',
        _image(0),  # duplicate of line 1
        _image(7, features=np.ones((3, 4), np.float32)),
        _tsv_line(_image(8), boxes='not base64!'),
        good[2],
    ]
    rf.write_region_tsv(tmp_path / 'raw' / 'r.tsv', lines)
    builder, report = make('region_tsv', tmp_path / 'raw', tmp_path / 'data', skip_bad=True)
    path = tmp_path / 'raw' / 'r.tsv'
    assert report.written == {'images': 3}
    assert report.skipped == {
        'images': {
            formats.MALFORMED_TSV: 2,
            formats.BOX_OUTSIDE_IMAGE: 1,
            formats.NON_FINITE: 1,
            formats.DUPLICATE_ID: 1,
            formats.WRONG_DIMENSION: 1,
        }
    }
    firsts = report.first_skipped['images']
    assert firsts[formats.MALFORMED_TSV].startswith(f'{path}:2: malformed TSV line')
    assert firsts[formats.BOX_OUTSIDE_IMAGE].startswith(f'{path}:4: ')
    assert firsts[formats.NON_FINITE].startswith(f'{path}:5: ')
    assert firsts[formats.DUPLICATE_ID].startswith(f'{path}:7: ')
    assert firsts[formats.WRONG_DIMENSION].startswith(f'{path}:8: ')
    records = read_split(builder, 'images')
    for record, image in zip(records, good, strict=True):
        assert_region(record, image)
    assert ImageIndex.read(builder.data_dir).image_ids == ['img0', 'img1', 'img2']
    text = report.format()
    assert 'images: 3 records written, 6 skipped' in text
    assert f'2 x malformed TSV line; first: {path}:2:' in text
    assert build_report.load_report(builder).skipped == report.skipped  # saved with the dataset


def test_skip_bad_text_counts_per_split_and_join(tmp_path):
    raw = tmp_path / 'raw'
    write_nlvr2_files(raw)
    rf.write_nlvr2(
        raw / 'train.json',
        [
            rf.nlvr2_record('train-1-0-0', 'Good.', 'False'),
            rf.nlvr2_record('train-1-0-1', 'Bad label.', 'yes'),
            '{not json',
            rf.nlvr2_record('train-2-0-0', 'Right image has no features.'),
            rf.nlvr2_record('train-1-0-2', '   ', 'True'),
            rf.nlvr2_record('train-1-0-3', 'Bad label again.', 'false'),
        ],
    )
    index = ImageIndex(
        ['dev-850-0-img0', 'dev-850-0-img1', 'test1-3-1-img0', 'test1-3-1-img1', 'train-1-0-img0']
        + ['train-1-0-img1', 'train-2-0-img0']
    )
    builder, report = make('nlvr2', raw, tmp_path / 'data', skip_bad=True, image_index=index)
    assert report.written == {'dev': 2, 'test1': 1, 'train': 1}
    assert report.skipped == {
        'train': {
            formats.BAD_LABEL: 2,
            formats.MALFORMED_JSON: 1,
            formats.NO_FEATURES: 1,
            formats.EMPTY_SENTENCE: 1,
        }
    }
    firsts = report.first_skipped['train']
    assert firsts[formats.BAD_LABEL].startswith(f'{raw / "train.json"}:2: bad label')
    assert firsts[formats.NO_FEATURES].endswith("image id 'train-2-0-img1' has no region features")
    assert [r.identifier for r in read_split(builder, 'train')] == ['train-1-0-0']


def test_skip_bad_vqa_reports_each_question_once(tmp_path):
    raw = tmp_path / 'raw'
    rf.write_vqa(
        raw,
        'val2014',
        [
            rf.vqa_question(1, 42, 'Good?'),
            rf.vqa_question(2, 42, ''),  # its annotation is not an orphan
            rf.vqa_question(3, 42, 'Nine answers?'),
            rf.vqa_question(4, 42, 'No annotation?'),
            rf.vqa_question(1, 42, 'Listed twice?'),
            rf.vqa_question(6, 99, 'Image without features?'),
        ],
        [
            rf.vqa_annotation(1, 42, ['yes'] * 10),
            rf.vqa_annotation(2, 42, ['no'] * 10),
            rf.vqa_annotation(3, 42, ['no'] * 9),
            rf.vqa_annotation(9, 42, ['no'] * 10),  # no such question
            rf.vqa_annotation(6, 99, ['no'] * 10),
        ],
    )
    index = ImageIndex(['COCO_val2014_000000000042'])
    builder, report = make('vqa_v2', raw, tmp_path / 'data', skip_bad=True, image_index=index)
    assert report.written == {'val': 1}
    assert report.skipped == {
        'val': {
            formats.EMPTY_QUESTION: 1,
            formats.MALFORMED_RECORD: 3,
            formats.DUPLICATE_ID: 1,
            formats.NO_FEATURES: 1,
        }
    }
    assert read_split(builder, 'val')[0].answers == ('yes',) * 10


def test_skip_bad_coco_keeps_caption_positions(tmp_path):
    doc = rf.coco_captions_doc(
        {
            'COCO_val2014_000000000042.png': ['', 'A cat.'],
            'COCO_val2014_000000000007.png': ['Dogs.'],
        }
    )
    doc['images'] += [
        {'id': 42, 'file_name': 'other.png'},  # a second image 42
        {'id': 8, 'file_name': 'COCO_val2014_000000000007.png'},  # one file, two ids
    ]
    doc['annotations'].append({'image_id': 5, 'id': 99, 'caption': 'No such image.'})
    rf.write_json(tmp_path / 'raw' / 'captions_val2014.json', doc)
    builder, report = make('coco_captions', tmp_path / 'raw', tmp_path / 'data', skip_bad=True)
    assert report.skipped == {
        'val2014': {formats.DUPLICATE_ID: 2, formats.EMPTY_CAPTION: 1, formats.MALFORMED_RECORD: 1}
    }
    firsts = report.first_skipped['val2014']
    assert ':images[2]: duplicate id: image id 42 is listed twice' in firsts[formats.DUPLICATE_ID]
    assert ':annotations[3]: malformed record: image_id 5 ' in firsts[formats.MALFORMED_RECORD]
    # 'A cat.' stays caption 1 of its image although caption 0 (blank) was skipped.
    assert text_fields(read_split(builder, 'val2014'), 'image_id', 'caption', 'caption_index') == [
        ('COCO_val2014_000000000007', 'Dogs.', 0),
        ('COCO_val2014_000000000042', 'A cat.', 1),
    ]


def test_skip_bad_karpathy_reports_a_bad_split_once(tmp_path):
    rf.write_karpathy(
        tmp_path / 'raw' / 'dataset_coco.json',
        [
            ('1.jpg', 'train', ['A.']),
            ('2.jpg', 'dev', ['B.']),
            ('3.jpg', 'val', ['C.']),
            ('4.jpg', 'test', ['D.']),
            ('1.jpg', 'test', ['E.']),
        ],
    )
    builder, report = make('karpathy', tmp_path / 'raw', tmp_path / 'data', skip_bad=True)
    assert report.written == {'train': 1, 'val': 1, 'test': 1}
    assert report.skipped == {
        'train': {formats.MALFORMED_RECORD: 1},
        'test': {formats.DUPLICATE_ID: 1},
    }
    assert "split 'dev' is not one of" in report.first_skipped['train'][formats.MALFORMED_RECORD]


def test_a_split_with_no_good_record_is_an_error(tmp_path):
    rf.write_nlvr2(tmp_path / 'raw' / 'dev.json', [rf.nlvr2_record('dev-1-0-0', '', 'True')])
    with pytest.raises(formats.InputError, match="split 'dev' has nothing to write: every"):
        make('nlvr2', tmp_path / 'raw', tmp_path / 'data', skip_bad=True)


def test_join_matches_integer_ids_to_feature_keys(tmp_path):
    write_vqa_files(tmp_path / 'raw')
    builder, report = make(
        'vqa_v2', tmp_path / 'raw', tmp_path / 'data', image_index=ImageIndex(REGION_IDS)
    )
    assert report.written == {'val': 2, 'test_dev': 1} and report.num_skipped() == 0
    rf.write_coco_captions(tmp_path / 'coco' / 'captions_val2014.json', COCO_VAL)
    with pytest.raises(formats.BadInput, match="COCO_val2014_000000000042' has no region"):
        make('coco_captions', tmp_path / 'coco', tmp_path / 'data', image_index=ImageIndex(['x']))
    index = ImageIndex(['COCO_val2014_000000000042', 'COCO_val2014_000000000007'])
    _, report = make('coco_captions', tmp_path / 'coco', tmp_path / 'data', image_index=index)
    assert report.written == {'val2014': 5}


# ---------------------------------------------------------------- CLI


def run_cli(capsys, *args):
    code = build.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_builds_joins_and_reports(tmp_path, capsys, region_images):
    data, regions, questions = tmp_path / 'data', tmp_path / 'regions', tmp_path / 'vqa'
    rf.write_region_tsv(regions / 'a.tsv', region_images)
    code, out, _ = run_cli(
        capsys, '--dataset', 'region_tsv', '--manual_dir', str(regions), '--data_dir', str(data)
    )
    assert code == 0
    assert 'images: 4 records written, 0 skipped' in out
    assert str(data / 'region_tsv' / builders.DATASET_VERSION) in out

    write_vqa_files(
        questions,
        extra_questions=[rf.vqa_question(990, 99, 'No features?')],
        extra_annotations=[rf.vqa_annotation(990, 99, ['no'] * 10)],
    )
    args = ('--dataset', 'vqa_v2', '--manual_dir', str(questions), '--data_dir', str(data))
    code, out, err = run_cli(capsys, *args, '--features', 'region_tsv')
    assert code == 2
    assert 'question 990: image has no features' in err and 'Traceback' not in err
    code, out, _ = run_cli(capsys, *args, '--features', 'region_tsv', '--skip_bad')
    assert code == 0
    assert 'val: 2 records written, 1 skipped' in out
    assert '1 x image has no features; first: ' in out and 'question 990' in out
    assert 'test_dev: 1 records written, 0 skipped' in out

    code, out, _ = run_cli(capsys, *args)
    assert code == 0 and 'already built' in out and 'val: 2 records written, 1 skipped' in out
    code, out, _ = run_cli(capsys, *args, '--overwrite', '--skip_bad')
    assert code == 0 and 'already built' not in out
    assert 'val: 3 records written, 0 skipped' in out  # no --features now: all three written


def test_cli_usage_errors(tmp_path, capsys):
    base = ('--manual_dir', str(tmp_path), '--data_dir', str(tmp_path / 'data'))
    code, _, err = run_cli(capsys, '--dataset', 'coco', *base)
    assert code == 2 and "--dataset 'coco' is not a dataset" in err
    code, _, err = run_cli(
        capsys,
        '--dataset',
        'gqa',
        '--manual_dir',
        str(tmp_path / 'no'),
        '--data_dir',
        str(tmp_path),
    )
    assert code == 2 and f'manual directory {tmp_path / "no"} does not exist' in err
    code, _, err = run_cli(capsys, '--dataset', 'gqa', '--images', *base)
    assert code == 2 and '--images does not apply to dataset gqa' in err
    code, _, err = run_cli(capsys, '--dataset', 'region_npz', '--feature_dim', '0', *base)
    assert code == 2 and '--feature_dim must be positive, got 0' in err
    code, _, err = run_cli(capsys, '--dataset', 'gqa', '--features', 'region_npz', *base)
    assert code == 2 and 'region_npz' in err and 'python -m semvlp_jax.data.build' in err
    assert run_cli(capsys, '--dataset', 'gqa')[0] == 2  # argparse: missing arguments
