"""Alignment: the diagnostics, hard ITM negatives, ITC over repeated images, labelled budgets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from semvlp_jax import config_checks, diagnostics
from semvlp_jax.data import builders, datasets, images, pipeline
from semvlp_jax.data.image_index import ImageIndex
from semvlp_jax.errors import ConfigError
from semvlp_jax.models.layers import Attention
from semvlp_jax.objectives import contrastive
from semvlp_jax.tasks.base import labelled_budget
from semvlp_jax.train_step import contrastive_scores, make_itm_pairs
from tests.code_world import CLASSES, CodeWorld, write_code_world
from tests.conftest import tiny_config
from tests.test_tasks import _batch, _tiny_model

# --- diagnostics ----------------------------------------------------------------------------


def test_text_to_image_mass_and_entropy_on_a_hand_built_attention_tensor():
    # One example, 2 heads, 3 queries (the last one padding), 4 keys: 2 image, 1 text, 1 padding.
    probs = np.zeros((1, 2, 3, 4), np.float32)
    probs[0, 0, 0] = [0.5, 0.5, 0.0, 0.0]  # all on the image, uniformly
    probs[0, 1, 0] = [1.0, 0.0, 0.0, 0.0]  # all on one region
    probs[0, 0, 1] = [0.0, 0.0, 1.0, 0.0]  # all on the text
    probs[0, 1, 1] = [0.1, 0.3, 0.6, 0.0]
    probs[0, :, 2] = [0.25, 0.25, 0.25, 0.25]  # a padding query: must not count
    image_keys = np.array([[1, 1, 0, 0]])
    queries = np.array([[1, 1, 0]])
    mass = diagnostics.text_to_image_mass(jnp.asarray(probs), image_keys, queries)
    # query 0: heads 1.0 and 1.0 -> 1.0; query 1: heads 0.0 and 0.4 -> 0.2.
    np.testing.assert_allclose(mass, (1.0 + 0.2) / 2, rtol=1e-6)
    entropy = diagnostics.normalised_entropy(jnp.asarray(probs), image_keys, queries)
    # Renormalised over the two regions: (0.5, 0.5) -> 1; (1, 0) -> 0; query 1 head 0 puts
    # nothing on the image (0 after renormalising); (0.25, 0.75) -> H / log 2.
    h = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75)) / np.log(2)
    np.testing.assert_allclose(entropy, ((1.0 + 0.0) / 2 + (0.0 + h) / 2) / 2, rtol=1e-5)


def test_attention_inspect_is_what_the_layer_computes():
    attention = Attention(8, 2, 0.0, rngs=nnx.Rngs(params=0))
    rng = np.random.default_rng(0)
    queries = jnp.asarray(rng.standard_normal((2, 3, 8)), jnp.float32)
    context = jnp.asarray(rng.standard_normal((2, 5, 8)), jnp.float32)
    mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    probs, update = attention.inspect(queries, context, mask)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    assert float(jnp.abs(probs[0, :, :, 3:]).max()) == 0.0  # padding keys get nothing
    np.testing.assert_allclose(
        attention.norm(queries + update), attention(queries, context, mask, None), atol=1e-5
    )


@pytest.mark.parametrize('mode', ['single', 'two'])
def test_alignment_diagnostics_see_whether_the_image_matters(mode):
    model = _tiny_model(num_layers=2, num_cross_layers=1)
    batch = _batch(np.random.default_rng(3), 4) | {'is_question': np.zeros(4, np.int32)}
    results = diagnostics.alignment(model, batch, mode)
    assert float(results['diag_itm_logit_change']) > 0
    assert 0 < float(results['diag_image_attention_entropy_l1']) <= 1
    if mode == 'single':
        assert 0 < float(results['diag_text_to_image_attention_l0']) < 1
    else:
        assert float(results['diag_cross_update_l1']) > 0
        assert 'diag_cross_update_l0' not in results  # layer 0 has no cross-attention
    # Every image alike: swapping images changes nothing, the logit change is 0.
    same = dict(batch)
    for key in ('region_features', 'region_boxes', 'region_mask'):
        same[key] = np.repeat(batch[key][:1], 4, axis=0)
    assert float(diagnostics.alignment(model, same, mode)['diag_itm_logit_change']) < 1e-5
    # The visual embeddings' scale against the text's, by hand.
    text = model.text_embeddings(jnp.asarray(batch['text_ids']), None)
    image, _ = model.visual_embeddings(batch, model.text_embeddings.token_type, None)
    text_rms = np.sqrt(np.mean(np.square(np.asarray(text))[batch['text_mask'] > 0]))
    image_rms = np.sqrt(np.mean(np.square(np.asarray(image))[batch['region_mask'] > 0]))
    np.testing.assert_allclose(
        results['diag_region_to_text_scale'], image_rms / text_rms, rtol=1e-5
    )


def test_gradient_norms_per_group_add_up_to_the_global_norm():
    grads = {
        'encoder': {
            'layers': {
                0: {
                    'self_attention': {'w': jnp.full((2,), 3.0)},
                    'feed_forward': {'w': jnp.ones(1)},
                },
                1: {'self_attention': {'w': jnp.full((1,), 4.0)}},
            }
        },
        'mlm_head': {'bias': jnp.array([0.0, 2.0])},
    }
    norms = diagnostics.parameter_group_norms(grads)
    assert sorted(norms) == ['encoder/feed_forward', 'encoder/self_attention', 'mlm_head']
    np.testing.assert_allclose(norms['encoder/self_attention'], np.sqrt(9 + 9 + 16))
    np.testing.assert_allclose(norms['mlm_head'], 2.0)
    total = np.sqrt(sum(float(n) ** 2 for n in norms.values()))
    np.testing.assert_allclose(total, np.sqrt(34 + 1 + 4), rtol=1e-6)


# --- ITM negatives --------------------------------------------------------------------------


def _rows(size):
    return {
        'text_ids': jnp.zeros((size, 2), jnp.int32),
        'region_features': jnp.arange(size, dtype=jnp.float32)[:, None, None],
    }


def test_hard_negatives_follow_the_scores_and_are_never_the_positive():
    size = 6
    batch = _rows(size) | {'image_key': jnp.array([10, 11, 12, 13, 14, 10])}  # 0 and 5: one image
    # Each text's highest score is its own image, the next its hardest negative (i + 2).
    scores = np.full((size, size), -5.0, np.float32)
    scores[np.arange(size), np.arange(size)] = 50.0
    scores[np.arange(size), (np.arange(size) + 2) % size] = 20.0
    scores[0, 5] = scores[5, 0] = 60.0  # the same picture scores highest of all
    for seed in range(10):
        paired = make_itm_pairs(batch, jax.random.key(seed), 1.0, jnp.asarray(scores))
        owner = np.asarray(paired['region_features'][:, 0, 0]).astype(int)
        assert not np.asarray(paired['is_matched']).any()
        np.testing.assert_array_equal(owner, (np.arange(size) + 2) % size)
    # Flat scores over the allowed rows: every other image comes up, never one of the same.
    partners = set()
    for seed in range(60):
        paired = make_itm_pairs(batch, jax.random.key(seed), 1.0, jnp.zeros((size, size)))
        partners.add(int(paired['region_features'][0, 0, 0]))
    assert partners == {1, 2, 3, 4}


def test_a_row_whose_image_fills_the_batch_keeps_its_own():
    batch = _rows(3) | {'image_key': jnp.array([7, 7, 7])}
    paired = make_itm_pairs(batch, jax.random.key(0), 1.0)
    np.testing.assert_array_equal(paired['is_matched'], [1, 1, 1])
    np.testing.assert_array_equal(paired['region_features'][:, 0, 0], [0, 1, 2])


def test_hard_negative_scores_are_the_contrastive_logits_of_the_unimodal_pass():
    model = _tiny_model()
    batch = _batch(np.random.default_rng(4), 5)
    graphdef, params = nnx.split(model, nnx.Param)
    scores = contrastive_scores(nnx.to_pure_dict(params), batch, graphdef=graphdef)
    encoded = model(batch, mode='two')
    head = model.contrastive_head
    text, image = head.embed_text(encoded.unimodal_text), head.embed_image(encoded.unimodal_image)
    np.testing.assert_allclose(
        scores, head.inverse_temperature() * text @ image.T, rtol=1e-5, atol=1e-5
    )


def test_itc_does_not_count_another_caption_of_the_same_image_as_a_negative():
    model = _tiny_model()
    batch = _batch(np.random.default_rng(5), 4)
    batch['region_features'][3] = batch['region_features'][1]  # rows 1 and 3: one picture
    batch.update(
        is_matched=np.ones(4, np.int32),
        is_question=np.zeros(4, np.int32),
        image_key=np.array([5, 6, 7, 6], np.int32),
    )
    (loss,), _ = contrastive.image_text_contrastive(model, model(batch, mode='two'), batch)
    encoded = model(batch, mode='two')
    head = model.contrastive_head
    text, image = head.embed_text(encoded.unimodal_text), head.embed_image(encoded.unimodal_image)
    logits = np.asarray(head.inverse_temperature() * text @ image.T, np.float64)
    logits[1, 3] = logits[3, 1] = -np.inf  # each one's other caption/image leaves the softmax
    expected = -np.mean(
        (np.diag(jax.nn.log_softmax(logits, 1)) + np.diag(jax.nn.log_softmax(logits, 0))) / 2
    )
    np.testing.assert_allclose(loss.value, expected, rtol=1e-5)


def test_image_keys_name_an_image_the_same_way_everywhere():
    assert pipeline.image_key(12) == 12
    assert pipeline.image_key('COCO_val2014_000000000042') == pipeline.image_key(
        'COCO_val2014_000000000042'
    )
    assert pipeline.image_key('a') != pipeline.image_key('b')
    assert 0 <= pipeline.image_key('x' * 100) < 2**31


def test_pretraining_examples_carry_their_image_key(tiny_data):
    batch = next(tiny_data.train)
    assert batch['image_key'].dtype == np.int32
    assert len(set(batch['image_key'].tolist())) == len(batch['image_key'])  # distinct scenes


# --- config ---------------------------------------------------------------------------------


def _error(config) -> str:
    with pytest.raises(ConfigError) as info:
        config_checks.validate(config, num_devices=1)
    return str(info.value)


def test_alignment_config_errors_name_the_key():
    config = tiny_config()
    config.itm_negatives = 'hardest'
    assert "config.itm_negatives='hardest'; expected one of ['hard', 'random']" in _error(config)
    config = tiny_config()
    config.itm_negatives = 'hard'
    config.model.contrastive_dim = 0
    config.objectives = {mode: {'mlm': 1.0, 'itm': 1.0} for mode in ('single', 'two')}
    assert "config.itm_negatives='hard'" in _error(config)
    config = tiny_config()
    del config['diagnostics']
    config.diagnostics = 'yes'  # a config file may set anything
    assert "config.diagnostics='yes' must be True or False" in _error(config)
    config = tiny_config()
    config.task.train_examples = 10
    assert "task 'pretrain' has no labelled training set" in _error(config)


def test_a_labelled_budget_is_one_fixed_subset():
    train = list(range(100))
    subset = labelled_budget(train, 10)
    assert len(subset) == 10 and subset == sorted(subset) and len(set(subset)) == 10
    assert labelled_budget(train, 10) == subset  # the same for every run
    assert labelled_budget(train, 20)[:0] == [] and labelled_budget(train, 0) == train
    with pytest.raises(ConfigError, match='train_examples=101 but the training split has 100'):
        labelled_budget(train, 101)


# --- the code world (benchmarks/alignment_code_world.py) ------------------------------------


def test_the_code_world_builds_and_its_features_name_the_captioned_objects(tmp_path):
    world = CodeWorld(
        num_train=6, num_val=2, feature_dim=32, boxes=12, boxes_per_object=(1, 3), noise=0.3
    )
    classes = write_code_world(tmp_path, world)
    data_dir = tmp_path / 'data'
    builders.builder_class('region_tsv')(data_dir=data_dir).build(tmp_path / 'raw/features')
    index = ImageIndex.read(builders.open_dataset('region_tsv', data_dir).data_dir)
    for name, folder in (('karpathy', 'karpathy'), ('vqa_v2', 'vqa')):
        builders.builder_class(name)(data_dir=data_dir, image_index=index).build(
            tmp_path / 'raw' / folder
        )
    captions = datasets.records(str(data_dir), 'karpathy', 'train')
    assert len(captions) == 6 * 5
    store = images.RegionStore(
        str(data_dir),
        'region_tsv',
        num_regions=12,
        feature_dim=32,
        num_object_labels=1600,
        num_attribute_labels=400,
    )
    codes = world.codes()
    for i in range(len(captions)):
        record = captions[i]
        named = classes['train'][record.image_id]
        assert any(f' {c}' in f' {record.caption}' for c in named)
        # The class whose code each box's feature is nearest to: the image's objects are there.
        features = store(record.image_id)['region_features']
        nearest = {CLASSES[j] for j in np.argmax(features @ codes.T, axis=1)}
        assert set(named) <= nearest
    questions = datasets.records(str(data_dir), 'vqa_v2', 'val')
    assert len(questions) == 2 * 2


def test_normalised_region_embeddings_enter_at_the_text_scale():
    model = _tiny_model()
    batch = _batch(np.random.default_rng(6), 4) | {'is_question': np.zeros(4, np.int32)}
    average = float(diagnostics.alignment(model, batch, 'two')['diag_region_to_text_scale'])
    normalised = _tiny_model(region_norm='layer_norm')
    scale = float(diagnostics.alignment(normalised, batch, 'two')['diag_region_to_text_scale'])
    assert 0.6 < average < 0.8  # two averaged unit-scale LayerNorm outputs
    np.testing.assert_allclose(scale, 1.0, rtol=0.02)
