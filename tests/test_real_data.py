"""Training on datasets built from real-format files: the region join, the pre-training mixture,
per-process shards, iterator resumption, the downstream tasks' records, and whole runs.

One module fixture writes small files in the official formats (bottom-up TSV, Karpathy, VQA v2,
GQA, NLVR2), builds them with the builders and trains a tokenizer, like a user would.
"""

import collections
import importlib
import json

import ml_collections
import numpy as np
import pytest

from configs import built_data, pretrain_real
from semvlp_jax import config_checks, train
from semvlp_jax.data import answers as answers_lib
from semvlp_jax.data import builders, images, pipeline, train_tokenizer
from semvlp_jax.data.image_index import ImageIndex
from semvlp_jax.data.tokenizers import SentencePieceTokenizer
from semvlp_jax.evaluators import vqa_eval
from semvlp_jax.tasks import nlvr2, retrieval, vqa
from tests.conftest import tiny_config
from tests.raw_files import (
    RegionImage,
    gqa_question,
    nlvr2_record,
    vqa_annotation,
    vqa_question,
    write_gqa,
    write_karpathy,
    write_nlvr2,
    write_region_tsv,
    write_vqa,
)

DIM = 8
COLOURS = ('red', 'green', 'blue', 'yellow')
SHAPES = ('circle', 'square', 'star')


def coco_name(split: str, number: int) -> str:
    return f'COCO_{split}2014_{number:012d}'


def _caption(rng) -> str:
    return f'a {rng.choice(COLOURS)} {rng.choice(SHAPES)} next to a {rng.choice(SHAPES)}'


def _karpathy_split(name: str) -> str:
    split = name.split('_')[1][: -len('2014')]
    return 'test' if split == 'val' and int(name[-12:]) > 104 else split


@pytest.fixture(scope='module')
def raw(tmp_path_factory):
    """Raw files, built datasets and a tokenizer; returns what was written."""
    root = tmp_path_factory.mktemp('real')
    rng = np.random.default_rng(0)
    numbers = {'train': list(range(1, 25)), 'val': list(range(101, 109))}
    images = {
        coco_name(split, n): RegionImage.random(
            coco_name(split, n), num_boxes=int(rng.integers(2, 7)), dim=DIM, seed=n
        )
        for split, ns in numbers.items()
        for n in ns
    }
    pairs = [f'{split}-{s}-0' for split in ('train', 'dev') for s in range(4)]
    for pair in pairs:
        for side in ('img0', 'img1'):
            name = f'{pair}-{side}'
            images[name] = RegionImage.random(name, num_boxes=3, dim=DIM, seed=len(images))
    write_region_tsv(root / 'raw/features/all_obj.tsv', list(images.values()))

    captions = {name: [_caption(rng) for _ in range(5)] for name in images if 'COCO' in name}
    write_karpathy(
        root / 'raw/karpathy/dataset_coco.json',
        [(f'{name}.jpg', _karpathy_split(name), captions[name]) for name in captions],
    )
    vqa = {}
    for split, subtype in (('train', 'train2014'), ('val', 'val2014')):
        questions, annotations = [], []
        for n in numbers[split]:
            for q in range(3):
                question_id = n * 10 + q
                answer = str(rng.choice(('yes', 'no', 'two', 'red')))
                given = [answer] * 7 + ['no'] * 3
                questions.append(vqa_question(question_id, n, f'is there a {SHAPES[q]}?'))
                annotations.append(
                    vqa_annotation(question_id, n, given, answer_type='yes/no', question_type='is')
                )
        write_vqa(root / 'raw/vqa', subtype, questions, annotations)
        vqa[split] = (questions, annotations)
    for split in ('train', 'val'):
        write_gqa(
            root / 'raw/gqa',
            split,
            {
                f'{n}{q}': gqa_question(coco_name(split, n), 'what colour?', COLOURS[q % 4])
                for n in numbers[split]
                for q in range(2)
            },
        )
    statements = {}
    for pair in pairs:
        split = pair.split('-')[0]
        for s in range(2):
            statements[f'{pair}-{s}'] = (f'there are {s + 2} circles', 'True' if s else 'False')
    for split in ('train', 'dev'):
        write_nlvr2(
            root / f'raw/nlvr2/{split}.json',
            [
                nlvr2_record(i, text, label)
                for i, (text, label) in statements.items()
                if i.startswith(split)
            ],
        )

    data_dir = root / 'data'
    builders.builder_class('region_tsv')(data_dir=data_dir).build(root / 'raw/features')
    index = ImageIndex.read(builders.open_dataset('region_tsv', data_dir).data_dir)
    for name, folder in (
        ('karpathy', 'karpathy'),
        ('vqa_v2', 'vqa'),
        ('gqa', 'gqa'),
        ('nlvr2', 'nlvr2'),
    ):
        builders.builder_class(name)(data_dir=data_dir, image_index=index).build(
            root / 'raw' / folder
        )
    texts = [c for cs in captions.values() for c in cs] + [f'is there a {s}?' for s in SHAPES]
    texts += ['what colour?', 'there are 2 circles', 'there are 3 circles']
    SentencePieceTokenizer.train(texts, root / 'spm.model', vocab_size=64)
    return dict(
        root=root,
        data_dir=str(data_dir),
        images=images,
        captions=captions,
        vqa=vqa,
        statements=statements,
    )


