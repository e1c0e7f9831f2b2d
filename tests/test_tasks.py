"""Downstream tasks: the demo fine-tune configs end to end, and the pieces they are made of."""

import collections
import json
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import finetune, finetune_gqa, finetune_nlvr2, finetune_retrieval, finetune_vqa
from semvlp_jax import config_checks, train
from semvlp_jax.data import answers, synthetic, synthetic_tasks, vocabularies
from semvlp_jax.data.dims import DataDims, data_dims
from semvlp_jax.data.records import NLVR2_TRUE
from semvlp_jax.evaluators import gqa as gqa_eval
from semvlp_jax.evaluators import nlvr2 as nlvr2_eval
from semvlp_jax.evaluators import vqa_eval
from semvlp_jax.models.semvlp import SemVLP
from semvlp_jax.objectives import contrastive
from semvlp_jax.parallel import mesh as mesh_lib
from semvlp_jax.tasks import retrieval
from semvlp_jax.tasks.vqa import official_gqa_questions, official_vqa_files
from tests.conftest import tiny_config

SCENES = synthetic.SyntheticConfig()


def shrink(config):
    """A fine-tune config cut to the tiny pre-training model and a few steps."""
    tiny = tiny_config()
    config.model.update(tiny.model.to_dict() | {'contrastive_dim': config.model.contrastive_dim})
    config.data.update(num_train=64, num_val=16, max_text_len=tiny.data.max_text_len)
    config.update(total_steps=3, eval_every=3, log_every=3, checkpoint_every=3, batch_size=8)
    return config


def test_vqa_config_fine_tunes_and_its_results_file_scores_the_same(pretrained_run, tmp_path):
    config = shrink(finetune_vqa.get_config(f'init={pretrained_run},mode=two'))
    config.task.answer_min_count = 1
    metrics = train.train_and_evaluate(config, str(tmp_path))
    out = tmp_path / 'vqa'
    # The tokenizer is the pre-training run's, byte for byte.
    assert (tmp_path / 'tokenizer/synthetic.model').read_bytes() == (
        pretrained_run / 'tokenizer/synthetic.model'
    ).read_bytes()
    # The answer classifier is new; the rest comes from the pre-training checkpoint.
    vocabulary = json.loads((out / 'answers.json').read_text())
    assert set(vocabulary) <= set(synthetic.ANSWERS) and 'yes' in vocabulary
    # The official scoring command, run on the files the evaluation wrote, gives the metric.
    command = [
        sys.executable,
        '-m',
        'semvlp_jax.evaluators.vqa_eval',
        '--questions',
        str(out / 'val_questions.json'),
        '--annotations',
        str(out / 'val_annotations.json'),
        '--results',
        str(out / 'results_val_two_step3.json'),
        '--json',
    ]
    scored = json.loads(subprocess.run(command, check=True, capture_output=True).stdout)
    assert scored['overall'] / 100 == pytest.approx(metrics['val/two/vqa_accuracy'])
    assert scored['perAnswerType']['yes/no'] / 100 == pytest.approx(
        metrics['val/two/vqa_accuracy_yes_no']
    )
    results = json.loads((out / 'results_val_two_step3.json').read_text())
    assert len(results) == 16 * 4  # every question of the 16 validation scenes, once
    assert {r['answer'] for r in results} <= set(vocabulary)


def test_gqa_config_fine_tunes_single_stream(pretrained_run, tmp_path):
    config = shrink(finetune_gqa.get_config(f'init={pretrained_run},mode=single'))
    metrics = train.train_and_evaluate(config, str(tmp_path))
    assert set(k for k in metrics if k.endswith('gqa_accuracy')) == {'val/single/gqa_accuracy'}
    predictions = gqa_eval.load_submission(tmp_path / 'gqa/submission_val_single_step3.json')
    questions = json.loads((tmp_path / 'gqa/val_balanced_questions.json').read_text())
    assert gqa_eval.score(questions, predictions)['accuracy'] / 100 == pytest.approx(
        metrics['val/single/gqa_accuracy']
    )


