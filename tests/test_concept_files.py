"""MVPTR's concepts from the real files users have: phrases from MVPTR's caption records (reader,
builder, records, example phrase slots), tags from a Visual Genome objects_vocab.txt naming the
region store's object ids, and built pre-training batches that carry both."""

import dataclasses
import json
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from configs import built_data
from semvlp_jax.data import builders, datasets, formats, images, pipeline
from semvlp_jax.data.concepts import ObjectNames
from semvlp_jax.data.image_index import ImageIndex
from semvlp_jax.data.records import PHRASE_SEPARATOR, CaptionRecord
from semvlp_jax.errors import ConfigError
from semvlp_jax.tasks import retrieval
from semvlp_jax.workdir import RunDir
from tests import raw_files as rf
from tests.conftest import tiny_config

DIM = 8

# objects_vocab.txt as bottom-up attention writes it: line i names object id i; a line of
# synonyms names its class by the first.
VOCAB_LINES = ('man,men', 'dog', 'frisbee', 'tree,trees', 'park', 'ball', 'tennis racket')
CLASS_NAMES = ('man', 'dog', 'frisbee', 'tree', 'park', 'ball', 'tennis racket')


def coco(number: int) -> str:
    return f'COCO_train2014_{number:012d}'


# Region object ids per image (-1: no label). Image 6 has five boxes: with num_regions=4 its
# last box is not shown, so its tag is not either.
OBJECTS = {
    coco(1): [0, 2],
    coco(2): [1, 5, 4],
    coco(3): [1, 4],
    coco(4): [3, 4, 4],
    coco(5): [0, 6, 4],
    coco(6): [6, -1, 0, 3, 2],
}

# MVPTR caption records (`tools/phrase_parse.sh` output): image ids as the detector's keys or
# as COCO's integer ids, `text`, `label`, and `phrases` (absent from one entry).
TRAIN = [
    (1, 'a man throws a frisbee', [['man'], ['frisbee'], ['man', 'throw', 'frisbee']]),
    (
        coco(1),
        'a happy man in a park',
        [['man'], ['man', 'happy'], ['park'], ['man', 'in', 'park']],
    ),
    (2, 'a dog catches a ball', [['dog'], ['ball'], ['dog', 'catch', 'ball']]),
    (3, 'a brown dog in a park', [['dog'], ['dog', 'brown'], ['park'], ['dog', 'in', 'park']]),
    # [park] twice in one caption counts once.
    (coco(4), 'a tree in a park', [['tree'], ['park'], ['park'], ['tree', 'in', 'park']]),
    (
        5,
        'a man with a tennis racket',
        [['man'], ['tennis racket'], ['man', 'with', 'tennis racket']],
    ),
    (6, 'a dog', None),
    (coco(3), 'a dog in a park', [['dog'], ['park'], ['dog', 'in', 'park']]),
]
# Val phrases are not counted: (tree, in, park) is in one training caption only.
VAL = [
    (4, 'trees in a park', [['tree'], ['park'], ['tree', 'in', 'park']]),
    (coco(5), 'a man in a park', [['man'], ['park'], ['man', 'in', 'park']]),
    (2, 'a dog in the park', [['dog'], ['park'], ['tree', 'in', 'park'], ['dog', 'in', 'park']]),
    (6, 'a man near a tree', [['man'], ['tree']]),
]
# phrase_min_count=2 over TRAIN: most frequent first, ties in tuple order.
KEPT = (('park',), ('dog',), ('man',), ('dog', 'in', 'park'))

WORDS = (
    '[PAD] [UNK] [CLS] [SEP] [MASK] a the in with near happy brown throws catches trees '
    'man dog frisbee tree park ball tennis racket'
).split()


def mvptr_entry(image_id, text, phrases, label=1) -> dict:
    entry = {'image_id': image_id, 'text': text, 'label': label}
    if phrases is not None:
        entry['phrases'] = phrases
    return entry


def stored(phrases) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(phrase) for phrase in phrases or ())


# --------------------------------------------------------------------------- the reader