def built_config(raw, **sources_) -> ml_collections.ConfigDict:
    config = tiny_config()
    config.data = built_data.data(
        raw['data_dir'],
        str(raw['root'] / 'spm.model'),
        num_regions=4,
        feature_dim=DIM,
        max_text_len=16,
        reader_threads=0,
        answer_min_count=1,
        sources=sources_
        or dict(
            karpathy=dict(split='train', val_split='val', weight=0.5),
            vqa_v2=dict(split='train', val_split='val', weight=0.5),
        ),
    )
    return config


def test_image_index_matches_integer_ids_only_after_an_underscore():
    index = ImageIndex(['COCO_val2014_000000000042', '1000092795', 'dev-7-0-img1', 'n161313'])
    assert index.lookup('COCO_val2014_000000000042') == 0
    assert index.lookup('42') == 0 and index.lookup('1000092795') == 1
    assert index.lookup('1') is None  # not 'dev-7-0-img1'
    assert index.lookup('n161313') == 3 and index.lookup('161313') is None
    two = ImageIndex(['COCO_train2014_000000000042', 'COCO_val2014_000000000042'])
    assert two.lookup('42') is None
    assert 'matches several feature keys' in two.why_missing('42')
    with pytest.raises(ValueError, match="image id 'a' appears twice"):
        ImageIndex(['a', 'a'])


def test_region_store_joins_pads_and_truncates(raw):
    store = images.region_store(built_config(raw).data)
    for name in (coco_name('train', 3), coco_name('val', 101), 'dev-2-0-img1'):
        written = raw['images'][name]
        fields = store(name)
        n = min(len(written.boxes), 4)
        np.testing.assert_array_equal(fields['region_features'][:n], written.features[:n])
        np.testing.assert_allclose(
            fields['region_boxes'][:n], written.normalised_boxes[:n], rtol=1e-6
        )
        np.testing.assert_array_equal(fields['region_mask'], [1] * n + [0] * (4 - n))
        np.testing.assert_array_equal(fields['object_labels'][:n], written.objects[:n])
        assert (fields['region_features'][n:] == 0).all() and (
            fields['object_labels'][n:] == -1
        ).all()
    # VQA names images by integer id: it finds the COCO file-stem key.
    np.testing.assert_array_equal(
        store('3')['region_features'], store(coco_name('train', 3))['region_features']
    )
    with pytest.raises(
        ValueError,
        match=r"vqa_v2:train: 2 image id\(s\) have no features in region_tsv: image id '555'",
    ):
        store.check_ids(['3', '555', '556'], 'vqa_v2:train')


def test_region_store_rejects_sizes_that_disagree_with_the_config(raw):
    data = built_config(raw).data
    data.feature_dim = DIM + 1
    with pytest.raises(
        ValueError, match=rf'{DIM}-dimensional features but config.data.feature_dim={DIM + 1}'
    ):
        images.region_store(data)
    data = built_config(raw).data
    data.num_object_labels = 10
    with pytest.raises(ValueError, match='objects label .* but config.data.num_object_labels=10'):
        images.region_store(data)


def _pretraining(raw, tmp_path, *, process_index=0, process_count=1, **changes):
    config = built_config(raw)
    config.data.update(changes)
    return pipeline.built_pretraining(
        config.data,
        tmp_path,
        batch_size=8,
        seed=0,
        eval_examples=8,
        process_index=process_index,
        process_count=process_count,
    )