def test_nlvr2_config_fine_tunes(pretrained_run, tmp_path):
    config = shrink(finetune_nlvr2.get_config(f'init={pretrained_run}'))
    metrics = train.train_and_evaluate(config, str(tmp_path))
    predictions = nlvr2_eval.read_predictions(tmp_path / 'nlvr2/predictions_val_two_step3.csv')
    scenes = synthetic.SyntheticScenes(SCENES, 'val', 16)
    labels = {r.identifier: r.label == NLVR2_TRUE for r in synthetic_tasks.nlvr2(scenes, seed=0)}
    assert sorted(predictions) == sorted(labels)  # 2 sentences x 4 image pairs
    scores = nlvr2_eval.score(predictions, labels)
    assert scores['accuracy'] / 100 == pytest.approx(metrics['val/two/nlvr2_accuracy'])
    assert scores['consistency'] / 100 == pytest.approx(metrics['val/two/nlvr2_consistency'])


def test_retrieval_config_fine_tunes_with_itm_and_itc(pretrained_run, tmp_path):
    config = shrink(finetune_retrieval.get_config(f'init={pretrained_run}'))
    config.task.update(eval_images=8, shortlist_k=4)
    metrics = train.train_and_evaluate(config, str(tmp_path))
    recalls = json.loads((tmp_path / 'retrieval/recall_val_two_step3.json').read_text())
    assert recalls['rsum'] / 100 == pytest.approx(metrics['val/two/retrieval_rsum'])
    history = [json.loads(line) for line in (tmp_path / 'train_history.jsonl').open()]
    assert 'train/two/itc_loss' in history[-1] and 'train/two/itm_loss' in history[-1]


# --- pieces ---------------------------------------------------------------------------------


def _tiny_model(
    images_per_example=1, contrastive_dim=16, num_layers=3, num_cross_layers=1, **model
):
    config = tiny_config().model
    config.update(
        num_layers=num_layers,
        num_cross_layers=num_cross_layers,
        contrastive_dim=contrastive_dim,
        **model,
    )
    dims = DataDims(
        vocab_size=50,
        max_text_len=6,
        visual_feature_dim=12,
        num_object_labels=5,
        num_attribute_labels=0,
        num_answers=7,
        images_per_example=images_per_example,
    )
    return SemVLP(config, dims, rngs=nnx.Rngs(params=0))


def _batch(rng, size, images=None, regions=4):
    lead = (size,) if images is None else (size, images)
    mask = np.ones((size, 6), np.int32)
    mask[0, 4:] = 0
    region_mask = np.ones((*lead, regions), np.int32)
    region_mask[..., -1] = 0
    return {
        'text_ids': rng.integers(5, 50, (size, 6)).astype(np.int32),
        'text_mask': mask,
        'region_features': rng.standard_normal((*lead, regions, 12)).astype(np.float32),
        'region_boxes': rng.uniform(0, 1, (*lead, regions, 4)).astype(np.float32),
        'region_mask': region_mask,
    }


