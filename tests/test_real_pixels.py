"""Pixels from real-format files: the `image_files` build, caption records built with
`--images`, the pre-training pipeline's pixels against decoding the stored bytes, training views,
the downstream tasks' images, and bad images at build and at train time.

One module fixture writes PNG files (lossless, so decoded pixels can be compared exactly) in the
folders COCO, Karpathy, VQA and NLVR2 users have, and builds them as a user would.
"""

import ml_collections
import numpy as np
import pytest

from configs import built_data
from semvlp_jax import config_checks
from semvlp_jax.data import build, builders, datasets, images, pipeline, pixels
from semvlp_jax.data.image_index import ImageIndex
from semvlp_jax.data.records import CaptionRecord
from semvlp_jax.data.tokenizers import SentencePieceTokenizer
from semvlp_jax.errors import ConfigError
from semvlp_jax.tasks import nlvr2, retrieval, vqa
from tests.conftest import tiny_config
from tests.raw_files import (
    nlvr2_record,
    vqa_annotation,
    vqa_question,
    write_image,
    write_karpathy,
    write_nlvr2,
    write_vqa,
)

SIZE = 16  # the model's image size: 2 x 2 patches of 8


def coco_name(split: str, number: int) -> str:
    return f'COCO_{split}2014_{number:012d}'


@pytest.fixture(scope='module')
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp('real_pixels')
    folder = root / 'raw/images'
    written = {}  # image id -> uint8 pixels
    numbers = {'train': range(1, 9), 'val': range(101, 105)}
    for split, ns in numbers.items():
        for n in ns:
            name = coco_name(split, n)
            size = (20 + 3 * n % 17, 18 + 5 * n % 13)  # sizes differ: the resize matters
            written[name] = write_image(folder / f'{split}2014/{name}.png', size, seed=n)
    pairs = ['train-0-0', 'train-1-0', 'dev-0-0', 'dev-1-0']
    for i, pair in enumerate(pairs):
        for side in ('img0', 'img1'):
            name = f'{pair}-{side}'
            split = pair.split('-')[0]
            written[name] = write_image(folder / f'nlvr2/{split}/{name}.png', (24, 16), 50 + i)
    captions = {
        name: [f'caption {k} of image {name[-3:]}' for k in range(3)]
        for name in written
        if name.startswith('COCO')
    }
    write_karpathy(
        folder / 'dataset_coco.json',
        [
            (f'{name}.png', _karpathy_split(name), texts, name.split('_')[1])
            for name, texts in captions.items()
        ],
    )
    for split, subtype in (('train', 'train2014'), ('val', 'val2014')):
        questions, annotations = [], []
        for n in numbers[split]:
            questions.append(vqa_question(n * 10, n, 'is there a circle?'))
            annotations.append(
                vqa_annotation(n * 10, n, ['yes'] * 10, answer_type='yes/no', question_type='is')
            )
        write_vqa(root / 'raw/vqa', subtype, questions, annotations)
    for split in ('train', 'dev'):
        write_nlvr2(
            root / f'raw/nlvr2/{split}.json',
            [
                nlvr2_record(f'{pair}-{s}', f'there are {s + 2} circles', 'True' if s else 'False')
                for pair in pairs
                if pair.startswith(split)
                for s in range(2)
            ],
        )
    data_dir = root / 'data'
    assert (
        build.main(
            ['--dataset', 'image_files', '--manual_dir', str(folder), '--data_dir', str(data_dir)]
        )
        == 0
    )
    index = ImageIndex.read(builders.open_dataset('image_files', data_dir).data_dir, 'image file')
    builders.builder_class('karpathy')(data_dir=data_dir, image_index=index, images=True).build(
        folder
    )
    for name in ('vqa_v2', 'nlvr2'):
        folder_name = 'vqa' if name == 'vqa_v2' else name
        builders.builder_class(name)(data_dir=data_dir, image_index=index).build(
            root / 'raw' / folder_name
        )
    texts = [c for cs in captions.values() for c in cs]
    texts += ['is there a circle?', 'there are 2 circles', 'there are 3 circles']
    SentencePieceTokenizer.train(texts, root / 'spm.model', vocab_size=48)
    return dict(root=root, folder=folder, data_dir=str(data_dir), written=written)


def _karpathy_split(name: str) -> str:
    if 'train' in name:
        return 'train'
    return 'val' if int(name[-3:]) <= 103 else 'test'


def pixel_config(raw, *, augment: bool = False, **sources) -> ml_collections.ConfigDict:
    config = tiny_config()
    config.data = built_data.data(
        raw['data_dir'],
        str(raw['root'] / 'spm.model'),
        max_text_len=16,
        reader_threads=0,
        answer_min_count=1,
        images='image_files',
        sources=sources
        or dict(
            karpathy=dict(split='train', val_split='val', weight=0.5),
            vqa_v2=dict(split='train', val_split='val', weight=0.5),
        ),
    )
    config.data.augment.enabled = augment
    config.model.update(visual_input='patches', image_size=SIZE, patch_size=8)
    config.objectives = {
        mode: {k: v for k, v in weights.items() if k != 'mop'}
        for mode, weights in config.objectives.to_dict().items()
    }
    return config


