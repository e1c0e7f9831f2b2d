"""The MVPTR recipe over the shared machinery: the staged mode's stages, hardest negatives, phrase
grounding against its formula, the recipe's config checks, FSDP = one device, and the demo
config through the command line.

One tiny MVPTR (1 uni-modal + 1 joint layer of width 32, a visual layer of its own)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from flax import nnx

from configs import finetune_vqa, mvptr_demo
from semvlp_jax.checkpoint import flat_leaves
from semvlp_jax.config_checks import validate
from semvlp_jax.data import pipeline
from semvlp_jax.data.dims import DataDims
from semvlp_jax.errors import ConfigError
from semvlp_jax.models.semvlp import SemVLP
from semvlp_jax.objectives import mvptr
from semvlp_jax.progress import read_history
from semvlp_jax.simla import negatives
from semvlp_jax.train_step import make_itm_pairs
from semvlp_jax.weights import hf_bert
from tests.conftest import GOLDEN_BERT, compiled_training, overridden, override_flags, run_cli

TINY_MVPTR = {
    'batch_size': 8,
    'eval_batches': 1,
    'model.num_layers': 2,
    'model.num_cross_layers': 1,
    'model.hidden_size': 32,
    'model.num_heads': 2,
    'model.mlp_size': 64,
    'model.contrastive_dim': 16,
    'optimizer.warmup_steps': 0,
    'optimizer.learning_rate': 3e-3,
    'data.num_train': 64,
    'data.num_val': 16,
}


def tiny_mvptr_config():
    return overridden(mvptr_demo.get_config(), TINY_MVPTR)


@pytest.fixture(scope='module')
def mvptr_data(tmp_path_factory):
    config = tiny_mvptr_config()
    return pipeline.synthetic_pretraining(
        config.data, tmp_path_factory.mktemp('mvptr_data'), batch_size=config.batch_size, seed=0
    )


@pytest.fixture(scope='module')
def mvptr_batch(mvptr_data):
    return make_itm_pairs(
        jax.tree.map(np.asarray, next(iter(mvptr_data.val))), jax.random.key(0), 0.0
    )


def test_the_uni_modal_stage_sees_one_modality_and_the_joint_stage_both(mvptr_data, mvptr_batch):
    config = tiny_mvptr_config()
    model = SemVLP(config.model, mvptr_data.dims, rngs=nnx.Rngs(params=0))
    # The phrases extend the word table; the model predicts words only.
    dims = mvptr_data.dims
    assert dims.num_phrases > 0
    assert model.text_embeddings.word.embedding.shape[0] == dims.vocab_size
    assert model.num_words == dims.vocab_size - dims.num_phrases == mvptr_data.tokenizer.vocab_size
    encoded = model(mvptr_batch, mode='staged')
    image_fields = ('region_features', 'region_boxes', 'region_mask', 'tag_ids', 'tag_mask')
    other_image = {**mvptr_batch, **{k: mvptr_batch[k][::-1] for k in image_fields}}
    swapped = model(other_image, mode='staged')
    np.testing.assert_array_equal(swapped.unimodal_text, encoded.unimodal_text)
    np.testing.assert_array_equal(swapped.unimodal_image, encoded.unimodal_image[::-1])
    assert np.abs(swapped.text - encoded.text).max() > 1e-3  # the joint stage reads the image
    text_fields = ('text_ids', 'text_mask', 'phrase_positions', 'phrase_weights')
    other_text = {**mvptr_batch, **{k: mvptr_batch[k][::-1] for k in text_fields}}
    recaptioned = model(other_text, mode='staged')
    np.testing.assert_array_equal(recaptioned.unimodal_image, encoded.unimodal_image)
    np.testing.assert_array_equal(recaptioned.tags, encoded.tags)
    assert np.abs(recaptioned.image - encoded.image).max() > 1e-3
    # The joint stage drops the tags: the image rows are the regions.
    assert encoded.image.shape[1] == mvptr_batch['region_mask'].shape[1]
    # A pair re-run through the joint layers (ITM's negatives) equals the batch's own pass.
    rows = jnp.arange(mvptr_batch['text_ids'].shape[0])
    np.testing.assert_allclose(model.match(encoded.fusion, rows, rows), encoded.pooled, atol=1e-5)
    # With separate visual layers, the shared bottom layers do not encode the visual sequence.
    shared = overridden(tiny_mvptr_config(), {'model.separate_visual_layers': False})
    shared_model = SemVLP(shared.model, mvptr_data.dims, rngs=nnx.Rngs(params=0))
    np.testing.assert_array_equal(
        shared_model(mvptr_batch, mode='staged').unimodal_text, encoded.unimodal_text
    )
    assert model.encoder.visual_stage is not None and shared_model.encoder.visual_stage is None


def test_hardest_negatives_never_pick_the_positive_and_break_ties_low():
    similarity = jnp.array(
        [
            [9.0, 5.0, 5.0, 1.0],  # a tie between images 1 and 2: the lower index
            [0.0, 9.0, 2.0, 3.0],
            [4.0, 4.0, 9.0, 7.0],  # image 3 shows the same picture as image 2: never a negative
            [1.0, 8.0, 0.0, 9.0],
        ]
    )
    keys = jnp.array([10, 11, 12, 12])
    picked = negatives.hardest_negatives(similarity, keys)
    np.testing.assert_array_equal(picked.image_for_text, [1, 3, 0, 1])
    np.testing.assert_array_equal(picked.text_for_image, [2, 3, 0, 1])
    assert picked.has_negative.all()
    alone = negatives.hardest_negatives(jnp.ones((2, 2)), jnp.array([5, 5]))
    np.testing.assert_array_equal(alone.image_for_text, [0, 1])
    assert not alone.has_negative.any()
    # Random similarities: never the row itself or another row of its image.
    rng = np.random.default_rng(0)
    for _ in range(20):
        keys = jnp.asarray(rng.integers(0, 5, 8))
        picked = negatives.hardest_negatives(jnp.asarray(rng.normal(size=(8, 8))), keys)
        has = np.asarray(picked.has_negative)
        assert (keys[picked.image_for_text][has] != keys[has]).all()
        assert (keys[picked.text_for_image][has] != keys[has]).all()


def _unit_rows(angles):
    return jnp.stack([jnp.cos(angles), jnp.sin(angles)], -1)


def test_grounding_scores_follow_mvptrs_formula():
    # One row, two phrases, four regions (the last padding) at known angles: cosines are
    # cos(phrase angle - region angle).
    regions = _unit_rows(jnp.array([0.0, 0.5, 1.0, 0.1]))[None]
    phrases = _unit_rows(jnp.array([0.0, 1.0]))[None] * 3.0  # lengths do not matter
    region_mask = jnp.array([[1, 1, 1, 0]])
    weights = jnp.array([[1.0, 1.0]])
    cosine = np.cos(np.array([[0.0, 0.5, 1.0], [1.0, 0.5, 0.0]]))  # [phrase, real region]
    top1 = mvptr.grounding_scores(phrases, weights, regions, region_mask, jax.random.key(0), 1)
    np.testing.assert_allclose(top1, [cosine.max(-1).mean()], rtol=1e-6)
    # Top 3 of the 3 real regions: each phrase picks one of them at random; averaged over many
    # keys, each phrase's mean is the mean of its three.
    draws = [
        float(mvptr.grounding_scores(phrases, weights, regions, region_mask, key, 3)[0])
        for key in jax.random.split(jax.random.key(1), 400)
    ]
    possible = {round((a + b) / 2, 5) for a in cosine[0] for b in cosine[1]}
    assert {round(d, 5) for d in draws} <= possible
    np.testing.assert_allclose(np.mean(draws), cosine.mean(), atol=0.02)
    # Only one phrase real: the score is that phrase's.
    one = mvptr.grounding_scores(
        phrases, jnp.array([[1.0, 0.0]]), regions, region_mask, jax.random.key(0), 1
    )
    np.testing.assert_allclose(one, [1.0], rtol=1e-6)


def test_phrase_grounding_loss_is_the_hinge_and_pairs_without_phrases_add_nothing(
    mvptr_data, mvptr_batch
):
    assert mvptr_batch['phrase_weights'].sum() > 0

    def grounding(margin):
        config = overridden(tiny_mvptr_config(), {'model.concepts.grounding_margin': margin})
        model = SemVLP(config.model, mvptr_data.dims, rngs=nnx.Rngs(params=0))
        graphdef, params = nnx.split(model, nnx.Param)

        @jax.jit
        def wpg(params, batch):
            model = nnx.merge(graphdef, params)
            encoded = model(batch, mode='staged')
            encoded.sample_key = jax.random.key(3)
            (loss,), metrics = mvptr.weakly_supervised_phrase_grounding(model, encoded, batch)
            return loss, metrics['wpg_accuracy']

        return wpg, params

    wpg, params = grounding(0.2)
    loss, accuracy = wpg(params, mvptr_batch)
    assert float(loss.count) == (mvptr_batch['phrase_weights'].sum(-1) > 0).sum()
    assert 0 <= float(loss.value) and 0 <= float(accuracy.value) <= 1
    # Margins 0 and 0.2 (same weights, same draws) differ by at most 0.2 per pair; a hinge.
    no_margin, same_params = grounding(0.0)
    difference = float(loss.value) - float(no_margin(same_params, mvptr_batch)[0].value)
    assert 0 < difference <= 0.2 + 1e-6
    # No phrases at all: zero loss, zero count, and a finite (zero) gradient.
    bare = {**mvptr_batch, 'phrase_weights': np.zeros_like(mvptr_batch['phrase_weights'])}
    loss, _ = wpg(params, bare)
    assert float(loss.count) == 0 and float(loss.value) == 0
    grads = jax.jit(jax.grad(lambda p: wpg(p, bare)[0].total))(params)
    leaves = [np.asarray(g) for g in jax.tree.leaves(grads)]
    assert all(np.isfinite(g).all() for g in leaves) and max(np.abs(g).max() for g in leaves) == 0


@pytest.mark.parametrize(
    'overrides, message',
    [
        ({'schedule': 'two', 'objectives': {'two': {'vsc': 1.0}}}, 'run in the staged mode only'),
        ({'data.concepts': {}}, 'set config.data.concepts'),
        ({'model.num_cross_layers': 2}, 'must be < config.model.num_layers'),
        ({'model.concepts.grounding_layer': 1}, 'must index one of the 1 joint layers'),
        ({'model.concepts.hard_negatives': 'hard'}, "hard_negatives='hard'"),
        ({'data.concepts.max_phrases': 0}, 'wpg needs config.data.concepts.max_phrases > 0'),
        (
            {'schedule': 'alternate', 'objectives': {'single': {'mlm': 1.0}, 'two': {'mlm': 1.0}}},
            'config.model.cross_attention=False builds no cross-attention',
        ),
    ],
)
def test_the_recipe_config_checks_name_the_key(overrides, message):
    config = overridden(tiny_mvptr_config(), {'best_metric': '', **overrides})
    with pytest.raises(ConfigError, match=message):
        validate(config, num_devices=1)


def mvptr_run(data, batch, axes, preset, steps=2):
    config = overridden(tiny_mvptr_config(), {'parallel.preset': preset})
    _, state, step, batch = compiled_training(config, data.dims, batch, axes)
    states, metrics = [jax.device_get(state)], []
    for _ in range(steps):
        state, step_metrics = step(state, batch, step_mode='staged')
        states.append(jax.device_get(state))
        metrics.append(jax.device_get(step_metrics))
    return state, states, metrics


def test_fsdp_on_eight_devices_equals_one_device(mvptr_data, mvptr_batch):
    _, states, metrics = mvptr_run(mvptr_data, mvptr_batch, {'data': 1}, 'data_parallel')
    for name in ('vsc', 'mcr', 'mlm', 'itm_hardest', 'wpg'):
        value = metrics[0][f'staged/{name}_loss']
        assert np.isfinite(value) and value > 0, name
    assert metrics[1]['staged/loss'] < metrics[0]['staged/loss']
    # The visual stage's own layers are trained in the staged steps.
    visual = lambda s: s.params['encoder']['visual_stage']['layers'][0]  # noqa: E731
    moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), visual(states[0]), visual(states[-1]))
    assert min(jax.tree.leaves(moved)) > 0
    state, fsdp_states, fsdp_metrics = mvptr_run(
        mvptr_data, mvptr_batch, {'data': 2, 'fsdp': 4}, 'fsdp'
    )
    np.testing.assert_allclose(
        [m['staged/loss'] for m in fsdp_metrics], [m['staged/loss'] for m in metrics], rtol=2e-5
    )
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-5)  # noqa: E731
    jax.tree.map(close, fsdp_states[-1].params, states[-1].params)
    kernel = visual(state)['feed_forward']['expand']['kernel']
    assert kernel.sharding.spec != jax.P()


MVPTR_CLI_STEPS = 12


@pytest.fixture(scope='module')
def mvptr_cli_run(tmp_path_factory):
    """configs/mvptr_demo.py (tiny) through `python -m semvlp_jax.main`: the run the fine-tunes
    start from."""
    workdir = tmp_path_factory.mktemp('mvptr_cli_run')
    steps = MVPTR_CLI_STEPS
    result = run_cli(
        workdir,
        *override_flags(TINY_MVPTR),
        f'--config.total_steps={steps}',
        '--config.log_every=1',
        f'--config.checkpoint_every={steps}',
        f'--config.eval_every={steps}',
        config='configs/mvptr_demo.py',
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result.stdout


def test_mvptr_demo_through_the_cli(mvptr_cli_run):
    workdir, stdout = mvptr_cli_run
    history = read_history(workdir / 'train_history.jsonl')
    assert [r['step'] for r in history] == list(range(1, MVPTR_CLI_STEPS + 1))
    first, last = history[0], history[-1]
    assert last['train/staged/loss'] < first['train/staged/loss']
    for metric in ('vsc_accuracy', 'mcr_accuracy', 'mlm_accuracy', 'itm_accuracy', 'wpg_accuracy'):
        assert metric in stdout
    assert (workdir / 'phrases.json').exists()


def fine_tune_config(module, arg: str):
    """A fine-tuning config of the tiny MVPTR (its model and data sizes)."""
    config = overridden(module.get_config(arg), TINY_MVPTR)
    config.update(total_steps=2, eval_every=2, checkpoint_every=2, log_every=1)
    return config


def test_retrieval_fine_tunes_from_an_mvptr_run(mvptr_cli_run, tmp_path, caplog):
    """MVPTR's retrieval fine-tune (VSC + hardest-negative ITM, the VSC shortlist re-ranked by
    ITM on the joint stage's [CLS]) starts from every parameter of the run, and its examples
    carry the run's concepts, unmasked."""
    from configs import finetune_retrieval
    from semvlp_jax import train
    from semvlp_jax.data import concepts
    from semvlp_jax.tasks.retrieval import Retrieval

    run, _ = mvptr_cli_run
    config = fine_tune_config(finetune_retrieval, f'init={run},mode=staged')
    config.task.update(eval_images=8, shortlist_k=4)
    workdir = tmp_path / 'retrieval'
    with caplog.at_level('INFO', logger='absl'):
        metrics = train.train_and_evaluate(config, str(workdir))
    (line,) = [r.getMessage() for r in caplog.records if 'initialised from' in r.getMessage()]
    assert 'new (initialised) 0' in line, line
    assert (workdir / 'phrases.json').read_text() == (run / 'phrases.json').read_text()
    for key in ('t2i_r1', 'i2t_r1', 't2i_r10'):
        assert 0.0 <= metrics[f'val/staged/retrieval_{key}'] <= 1.0, key
    assert metrics['val/staged/retrieval_t2i_r10'] >= metrics['val/staged/retrieval_t2i_r1']

    # What it trained on: a caption with its phrases' ids after its words, and the image's
    # tags (its shape names) ahead of its regions; nothing masked.
    task = Retrieval(config, workdir, 0, 1)
    group = task.elements(task.records('train'), 'train')[0]
    example = task.example(group, np.random.default_rng(0))
    record = group[np.random.default_rng(0).integers(len(group))]  # the caption it drew
    phrases = concepts.PhraseVocabulary.from_json((run / 'phrases.json').read_text())
    known = [phrases.id(p) for p in record.phrase_tuples if phrases.id(p) is not None]
    assert known, record
    words = task.tokenizer.encode(record.caption)
    ids = example['text_ids'][example['text_mask'] > 0].tolist()
    assert ids == [task.tokenizer.cls_id, *words, *known[:5], task.tokenizer.sep_id]
    scene = task.images.scenes['train'][int(record.image_id)]
    tags = ' '.join(concepts.scene_tags(scene['object_labels']))
    tag_ids = example['tag_ids'][example['tag_mask'] > 0].tolist()
    assert tag_ids == [task.tokenizer.cls_id, *task.tokenizer.encode(tags), task.tokenizer.sep_id]
    assert task.tokenizer.mask_id not in ids + tag_ids
    assert example['image_key'] == pipeline.image_key(record.image_id)