@pytest.mark.parametrize('mode', ['single', 'two'])
def test_a_two_image_example_is_its_text_encoded_with_each_image(mode):
    model = _tiny_model(images_per_example=2)
    batch = _batch(np.random.default_rng(0), 3, images=2)
    pooled = model(batch, mode=mode).pooled.reshape(3, 2, -1)
    for image in range(2):
        alone = {k: (v[:, image] if k.startswith('region_') else v) for k, v in batch.items()}
        np.testing.assert_allclose(
            pooled[:, image], model(alone, mode=mode).pooled, rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize('num_cross_layers', [1, 3])
def test_unimodal_states_are_the_two_stream_bottom_layers_in_both_modes(num_cross_layers):
    model = _tiny_model(num_cross_layers=num_cross_layers)
    batch = _batch(np.random.default_rng(1), 3)
    single, two = model(batch, mode='single'), model(batch, mode='two')
    np.testing.assert_allclose(single.unimodal_text, two.unimodal_text, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(single.unimodal_image, two.unimodal_image, rtol=1e-5, atol=1e-6)
    # Texts and images embedded alone (retrieval's shortlist) give the same vectors.
    head = model.contrastive_head
    np.testing.assert_allclose(
        model.embed_texts(batch), head.embed_text(two.unimodal_text), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        model.embed_images(batch), head.embed_image(two.unimodal_image), rtol=1e-5, atol=1e-6
    )
    # The text alone does not depend on the image.
    other = dict(batch, region_features=batch['region_features'][::-1])
    np.testing.assert_allclose(model(other, mode='two').unimodal_text, two.unimodal_text)


def test_itc_leaves_out_unmatched_rows_and_questions_exactly():
    model = _tiny_model()
    batch = _batch(np.random.default_rng(2), 5)
    batch.update(
        is_matched=np.array([1, 0, 1, 1, 1], np.int32),
        is_question=np.array([0, 0, 0, 1, 0], np.int32),
    )
    (loss,), _ = contrastive.image_text_contrastive(model, model(batch, mode='two'), batch)
    kept = np.array([0, 2, 4])
    sub = {k: v[kept] for k, v in batch.items()}
    (sub_loss,), metrics = contrastive.image_text_contrastive(model, model(sub, mode='two'), sub)
    assert float(loss.count) == 3
    np.testing.assert_allclose(loss.value, sub_loss.value, rtol=1e-5)
    # By hand on the sub-batch: symmetric cross-entropy of the scaled cosine similarities.
    text = model.contrastive_head.embed_text(model(sub, mode='two').unimodal_text)
    image = model.contrastive_head.embed_image(model(sub, mode='two').unimodal_image)
    logits = np.asarray(model.contrastive_head.inverse_temperature() * text @ image.T)
    expected = -np.mean(
        (np.diag(jax.nn.log_softmax(logits, 1)) + np.diag(jax.nn.log_softmax(logits, 0))) / 2
    )
    np.testing.assert_allclose(sub_loss.value, expected, rtol=1e-5)
    assert 0 <= float(metrics['itc_accuracy'].value) <= 1


def test_shortlist_picks_the_top_k_each_way():
    similarity = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.4]])  # [3 texts, 2 images]
    i2t, t2i = retrieval.shortlist(similarity, k=2)
    # image 0: texts by score 0 (.9), 2 (.5); image 1: texts 1 (.8), 2 (.4)
    assert i2t.tolist() == [[0, 0], [0, 2], [1, 1], [1, 2]]
    # text 0: images 0, 1; text 1: images 1, 0; text 2: images 0, 1 (k covers both)
    assert t2i.tolist() == [[0, 0], [1, 0], [1, 1], [0, 1], [0, 2], [1, 2]]


class _Context:
    """EvalContext.predict without devices: `fn` on the model, over all rows at once."""

    def __init__(self, model):
        self.model = model

    def predict(self, fn, params, mode, count, rows):
        return jax.tree.map(np.asarray, fn(self.model, rows(np.arange(count)), mode))


def test_a_shortlist_as_long_as_the_candidates_gives_the_all_pairs_scores():
    model = _tiny_model()
    rng = np.random.default_rng(3)
    data = retrieval.RetrievalSet.__new__(retrieval.RetrievalSet)
    batch = _batch(rng, 6)
    data.texts = {k: batch[k] for k in ('text_ids', 'text_mask')}
    data.images = {k: v[:3] for k, v in batch.items() if k.startswith('region_')}
    data.text_image = np.array([0, 0, 1, 1, 2, 2])
    context = _Context(model)
    all_i2t, all_t2i = retrieval.score_matrices(context, None, 'two', data, k=0)
    assert all_i2t.shape == (3, 6) and np.isfinite(all_i2t).all()
    np.testing.assert_array_equal(all_t2i, all_i2t.T)
    i2t, t2i = retrieval.score_matrices(context, None, 'two', data, k=6)
    np.testing.assert_allclose(i2t, all_i2t, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(t2i, all_t2i, rtol=1e-5, atol=1e-5)
    # k=1: one ITM-scored candidate per query, the rest at -inf.
    i2t, t2i = retrieval.score_matrices(context, None, 'two', data, k=1)
    assert (np.isfinite(i2t).sum(1) == 1).all() and (np.isfinite(t2i).sum(1) == 1).all()


def test_retrieval_reports_the_re_ranked_recalls_and_the_shortlists_own(tmp_path):
    # Two images, two captions each. The embeddings rank every caption's own image first; the
    # ITM scores prefer the other image for every caption and the other image's captions.
    task = retrieval.Retrieval.__new__(retrieval.Retrieval)
    task.val_examples = types.SimpleNamespace(text_image=np.array([0, 0, 1, 1]))
    similarity = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.3, 0.7]])  # [texts, images]
    i2t = np.array([[0.0, 1.0, 2.0, 0.0], [0.0, 3.0, 0.0, 0.0]])  # [images, texts]
    t2i = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])  # [texts, images]
    metrics, files = task.score((i2t, t2i, similarity))
    assert metrics['retrieval_t2i_r1'] == 0.0 and metrics['retrieval_i2t_r1'] == 0.0
    assert metrics['retrieval_shortlist_t2i_r1'] == 1.0
    assert metrics['retrieval_shortlist_i2t_r1'] == 1.0
    assert metrics['retrieval_shortlist_rsum'] == pytest.approx(6.0)
    files[0].write(tmp_path / 'recall.json')
    written = json.loads((tmp_path / 'recall.json').read_text())
    assert written['t2i_r1'] == 0.0 and written['shortlist']['t2i_r1'] == 100.0
    # Without a shortlist (ITM on every pair) there is no second ranking to report.
    metrics, _ = task.score((i2t, t2i, None))
    assert not any(key.startswith('retrieval_shortlist') for key in metrics)