def test_pretraining_examples_pair_each_text_with_its_own_image(raw, tmp_path):
    data = _pretraining(raw, tmp_path, mlm_prob=0.0, mop_prob=0.0)
    store = images.region_store(built_config(raw).data)
    by_features = {
        store(name)['region_features'].tobytes(): name for name in raw['images'] if 'train' in name
    }
    vocabulary = json.loads((tmp_path / 'answers.json').read_text())
    assert set(vocabulary) == {'yes', 'no', '2', 'red'}  # 'two' is normalised to '2'
    questions = collections.Counter()
    for _ in range(8):
        batch = next(data.train)
        for row in range(8):
            name = by_features[batch['region_features'][row].tobytes()]
            text = data.tokenizer.decode(batch['text_ids'][row])
            if batch['is_question'][row]:
                questions['question'] += 1
                number = int(name[-12:])
                annotation = next(
                    a
                    for q, a in zip(*raw['vqa']['train'])
                    if q['question_id'] // 10 == number and q['question'] == text
                )
                answers = [vqa_eval.normalize_answer(a['answer']) for a in annotation['answers']]
                expected = answers_lib.answer_scores(
                    answers, {a: i for i, a in enumerate(vocabulary)}
                )
                np.testing.assert_allclose(batch['answer_scores'][row], expected)
            else:
                questions['caption'] += 1
                assert text in raw['captions'][name]
                assert not batch['answer_scores'][row].any()
    # Weights 0.5 / 0.5: grain's mixture interleaves the sources exactly.
    assert questions == {'question': 32, 'caption': 32}
    assert data.dims.num_answers == 4 and data.dims.visual_feature_dim == DIM


def test_process_shards_are_disjoint_and_complete(raw, tmp_path):
    whole = _pretraining(raw, tmp_path / 'one')
    halves = [
        _pretraining(raw, tmp_path / f'p{p}', process_index=p, process_count=2) for p in (0, 1)
    ]
    for _ in range(3):
        expected = next(whole.train)
        parts = [next(h.train) for h in halves]
        for key, value in expected.items():
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), value)
    for key, value in whole.val[0].items():
        np.testing.assert_array_equal(np.concatenate([h.val[0][key] for h in halves]), value)


def test_iterator_resumes_exactly(raw, tmp_path):
    data = _pretraining(raw, tmp_path)
    for _ in range(5):  # past the first epoch of the 24-image source
        next(data.train)
    state = data.train.get_state()
    expected = [next(data.train) for _ in range(3)]
    again = _pretraining(raw, tmp_path)
    again.train.set_state(state)
    for batch in expected:
        for key, value in next(again.train).items():
            np.testing.assert_array_equal(value, batch[key])


def test_a_question_about_an_image_without_features_fails_before_training(raw, tmp_path):
    data_dir = raw['root'] / 'no_features'
    builders.builder_class('region_tsv')(data_dir=data_dir).build(raw['root'] / 'raw/features')
    # vqa_v2 built without the join check, then paired with a region dataset that lacks image 3
    write_region_tsv(
        raw['root'] / 'raw/few/few.tsv',
        [im for name, im in raw['images'].items() if name != coco_name('train', 3)],
    )
    few = raw['root'] / 'few'
    builders.builder_class('region_tsv')(data_dir=few).build(raw['root'] / 'raw/few')
    builders.builder_class('vqa_v2')(data_dir=few).build(raw['root'] / 'raw/vqa')
    config = built_config(raw, vqa_v2=dict(split='train', val_split='val', weight=1.0))
    config.data.data_dir = str(few)
    with pytest.raises(
        ValueError,
        match=r"config.data.sources.vqa_v2.split='train': 1 image id\(s\) have no features in region_tsv: image id '3'",
    ):
        pipeline.built_pretraining(config.data, tmp_path, batch_size=8, seed=0, eval_examples=8)


def test_task_records_from_built_files_equal_the_written_ones(raw):
    config = built_config(raw)
    config.task = dict(name='vqa')
    task = vqa.Vqa(config, raw['root'] / 'task', 0, 1)
    questions, annotations = vqa.official_vqa_files(task.records('val'))
    written_q, written_a = raw['vqa']['val']
    key = lambda r: r['question_id']  # noqa: E731
    assert sorted(questions['questions'], key=key) == sorted(written_q, key=key)
    assert sorted(annotations['annotations'], key=key) == sorted(written_a, key=key)

    config.task = dict(name='gqa')
    questions = vqa.official_gqa_questions(
        vqa.Gqa(config, raw['root'] / 'task', 0, 1).records('val')
    )
    assert questions == {
        f'{n}{q}': {
            'imageId': coco_name('val', n),
            'question': 'what colour?',
            'answer': COLOURS[q % 4],
            'types': {'structural': 'query'},
        }
        for n in range(101, 109)
        for q in range(2)
    }

    config.task = dict(name='nlvr2')
    records = nlvr2.Nlvr2(config, raw['root'] / 'task', 0, 1).records('val')
    assert {r.identifier: (r.sentence, str(bool(r.label))) for r in records} == {
        i: s for i, s in raw['statements'].items() if i.startswith('dev')
    }
    assert all(
        r.image_ids == (r.identifier[:-2] + '-img0', r.identifier[:-2] + '-img1') for r in records
    )

    config.task = dict(name='retrieval', eval_images=3)
    task = retrieval.Retrieval(config, raw['root'] / 'task', 0, 1)
    groups = task.elements(task.records('val'), 'val')
    assert len(groups) == 3
    for group in groups:
        assert [r.caption for r in group] == raw['captions'][group[0].image_id]