def test_reader_reads_mvptr_records_with_their_phrases(tmp_path):
    path = rf.write_json(
        tmp_path / 'train.json',
        [
            mvptr_entry(
                1,
                'A man throws a frisbee.',
                [['man'], [' man ', 'young'], ['man', 'throw', 'frisbee']],
            ),
            mvptr_entry('COCO_train2014_000000000001', 'A man.', None),
            mvptr_entry(1, 'Two men.', []),
            # An ALBEF entry may carry phrases too; its image id is the file's stem.
            {'image': 'train2014/COCO_x_7.jpg', 'caption': ['A dog.'], 'phrases': [['dog']]},
        ],
    )
    records = [record for _, record in formats.read_caption_records(path)]
    assert [(r.image_id, r.caption, r.caption_index, r.image_path) for r in records] == [
        ('1', 'A man throws a frisbee.', 0, ''),
        ('COCO_train2014_000000000001', 'A man.', 0, ''),
        ('1', 'Two men.', 1, ''),
        ('COCO_x_7', 'A dog.', 0, 'train2014/COCO_x_7.jpg'),
    ]
    assert records[0].phrase_tuples == (('man',), ('man', 'young'), ('man', 'throw', 'frisbee'))
    assert records[0].phrases == (
        'man',
        f'man{PHRASE_SEPARATOR}young',
        PHRASE_SEPARATOR.join(['man', 'throw', 'frisbee']),
    )
    assert records[1].phrases == records[2].phrases == ()
    assert records[3].phrase_tuples == (('dog',),)
    # The integer id joins the detector's key as VQA's do.
    index = ImageIndex(['COCO_train2014_000000000001', 'COCO_x_7'])
    assert len(list(formats.read_caption_records(path, image_index=index))) == 4


def test_coco_and_karpathy_captions_have_no_phrases(tmp_path):
    coco_path = tmp_path / 'captions_val2014.json'
    rf.write_coco_captions(coco_path, {'COCO_val2014_000000000042.jpg': ['A cat.', 'Cats.']})
    karpathy_path = tmp_path / 'dataset_coco.json'
    rf.write_karpathy(karpathy_path, [('1.jpg', 'train', ['A dog.', 'Dogs.'])])
    found = [r for _, r in formats.read_coco_captions(coco_path, image_dir='val2014')]
    found += [r for _, r in formats.read_karpathy(karpathy_path, split='train')]
    assert len(found) == 4
    assert all(r.phrases == () and r.phrase_tuples == () for r in found)


KINDS = '([object], [object, attribute] or [subject, relation, object])'
MALFORMED = [
    ('not a list', ['man', 'dog'], 'phrase is string, expected an array of 1-3 words', 0),
    ('empty', [['man'], []], f'phrase has 0 words, expected 1-3 {KINDS}', 1),
    ('four words', [['a', 'b', 'c', 'd']], f'phrase has 4 words, expected 1-3 {KINDS}', 0),
    ('not a string', [['man', 3]], 'phrase word 1 is integer, expected a string', 0),
    ('blank word', [['dog'], ['man', '  ', 'dog']], 'phrase word 1 is blank', 1),
    (
        'separator',
        [[f'man{PHRASE_SEPARATOR}men']],
        "phrase word 0 'man\\x1fmen' holds the phrase separator U+001F",
        0,
    ),
]