def evaluation_view(image: np.ndarray) -> np.ndarray:
    return pixels.normalise(pixels.resize(image, SIZE))


def _pretraining(config, workdir, seed=0):
    return pipeline.built_pretraining(
        config.data,
        workdir,
        batch_size=8,
        seed=seed,
        eval_examples=8,
        pixel_input=pipeline.PixelInput.of(config.model),
    )


def _by_key(raw) -> dict[int, str]:
    """image_key -> image name, for captions (file stems) and VQA questions (COCO numbers)."""
    keys = {pipeline.image_key(name): name for name in raw['written']}
    for name in raw['written']:
        if name.startswith('COCO'):
            keys[pipeline.image_key(str(int(name[-12:])))] = name
    return keys


def test_image_files_store_every_file_as_it_was(raw):
    builder = builders.open_dataset('image_files', raw['data_dir'])
    source = datasets.records(raw['data_dir'], 'image_files', builders.VISUAL_SPLIT)
    index = ImageIndex.read(builder.data_dir)
    assert len(source) == len(raw['written']) == len(index)
    for position in range(len(source)):
        record = source[position]
        assert index.image_ids[position] == record.image_id
        file = raw['folder'] / record.image_path
        assert record.image == file.read_bytes()
        height, width = raw['written'][record.image_id].shape[:2]
        assert (record.image_height, record.image_width) == (height, width)
    store = images.PixelStore(raw['data_dir'], 'image_files')
    np.testing.assert_array_equal(
        store(coco_name('train', 3)), raw['written'][coco_name('train', 3)]
    )
    np.testing.assert_array_equal(store('3'), raw['written'][coco_name('train', 3)])  # VQA's id
    with pytest.raises(
        ValueError,
        match=r"vqa_v2:train: 1 image id\(s\) have no image in image_files: image id '555' has no image file",
    ):
        store.check_ids(['3', '555'], 'vqa_v2:train')