def test_config_errors_name_the_key(raw):
    config = built_config(raw)
    config.data.regions = 'regions.tsv'
    with pytest.raises(config_checks.ConfigError, match=r"config.data.regions='regions.tsv'"):
        config_checks.validate(config, num_devices=8)
    config = built_config(raw)
    config.data.sources.nlvr2 = dict(split='train', weight=1.0)
    with pytest.raises(
        config_checks.ConfigError,
        match='config.data.sources.nlvr2: not a dataset of image-text pairs',
    ):
        config_checks.validate(config, num_devices=8)
    config = built_config(raw)
    config.data.tokenizer.kind = 'bpe'
    with pytest.raises(config_checks.ConfigError, match="config.data.tokenizer.kind='bpe'"):
        config_checks.validate(config, num_devices=8)


def test_pretrain_then_finetune_vqa_on_built_data(raw, tmp_path):
    """Both stages through the trainer: the VQA results file it writes, rescored by the
    official-rules evaluator, equals the logged accuracy, and a fine-tune with another
    tokenizer than its pre-training run's is refused."""
    config = built_config(raw)
    config.update(total_steps=3, eval_every=3, log_every=1, checkpoint_every=3)
    pretrain_dir = tmp_path / 'pretrain'
    metrics = train.train_and_evaluate(config, str(pretrain_dir))
    assert 0 <= metrics['val/two/mlm_accuracy'] <= 1

    config = built_config(raw, **{})
    config.data.sources = {}
    config.update(
        total_steps=2,
        eval_every=2,
        log_every=1,
        checkpoint_every=2,
        init_from=str(pretrain_dir),
        itm_negative_prob=0.0,
        task=dict(name='vqa', answer_min_count=1),
        schedule='two',
        init_skip=('answer_head',),
    )
    config.objectives = ml_collections.ConfigDict({'two': {'qa': 1.0}})
    finetune_dir = tmp_path / 'vqa'
    metrics = train.train_and_evaluate(config, str(finetune_dir))
    out = finetune_dir / 'vqa'
    scores = vqa_eval.score(
        json.loads((out / 'val_questions.json').read_text()),
        json.loads((out / 'val_annotations.json').read_text()),
        json.loads((out / 'results_val_two_step2.json').read_text()),
    )
    assert metrics['val/two/vqa_accuracy'] == pytest.approx(scores.overall / 100)

    other = raw['root'] / 'other.model'
    SentencePieceTokenizer.train(['a different corpus of words'], other, vocab_size=16)
    config.data.tokenizer.path = str(other)
    with pytest.raises(
        ValueError, match='differs from .* the tokenizer of the run in config.init_from'
    ):
        train.train_and_evaluate(config, str(tmp_path / 'vqa_other'))


def test_train_tokenizer_reads_built_captions(raw, tmp_path, capsys):
    output = tmp_path / 'captions.model'
    argv = ['--dataset', 'karpathy', '--data_dir', raw['data_dir'], '--output', str(output)]
    assert train_tokenizer.main([*argv, '--vocab_size', '40', '--model_type', 'word']) == 0
    tokenizer = SentencePieceTokenizer(output)
    for caption in raw['captions'][coco_name('val', 101)]:
        ids = tokenizer.encode(caption)
        assert tokenizer.unk_id not in ids and tokenizer.decode(ids) == caption


@pytest.mark.parametrize(
    'name', ['finetune_vqa', 'finetune_gqa', 'finetune_nlvr2', 'finetune_retrieval']
)
def test_finetune_configs_read_built_data_with_the_pretraining_model(name):
    config = importlib.import_module(f'configs.{name}').get_config('data=/data,init=/run')
    real = pretrain_real.get_config('data_dir=/data')
    assert config.data.name == 'tfds' and config.data.data_dir == '/data'
    assert config.data.tokenizer.to_dict() == {'kind': 'sentencepiece', 'path': '/data/spm.model'}
    for key in ('num_layers', 'num_cross_layers', 'hidden_size', 'num_heads', 'mlp_size'):
        assert config.model[key] == real.model[key], key
    config_checks.validate(config, num_devices=8)
    config_checks.validate(real, num_devices=8)


def test_pretraining_qa_needs_a_question_source(raw):
    config = built_config(raw, karpathy=dict(split='train', val_split='val', weight=1.0))
    with pytest.raises(config_checks.ConfigError, match='uses qa but config.data.sources'):
        config_checks.validate(config, num_devices=8)
    config.data.sources = {}
    with pytest.raises(config_checks.ConfigError, match='config.data.sources is empty'):
        config_checks.validate(config, num_devices=8)
