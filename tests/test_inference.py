"""`semvlp_jax.inference`: a trained run rebuilt from what it saved answers as its trainer did."""

import json
import shutil

import numpy as np
import pytest

from semvlp_jax import predict
from semvlp_jax.data.records import RegionRecord
from semvlp_jax.errors import MissingConfigFile
from semvlp_jax.inference import InferenceError, Predictor, TrainedRun, read_image
from semvlp_jax.tasks import vqa


@pytest.fixture(scope='module')
def predictor(bert_vqa_run):
    return Predictor.load(bert_vqa_run)


def _val_questions(predictor):
    """The VQA task's validation records and their images, as the trainer evaluated them."""
    task = vqa.Vqa(predictor.run.config, predictor.run.directory, 0, 1)
    records = task.records('val')
    images = []
    for record in records:
        fields = task.images(record.image_id)
        real = fields['region_mask'].astype(bool)
        images.append(
            RegionRecord(
                image_id=record.image_id,
                image_height=1,
                image_width=1,
                features=fields['region_features'][real],
                boxes=fields['region_boxes'][real],
                objects=np.full(real.sum(), -1, np.int32),
                attributes=np.full(real.sum(), -1, np.int32),
            )
        )
    return records, images


def test_answers_are_the_trainers_evaluation_predictions(predictor, bert_vqa_run):
    assert predictor.mode == 'two' and predictor.run.step == 1
    records, images = _val_questions(predictor)
    trainer = {
        str(r['question_id']): r['answer']
        for r in json.loads((bert_vqa_run / 'vqa/results_val_two_step1.json').read_text())
    }
    answers = predictor.answer_batch(images, [r.question for r in records], top_k=3)
    assert len(answers) == len(trainer) == 64
    assert [a[0]['answer'] for a in answers] == [trainer[r.question_id] for r in records]
    assert len({a[0]['answer'] for a in answers}) > 1  # not one answer for everything
    for ranked in answers:
        scores = [a['score'] for a in ranked]
        assert scores == sorted(scores, reverse=True) and 0 < scores[-1] <= scores[0] < 1
    # One at a time (batch 1, another compiled shape) gives the same answer and score.
    single = predictor.answer(images[5], records[5].question, top_k=1)
    assert single[0]['answer'] == answers[5][0]['answer']
    assert single[0]['score'] == pytest.approx(answers[5][0]['score'], abs=1e-5)


def test_scores_and_similarities_do_not_depend_on_the_batch(predictor):
    records, images = _val_questions(predictor)
    texts = [r.question for r in records[:10]]
    batched = predictor.score_batch(images[:10], texts)  # padded to 64 rows
    one_by_one = [predictor.score(image, text) for image, text in zip(images[:10], texts)]
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert ((batched > 0) & (batched < 1)).all()
    similarity = predictor.similarity(images[:2], texts[:3])
    assert similarity.shape == (2, 3) and (np.abs(similarity) <= 1 + 1e-6).all()
    swapped = predictor.similarity(images[:2][::-1], texts[:3])
    np.testing.assert_allclose(swapped, similarity[::-1], atol=1e-6)


def test_the_command_prints_the_top_answers(predictor, bert_vqa_run, tmp_path, capsys):
    records, images = _val_questions(predictor)
    image = images[0]
    path = tmp_path / f'{image.image_id}.npz'
    np.savez(
        path,
        features=image.features,
        boxes=image.boxes * 100.0,  # pixels of a 100x100 image: the reader normalises them
        image_h=np.int32(100),
        image_w=np.int32(100),
    )
    question = records[0].question
    expected = predictor.answer(read_image(path), question, top_k=2)
    argv = ['--workdir', str(bert_vqa_run), '--image', str(path), '--question', question]
    assert predict.main([*argv, '--top_k', '2', '--text', 'a red circle']) == 0
    out = capsys.readouterr().out
    for rank, answer in enumerate(expected, 1):
        assert f'  {rank}. {answer["answer"]}  {answer["score"]:.4f}' in out
    assert 'T: a red circle\n  match 0.' in out and 'similarity' in out


def _record(image_id, features):
    regions = len(features)
    boxes, labels = np.zeros((regions, 4), np.float32), np.full(regions, -1, np.int32)
    return RegionRecord(image_id, 1, 1, features, boxes, labels, labels)


def test_bad_inputs_are_named(predictor, bert_vqa_run, tmp_path):
    _, images = _val_questions(predictor)
    narrow = _record('x', np.zeros((3, 5), np.float32))
    with pytest.raises(
        InferenceError, match=r"image 'x' has features of shape \[3, 5\].*\[regions, 64\]"
    ):
        predictor.answer(narrow, 'what is it?')
    with pytest.raises(InferenceError, match='empty question'):
        predictor.answer(images[0], '   ')
    nan = _record('n', np.full((2, 64), np.nan, np.float32))
    with pytest.raises(InferenceError, match="image 'n' has NaN"):
        predictor.score(nan, 'a circle')
    with pytest.raises(MissingConfigFile, match='no checkpoint there'):
        TrainedRun.load(tmp_path)
    step = tmp_path / 'run/checkpoints/1'
    shutil.copytree(bert_vqa_run / 'checkpoints/1', step)
    shutil.rmtree(step / 'meta')
    with pytest.raises(MissingConfigFile, match='no meta/ item, so no saved config'):
        TrainedRun.load(step)
    with pytest.raises(FileNotFoundError, match='no such file'):
        read_image(tmp_path / 'missing.npz')