def test_answer_vocabulary_keeps_frequent_answers_most_frequent_first():
    given = collections.Counter(['yes'] * 5 + ['no'] * 5 + ['2'] * 3 + ['red'] * 2)
    key = 'task.answer_min_count'
    assert vocabularies.answer_vocabulary(given, 3, key) == ['no', 'yes', '2']
    assert vocabularies.answer_vocabulary(given, 1, key) == ['no', 'yes', '2', 'red']
    with pytest.raises(
        ValueError, match=r'config\.task\.answer_min_count=6: no training answer .* seen 5 times'
    ):
        vocabularies.answer_vocabulary(given, 6, key)


def test_soft_targets_are_the_official_accuracy_of_each_answer():
    """For every synthetic question, the soft target of each answer equals the official
    evaluator's accuracy for predicting it (the leave-one-out rule), after normalisation."""
    records = synthetic_tasks.vqa(synthetic.SyntheticScenes(SCENES, 'val', 30))
    vocabulary = {a: i for i, a in enumerate(synthetic.ANSWERS)}
    for record in records:
        given = list(record.answers)
        targets = answers.answer_scores([vqa_eval.normalize_answer(a) for a in given], vocabulary)
        for answer, index in vocabulary.items():
            assert targets[index] == pytest.approx(vqa_eval.question_accuracy(answer, given))
    # Number words normalise to digits, so 'two' and '2' count as one answer.
    mixed = ['two'] * 2 + ['2'] * 2 + ['3'] * 6
    targets = answers.answer_scores([vqa_eval.normalize_answer(a) for a in mixed], vocabulary)
    assert targets[vocabulary['2']] == pytest.approx(1.0)


def test_synthetic_nlvr2_statements_hold_exactly_when_labelled_true():
    scenes = synthetic.SyntheticScenes(SCENES, 'val', 160)
    records = synthetic_tasks.nlvr2(scenes, seed=0)
    assert len(records) == 80
    assert sum(r.label == NLVR2_TRUE for r in records) == 40  # two true pairs per sentence
    by_id = {str(scenes[i]['image_id']): scenes[i] for i in range(len(scenes))}
    checked = 0
    for record in records:
        words = record.sentence.split()
        if words[:2] == ['there', 'are']:  # "there are N objects in total"
            left, right = (by_id[i] for i in record.image_ids)
            total = int(left['region_mask'].sum() + right['region_mask'].sum())
            assert (total == int(words[2])) == (record.label == NLVR2_TRUE)
            checked += 1
    assert checked > 0
    groups = {nlvr2_eval.group_key(r.identifier) for r in records}
    assert len(groups) == 20


def test_synthetic_gqa_truth_scores_100_and_vqa_truth_scores_the_annotator_agreement():
    scenes = synthetic.SyntheticScenes(SCENES, 'val', 20)
    questions = official_gqa_questions(synthetic_tasks.gqa(scenes))
    truth = {qid: q['answer'] for qid, q in questions.items()}
    assert gqa_eval.score(questions, truth)['accuracy'] == 100.0
    vqa_questions, annotations = official_vqa_files(synthetic_tasks.vqa(scenes))
    results = [{'question_id': int(qid), 'answer': answer} for qid, answer in truth.items()]
    scores = vqa_eval.score(vqa_questions, annotations, results)
    expected = np.mean(
        [
            answers.soft_score([a['answer'] for a in ann['answers']].count(truth[str(qid)]))
            for ann in annotations['annotations']
            for qid in [ann['question_id']]
        ]
    )
    assert scores.overall == round(100 * expected, 2)