def test_vqa_from_an_mvptr_run_reads_questions_without_phrases_and_the_images_tags(tmp_path):
    """A question has no phrases: its words end the text; the image still brings its tags."""
    from semvlp_jax.tasks.vqa import Vqa

    config = fine_tune_config(finetune_vqa, 'init=,mode=staged')
    config.task.answer_min_count = 1
    validate(config, num_devices=1)
    task = Vqa(config, tmp_path, 0, 1)
    record = task.synthetic_records('val')[0]
    task.prepare([record])
    example = task.example(record)
    t = task.tokenizer
    ids = example['text_ids'][example['text_mask'] > 0].tolist()
    assert ids == [t.cls_id, *t.encode(record.question), t.sep_id]
    assert len(example['text_ids']) == config.data.max_text_len + config.data.concepts.max_phrases
    assert example['tag_ids'][0] == t.cls_id and example['tag_mask'].sum() >= 3
    assert set(example) >= {'region_features', 'tag_ids', 'tag_mask', 'answer_scores'}


def test_bert_fills_the_word_rows_and_the_visual_layers_and_the_phrases_keep_theirs():
    # The scanned layout: the visual stage's stack is unrolled for the name table and back.
    scan_layers = True

    bert = hf_bert.BertConfig.read(GOLDEN_BERT)
    config = finetune_vqa.get_config(f'bert={GOLDEN_BERT}').model
    config.update(scan_layers=scan_layers, separate_visual_layers=True, num_cross_layers=1)
    phrases = 3
    dims = DataDims(bert.vocab_size + phrases, 20, 8, 3, 0, 4, num_phrases=phrases)
    params = nnx.to_pure_dict(nnx.state(SemVLP(config, dims, rngs=nnx.Rngs(0)), nnx.Param))
    loaded, report = hf_bert.load_bert(GOLDEN_BERT, params, config, extra_rows=phrases)
    tensors = {hf_bert.canonical_name(k): v for k, v in _golden_tensors().items()}
    before, after = flat_leaves(params), flat_leaves(loaded)
    word = 'text_embeddings/word/embedding'
    np.testing.assert_array_equal(
        after[word][: bert.vocab_size], tensors['embeddings.word_embeddings.weight']
    )
    np.testing.assert_array_equal(after[word][bert.vocab_size :], before[word][bert.vocab_size :])
    np.testing.assert_array_equal(
        after['mlm_head/bias'][: bert.vocab_size], tensors['cls.predictions.bias']
    )
    np.testing.assert_array_equal(
        after['mlm_head/bias'][bert.vocab_size :], before['mlm_head/bias'][bert.vocab_size :]
    )
    # The visual layer starts from BERT's layer 0, as the shared bottom layer does.
    query = tensors['encoder.layer.0.attention.self.query.weight'].T
    visual = (
        'encoder/visual_stage/stack/self_attention/query/kernel'
        if scan_layers
        else 'encoder/visual_stage/layers/0/self_attention/query/kernel'
    )
    got = after[visual][0] if scan_layers else after[visual]
    np.testing.assert_array_equal(got, query)
    assert not any('visual_stage' in key for key in report.new)
    # A table that does not grow by exactly the phrases is refused, with the sizes.
    with pytest.raises(hf_bert.WeightsError, match='the model adds 2 phrase rows'):
        hf_bert.load_bert(GOLDEN_BERT, params, config, extra_rows=2)