@pytest.mark.parametrize('case, phrases, detail, index', MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_phrase_names_file_record_and_reason(tmp_path, case, phrases, detail, index):
    path = rf.write_json(
        tmp_path / 'train.json',
        [mvptr_entry(1, 'A man.', [['man']]), mvptr_entry(42, 'A dog.', phrases)],
    )
    with pytest.raises(formats.BadInput) as caught:
        list(formats.read_caption_records(path))
    error = caught.value
    assert (error.path, error.where, error.reason) == (
        str(path),
        f'[1].phrases[{index}]',
        formats.MALFORMED_RECORD,
    )
    assert error.detail == f"image '42': {detail}"
    assert str(error) == f"{path}:[1].phrases[{index}]: malformed record: image '42': {detail}"


def test_phrases_belong_to_one_caption_and_need_a_path_for_images(tmp_path):
    path = rf.write_json(
        tmp_path / 'c.json', [{'image_id': 7, 'caption': ['A.', 'B.'], 'phrases': [['a']]}]
    )
    with pytest.raises(
        formats.BadInput,
        match=r"c\.json:\[0\]: malformed record: image '7': "
        r"'phrases' are one caption's, but 'caption' lists 2 captions",
    ):
        list(formats.read_caption_records(path))
    path = rf.write_json(tmp_path / 'd.json', [{'image_id': 7, 'caption': 'A.', 'text': 'A.'}])
    with pytest.raises(formats.BadInput, match="has both 'caption' and 'text'"):
        list(formats.read_caption_records(path))
    path = rf.write_json(tmp_path / 'e.json', [{'text': 'A.'}])
    with pytest.raises(formats.BadInput, match=r"missing key 'image' \(or MVPTR's 'image_id'\)"):
        list(formats.read_caption_records(path))
    path = rf.write_json(tmp_path / 'f.json', [mvptr_entry(7, 'A.', None)])
    with pytest.raises(formats.BadInput, match="image '7' has no 'image' path"):
        list(formats.read_caption_records(path, images=formats.ImageReader(tmp_path)))


# --------------------------------------------------------------------------- the builder


def test_phrases_round_trip_through_the_builder(tmp_path):
    raw = tmp_path / 'raw'
    rf.write_json(raw / 'train.json', [mvptr_entry(*entry) for entry in TRAIN])
    rf.write_json(raw / 'val.json', [mvptr_entry(*entry) for entry in VAL])
    builder = builders.BUILDERS['caption_records'](data_dir=tmp_path / 'data')
    report = builder.build(raw)
    assert report.written == {'train': len(TRAIN), 'val': len(VAL)}
    # Caption datasets are at the version whose records carry phrases; regions keep theirs.
    assert Path(builder.data_dir).name == builders.CAPTION_DATASET_VERSION == report.version
    assert str(builders.RegionTsv(data_dir=tmp_path / 'data').version) == builders.DATASET_VERSION
    source = datasets.records(str(tmp_path / 'data'), 'caption_records', 'train')
    found = sorted(
        (source[i].image_id, source[i].caption, source[i].phrase_tuples) for i in range(len(source))
    )
    assert found == sorted((str(i), text, stored(p)) for i, text, p in TRAIN)
    assert all(isinstance(source[i], CaptionRecord) for i in range(len(source)))
    scan = datasets.scan(str(tmp_path / 'data'), 'caption_records', 'train')
    assert scan.phrases[('park',)] == 4 and scan.phrases[('frisbee',)] == 1
    assert scan.phrases[('tree', 'in', 'park')] == 1


def test_a_malformed_phrase_stops_the_build(tmp_path):
    raw = tmp_path / 'raw'
    rf.write_json(raw / 'train.json', [mvptr_entry(1, 'A.', [['a']]), mvptr_entry(2, 'B.', [[]])])
    builder = builders.BUILDERS['caption_records'](data_dir=tmp_path / 'data')
    with pytest.raises(formats.BadInput) as caught:
        builder.build(raw)
    assert str(caught.value) == (
        f"{raw / 'train.json'}:[1].phrases[0]: malformed record: image '2': phrase has 0 words, "
        'expected 1-3 ([object], [object, attribute] or [subject, relation, object])'
    )
    assert not builders.is_built(builder)


# --------------------------------------------------------------------------- objects vocabulary


def write_vocab(path: Path, lines=VOCAB_LINES, end='\n') -> Path:
    path.write_text('\n'.join(lines) + end, encoding='utf-8')
    return path


def test_objects_vocab_names_each_id_by_its_first_synonym(tmp_path):
    names = ObjectNames.read(write_vocab(tmp_path / 'objects_vocab.txt', end='\n\n'))
    assert names.names == CLASS_NAMES and len(names) == 7
    assert ObjectNames.read(write_vocab(tmp_path / 'b.txt', ['a , b', 'c'], end='')).names == (
        'a',
        'c',
    )


def test_objects_vocab_file_errors_name_the_key(tmp_path):
    key = 'config.data.concepts.objects_vocab'
    with pytest.raises(ConfigError, match=f"{key}='{tmp_path}/nope.txt': no such file"):
        ObjectNames.read(tmp_path / 'nope.txt')
    (tmp_path / 'empty.txt').write_text('\n \n')
    with pytest.raises(ConfigError, match=f"{key}='{tmp_path}/empty.txt': the file is empty"):
        ObjectNames.read(tmp_path / 'empty.txt')
    write_vocab(tmp_path / 'gap.txt', ['man', '', 'dog'])
    with pytest.raises(ConfigError, match=r'line 2 \(object id 1\) names no class'):
        ObjectNames.read(tmp_path / 'gap.txt')
    names = ObjectNames.read(write_vocab(tmp_path / 'v.txt'))
    names.check_covers(7)
    with pytest.raises(
        ConfigError, match='names 7 object classes but config.data.num_object_labels=1600'
    ):
        names.check_covers(1600)


def test_tags_of_a_region_record_and_an_unnamed_id(tmp_path):
    vocab = write_vocab(tmp_path / 'objects_vocab.txt')
    names = ObjectNames.read(vocab)
    image = dataclasses.replace(
        rf.RegionImage.random('COCO_val2014_000000000042', num_boxes=4, dim=DIM),
        objects=np.array([3, -1, 0, 6], np.int64),
    )
    bad = dataclasses.replace(
        rf.RegionImage.random('COCO_val2014_000000000043', num_boxes=3, dim=DIM),
        objects=np.array([1, 2, 9], np.int64),
    )
    path = rf.write_region_tsv(tmp_path / 'a.tsv', [image, bad])
    (_, record), (_, unnamed) = formats.read_region_tsv(path, checks=formats.RegionChecks())
    assert names.tags(record.objects, record.image_id) == ['tree', 'man', 'tennis racket']
    with pytest.raises(ValueError) as caught:
        names.tags(unnamed.objects, unnamed.image_id)
    assert str(caught.value) == (
        "image 'COCO_val2014_000000000043' region 2: object id 9 is outside "
        f"config.data.concepts.objects_vocab='{vocab}' (7 classes, ids 0..6)"
    )


# --------------------------------------------------------------------------- built pre-training


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """Region TSV + MVPTR caption records built as a user would, a vocab.txt and the objects
    vocabulary."""
    root = tmp_path_factory.mktemp('concept_files')
    regions = {
        name: dataclasses.replace(
            rf.RegionImage.random(name, num_boxes=len(objects), dim=DIM, seed=n),
            objects=np.array(objects, np.int64),
        )
        for n, (name, objects) in enumerate(OBJECTS.items())
    }
    rf.write_region_tsv(root / 'raw/features/all.tsv', list(regions.values()))
    rf.write_json(root / 'raw/captions/train.json', [mvptr_entry(*e) for e in TRAIN])
    rf.write_json(root / 'raw/captions/val.json', [mvptr_entry(*e) for e in VAL])
    data_dir = root / 'data'
    builders.builder_class('region_tsv')(data_dir=data_dir).build(root / 'raw/features')
    index = ImageIndex.read(builders.open_dataset('region_tsv', data_dir).data_dir)
    builders.builder_class('caption_records')(data_dir=data_dir, image_index=index).build(
        root / 'raw/captions'
    )
    (root / 'vocab.txt').write_text('\n'.join(WORDS) + '\n')
    return dict(
        root=root, data_dir=str(data_dir), regions=regions, vocab=write_vocab(root / 'ov.txt')
    )


def concept_config(built, **concepts) -> ml_collections.ConfigDict:
    config = tiny_config()
    config.data = built_data.data(
        built['data_dir'],
        str(built['root'] / 'vocab.txt'),
        kind='wordpiece',
        num_regions=4,
        feature_dim=DIM,
        num_object_labels=len(VOCAB_LINES),
        max_text_len=12,
        mlm_prob=0.0,
        mop_prob=0.0,
        reader_threads=0,
        answer_min_count=1,
        sources=dict(caption_records=dict(split='train', val_split='val', weight=1.0)),
        concepts=dict(
            max_tags=12,
            max_phrases=3,
            phrase_min_count=2,
            mcr_prob=0.0,
            phrase_mask_prob=0.0,
            objects_vocab=str(built['vocab']),
        ),
    )
    config.data.concepts.update(concepts)
    return config


def pretraining(config, workdir, **kwargs):
    return pipeline.built_pretraining(
        config.data, workdir, batch_size=4, seed=0, eval_examples=4, **kwargs
    )


def test_built_batches_carry_region_tags_and_record_phrases(built, tmp_path):
    data = pretraining(concept_config(built), tmp_path)
    v, t = data.tokenizer.vocab_size, data.tokenizer
    assert data.phrases.phrases == KEPT and data.phrases.first_id == v
    assert json.loads(RunDir(tmp_path).phrases.read_text())['phrases'] == [list(p) for p in KEPT]
    dims = data.dims
    assert (dims.vocab_size, dims.max_text_len, dims.num_phrases, dims.max_tags) == (
        v + len(KEPT),
        12 + 3,
        len(KEPT),
        12,
    )
    store = images.region_store(concept_config(built).data)
    by_features = {store(name)['region_features'].tobytes(): name for name in OBJECTS}
    phrases_of = {text: stored(p) for _, text, p in TRAIN + VAL}
    seen_texts, seen_images = set(), set()
    for batch in [next(data.train) for _ in range(6)]:
        for row in range(4):
            name = by_features[batch['region_features'][row].tobytes()]
            seen_images.add(name)
            # Tags: the class names of the shown regions' (the first 4) object ids, in row order.
            tags = [CLASS_NAMES[i] for i in OBJECTS[name][:4] if i >= 0]
            real = batch['tag_mask'][row] == 1
            tag_ids = batch['tag_ids'][row][real]
            assert tag_ids[0] == t.cls_id and tag_ids[-1] == t.sep_id
            assert t.decode(tag_ids) == ' '.join(tags)
            assert not batch['tag_ids'][row][~real].any()
            # Phrase slots: the record's phrases in the vocabulary, in record order, first 3.
            ids, mask = batch['text_ids'][row], batch['text_mask'][row]
            text = t.decode(ids[(mask == 1) & (ids < v)])
            seen_texts.add(text)
            expected = [data.phrases.id(p) for p in phrases_of[text] if p in KEPT][:3]
            slots = batch['phrase_positions'][row][batch['phrase_weights'][row] > 0]
            assert ids[slots].tolist() == expected, text
            assert [data.phrases.phrase(i) for i in ids[slots]] == [
                p for p in phrases_of[text] if p in KEPT
            ][:3]
            if expected:  # [CLS] words phrases [SEP]
                assert slots.tolist() == list(range(slots[0], slots[0] + len(expected)))
                assert ids[slots[-1] + 1] == t.sep_id
    assert seen_texts == {text for _, text, _ in TRAIN}
    assert seen_images == set(OBJECTS)
    # Validation masks at the evaluation rates (15%): its phrase slots hold kept phrases (or a
    # masked one), its tags' MCR targets the unmasked tag pieces.
    (val,) = data.val
    assert val['tag_ids'].shape == (4, 12) and val['phrase_positions'].shape == (4, 3)
    rows, slots = np.nonzero(val['phrase_weights'])
    assert len(rows)
    held = val['text_ids'][rows, val['phrase_positions'][rows, slots]]
    assert (((held >= v) & (held < v + len(KEPT))) | (held == t.mask_id)).all()
    assert (val['mcr_targets'][val['mcr_weights'] > 0] < v).all()


def test_a_fine_tune_on_built_data_reads_the_runs_phrases_and_the_regions_tags(built, tmp_path):
    """A retrieval fine-tune of an MVPTR run on these records (what `finetune_retrieval.py:
    data=DIR,mode=staged` reads, at test size): each caption's phrases through the run's phrase
    vocabulary after its words, each image's tags through the objects vocabulary, unmasked."""
    run = tmp_path / 'run'
    pretraining(concept_config(built), run)  # fixes the run's tokenizer and phrases.json
    config = concept_config(built)
    config.data.sources = {}
    config.init_from = str(run)
    config.task = dict(name='retrieval', dataset='caption_records', val_split='val')
    config.task.update(eval_images=2, shortlist_k=0, train_examples=0)
    task = retrieval.Retrieval(config, tmp_path / 'fine_tune', 0, 1)
    assert RunDir(tmp_path / 'fine_tune').phrases.read_text() == RunDir(run).phrases.read_text()
    t, v, phrases = task.tokenizer, task.tokenizer.vocab_size, task.concepts.phrases
    store = images.region_store(config.data)
    by_features = {store(name)['region_features'].tobytes(): name for name in OBJECTS}
    phrases_of = {text: stored(p) for _, text, p in TRAIN}
    rng, seen = np.random.default_rng(0), set()
    for group in task.elements(task.records('train'), 'train') * 3:
        example = task.example(group, rng)
        ids, mask = example['text_ids'], example['text_mask'].astype(bool)
        text = t.decode(ids[mask & (ids < v)])
        seen.add(text)
        kept = [phrases.id(p) for p in phrases_of[text] if p in KEPT][:3]
        assert ids[mask].tolist() == [t.cls_id, *t.encode(text), *kept, t.sep_id], text
        name = by_features[example['region_features'].tobytes()]
        tags = [CLASS_NAMES[i] for i in OBJECTS[name][:4] if i >= 0]
        real = example['tag_mask'] == 1
        assert t.decode(example['tag_ids'][real]) == ' '.join(tags)
        assert t.mask_id not in ids and t.mask_id not in example['tag_ids']
    assert seen == {text for _, text, _ in TRAIN}


def test_built_concepts_are_refused_without_regions_or_a_vocabulary(built, tmp_path):
    config = concept_config(built)
    with pytest.raises(ConfigError, match='tags are the class names of detector regions'):
        pretraining(config, tmp_path, pixel_input=pipeline.PixelInput(32, 16))
    config = concept_config(built, objects_vocab='')
    with pytest.raises(ConfigError, match=r'config\.data\.concepts\.objects_vocab is not set'):
        pretraining(config, tmp_path)
    config = concept_config(built)
    config.data.num_object_labels = 1600
    with pytest.raises(ConfigError, match='names 7 object classes but config.data.num_object'):
        pretraining(config, tmp_path)
    config = concept_config(built, phrase_min_count=50)
    with pytest.raises(
        ConfigError,
        match=r'no phrase is seen in phrase_min_count=50 or more .*'
        r'\(caption_records\)',
    ):
        pretraining(config, tmp_path)
    assert not RunDir(tmp_path).phrases.exists()  # nothing empty was fixed in the workdir