def test_task_config_errors_name_the_key():
    def error(config):
        with pytest.raises(config_checks.ConfigError) as info:
            config_checks.validate(config, num_devices=8)
        return str(info.value)

    config = finetune_vqa.get_config('init=x')
    config.objectives = {'two': {'mlm': 1.0}}
    assert "config.objectives.two.mlm: task 'vqa' has no data for 'mlm'" in error(config)
    config = finetune_nlvr2.get_config('init=x')
    config.itm_negative_prob = 0.5
    assert "config.itm_negative_prob=0.5 must be 0 for task 'nlvr2'" in error(config)
    config = finetune_retrieval.get_config('init=x')
    config.model.contrastive_dim = 0
    assert 'config.task.shortlist_k=16 needs config.model.contrastive_dim > 0' in error(config)
    config.task.shortlist_k = 0
    assert 'config.objectives.two.itc needs config.model.contrastive_dim > 0' in error(config)
    config = finetune_vqa.get_config('init=x')
    config.task.answer_min_count = 0
    assert 'config.task.answer_min_count=0 must be an integer >= 1' in error(config)
    config.task = dict(name='vqa2')
    assert "config.task.name='vqa2'; expected one of" in error(config)
    with pytest.raises(ValueError, match="config argument mode='three'"):
        finetune.parse_arg('mode=three')
    with pytest.raises(ValueError, match="config argument 'steps=3'"):
        finetune.parse_arg('steps=3')


def test_init_skip_keeps_the_answer_head_initialised(pretrained_run, tmp_path):
    from semvlp_jax import pretrained

    config = tiny_config()
    _, state = train.create_model_and_state(
        config, _dims_of(pretrained_run), mesh_lib.make_mesh(config.mesh)
    )
    params, report = pretrained.load_pretrained(pretrained_run, state.params, skip=('answer_head',))
    assert {n.split('/')[0] for n in report.new} == {'answer_head'}
    for key in ('expand', 'classifier'):
        np.testing.assert_array_equal(
            params['answer_head'][key]['kernel'], state.params['answer_head'][key]['kernel']
        )
    assert not jnp.array_equal(
        params['pooler']['dense']['kernel'], state.params['pooler']['dense']['kernel']
    )


def _dims_of(workdir):
    from semvlp_jax.data.tokenizers import SentencePieceTokenizer

    tokenizer = SentencePieceTokenizer(workdir / 'tokenizer/synthetic.model')
    return data_dims(tiny_config().data, tokenizer.vocab_size)


def test_the_synthetic_tokenizer_knows_every_word_of_every_task(tmp_path):
    config = tiny_config()
    tokenizer = vocabularies.synthetic_tokenizer(config.data, tmp_path / 'synthetic.model')
    scenes = synthetic.SyntheticScenes(synthetic.SyntheticConfig.from_data(config.data), 'val', 240)
    texts = [record.sentence for record in synthetic_tasks.nlvr2(scenes, seed=0)]
    for index in range(len(scenes)):
        questions = scenes[index]['questions']
        texts += scenes[index]['captions'] + [q['question'] for q in questions]
    unknown = [text for text in texts if tokenizer.unk_id in tokenizer.encode(text)]
    assert not unknown, unknown[:5]
    # Including the largest NLVR2 total and the rare letters that a coverage cut would drop.
    for text in ('there are 11 objects in total', 'exactly one image contains a cross'):
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_a_fine_tune_from_a_step_directory_reads_with_the_runs_tokenizer(pretrained_run, tmp_path):
    config = tiny_config()
    step_dir = next((pretrained_run / 'checkpoints').iterdir())
    config.init_from = str(step_dir)
    vocabularies.run_tokenizer(config.data, tmp_path / 'a', config.init_from)
    assert (tmp_path / 'a/tokenizer/synthetic.model').read_bytes() == (
        pretrained_run / 'tokenizer/synthetic.model'
    ).read_bytes()
    config.init_from = str(tmp_path / 'elsewhere')
    with pytest.raises(FileNotFoundError, match='no tokenizer/synthetic.model'):
        vocabularies.run_tokenizer(config.data, tmp_path / 'b', config.init_from)