def _golden_tensors():

    return safetensors.numpy.load_file(GOLDEN_BERT / hf_bert.WEIGHTS_FILE)


def test_the_paper_config_takes_mvptrs_settings_and_the_checkpoint_sizes():
    from configs import mvptr_pretrain

    config = mvptr_pretrain.get_config('data_dir=/data,steps=1000')
    validate(config, num_devices=8)
    assert config.batch_size == 1024 and config.total_steps == 1000
    assert (config.model.num_layers, config.model.num_cross_layers) == (12, 6)
    assert config.model.separate_visual_layers and not config.model.cross_attention
    concepts = config.data.concepts
    assert (config.data.num_regions, concepts.max_tags, concepts.max_phrases) == (50, 20, 5)
    assert concepts.phrase_min_count == 50 and concepts.objects_vocab == '/data/objects_vocab.txt'
    assert (config.optimizer.learning_rate, config.optimizer.weight_decay) == (5e-5, 0.01)
    assert set(config.objectives.staged) == {'vsc', 'mcr', 'mlm', 'itm_hardest', 'wpg'}
    bert = mvptr_pretrain.get_config(f'data_dir=/data,bert={GOLDEN_BERT}')
    validate(bert, num_devices=8)
    assert bert.init_bert == str(GOLDEN_BERT) and bert.data.tokenizer.kind == 'wordpiece'
    assert (bert.model.num_layers, bert.model.num_cross_layers) == (2, 1)  # the checkpoint's
    with pytest.raises(ValueError, match='steps'):
        mvptr_pretrain.get_config('data_dir=/data,steps=many')