def test_image_files_build_refuses_undecodable_and_duplicate_files(raw, tmp_path, capsys):
    folder = tmp_path / 'raw'
    write_image(folder / 'a/good.png', (8, 8))
    write_image(folder / 'a/twin.png', (8, 8), seed=1)
    write_image(folder / 'b/twin.png', (8, 8), seed=2)
    whole = (folder / 'a/good.png').read_bytes()
    (folder / 'a/cut.png').write_bytes(whole[: len(whole) // 2])
    argv = ['--dataset', 'image_files', '--manual_dir', str(folder), '--data_dir']
    assert build.main([*argv, str(tmp_path / 'strict')]) == 2
    err = capsys.readouterr().err
    assert f'{folder}/a/cut.png:file: undecodable image' in err and 'Traceback' not in err
    assert build.main([*argv, str(tmp_path / 'lenient'), '--skip_bad']) == 0
    out = capsys.readouterr().out
    assert '1 x undecodable image' in out and '1 x duplicate id' in out
    source = datasets.records(str(tmp_path / 'lenient'), 'image_files', builders.VISUAL_SPLIT)
    assert sorted(source[i].image_path for i in range(len(source))) == ['a/good.png', 'a/twin.png']


def test_pretraining_pixels_equal_decoding_the_stored_bytes(raw, tmp_path):
    by_key = _by_key(raw)
    from_store = _pretraining(pixel_config(raw), tmp_path / 'store')
    # Without an image store the captions' own bytes (built with --images) give the pixels.
    captions_only = pixel_config(raw, karpathy=dict(split='train', val_split='val', weight=1.0))
    captions_only.data.images = ''
    from_records = _pretraining(captions_only, tmp_path / 'records')
    for data in (from_store, from_records):
        for batch in [next(data.train), next(data.train), *data.val]:
            assert batch['pixels'].shape == (8, SIZE, SIZE, 3) and 'region_features' not in batch
            for row in range(8):
                name = by_key[int(batch['image_key'][row])]
                np.testing.assert_allclose(
                    batch['pixels'][row], evaluation_view(raw['written'][name]), atol=1e-6
                )


def test_training_views_are_deterministic_by_seed_and_off_at_evaluation(raw, tmp_path):
    by_key = _by_key(raw)
    config = pixel_config(raw, augment=True)
    first, again = (_pretraining(config, tmp_path / name) for name in ('a', 'b'))
    other_seed = _pretraining(config, tmp_path / 'c', seed=1)
    batch, same = next(first.train), next(again.train)
    np.testing.assert_array_equal(batch['pixels'], same['pixels'])
    assert not np.array_equal(batch['pixels'], next(other_seed.train)['pixels'])
    views = [evaluation_view(raw['written'][by_key[int(k)]]) for k in batch['image_key']]
    assert all(not np.allclose(p, v) for p, v in zip(batch['pixels'], views))  # augmented
    for row in range(8):  # validation: resize only, whatever the augmentation
        name = by_key[int(first.val[0]['image_key'][row])]
        np.testing.assert_allclose(
            first.val[0]['pixels'][row], evaluation_view(raw['written'][name]), atol=1e-6
        )


def test_pixels_from_built_data_need_an_image_source(raw, tmp_path):
    config = pixel_config(raw)
    config.data.images = ''  # vqa_v2 stores no image bytes
    with pytest.raises(
        ConfigError, match=r"config.data.images='image_files'.*question sources \['vqa_v2'\]"
    ):
        _pretraining(config, tmp_path)
    plain = raw['root'] / 'plain'  # karpathy built without --images
    builders.builder_class('karpathy')(data_dir=plain).build(raw['folder'])
    config = pixel_config(raw, karpathy=dict(split='train', val_split='val', weight=1.0))
    config.data.update(images='', data_dir=str(plain))
    with pytest.raises(
        ConfigError,
        match=r"sources.karpathy.split='train': the karpathy records hold no image bytes \(built without --images\)",
    ):
        _pretraining(config, tmp_path)
    config = pixel_config(raw)
    config.data.images = 'region_tsv'
    with pytest.raises(
        ConfigError, match=r"config.data.images='region_tsv'; expected one of \['image_files'\]"
    ):
        config_checks.validate(config, num_devices=8)
    config = pixel_config(raw)
    config.model.visual_input = 'regions'
    with pytest.raises(
        ConfigError,
        match=r"config.data.images='image_files' is set but config.model.visual_input='regions'",
    ):
        config_checks.validate(config, num_devices=8)
    config_checks.validate(pixel_config(raw), num_devices=8)  # and the good one passes


def test_an_undecodable_image_at_train_time_names_dataset_record_and_file():
    join = pipeline.ImageJoin('karpathy:train')
    record = CaptionRecord('COCO_x_1', 'a caption', 2, 'train2014/COCO_x_1.jpg', b'\x89PNG broken')
    with pytest.raises(
        pixels.BadImage,
        match=r"karpathy:train record of image 'COCO_x_1' \(caption 2, file train2014/COCO_x_1.jpg\): cannot decode image",
    ):
        join(record)


def test_downstream_tasks_read_pixels_and_train_on_augmented_views(raw):
    config = pixel_config(raw, augment=True)
    written = raw['written']
    config.task = dict(name='vqa', answer_min_count=1)
    task = vqa.Vqa(config, raw['root'] / 'task', 0, 1)
    task.prepare(task.records('train'))
    record = task.records('val')[0]
    name = coco_name('val', int(record.image_id))
    np.testing.assert_allclose(
        task.example(record)['pixels'], evaluation_view(written[name]), atol=1e-6
    )
    view = task.example(record, np.random.default_rng(0))['pixels']
    np.testing.assert_array_equal(view, task.example(record, np.random.default_rng(0))['pixels'])
    assert view.shape == (SIZE, SIZE, 3) and not np.allclose(view, evaluation_view(written[name]))

    config.task = dict(name='nlvr2')
    task = nlvr2.Nlvr2(config, raw['root'] / 'task', 0, 1)
    record = task.records('val')[0]
    pair = task.example(record)['pixels']
    assert pair.shape == (2, SIZE, SIZE, 3)
    for side, image_id in enumerate(record.image_ids):
        np.testing.assert_allclose(pair[side], evaluation_view(written[image_id]), atol=1e-6)

    config.task = dict(name='retrieval', eval_images=3)
    task = retrieval.Retrieval(config, raw['root'] / 'task', 0, 1)
    groups = task.elements(task.records('val'), 'val')
    gallery = retrieval.RetrievalSet(groups, task.encode, task.images)
    for row, group in enumerate(groups):
        np.testing.assert_allclose(
            gallery.images['pixels'][row], evaluation_view(written[group[0].image_id]), atol=1e-6
        )


def test_pixel_configs_pretrain_and_fine_tune_on_the_image_dataset():
    from configs import finetune_nlvr2, finetune_vqa, pretrain_real

    real = pretrain_real.get_config('data_dir=/data,images=image_files')
    assert real.model.visual_input == 'patches' and real.data.images == 'image_files'
    assert all('mop' not in weights for weights in real.objectives.values())
    config_checks.validate(real, num_devices=8)
    for module in (finetune_vqa, finetune_nlvr2):
        config = module.get_config('data=/data,init=/run,pixels=true')
        assert config.model.to_dict() == {**real.model.to_dict()}
        assert config.data.images == 'image_files' and config.data.augment.enabled
        config_checks.validate(config, num_devices=8)
    synthetic = finetune_vqa.get_config('init=/run,pixels=true')
    assert synthetic.model.visual_input == 'patches' and synthetic.data.name == 'synthetic'
    with pytest.raises(ValueError, match=r"images='image_files' needs data=DIR"):
        finetune_vqa.get_config('images=image_files')
