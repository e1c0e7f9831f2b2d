"""Local evaluators on hand-worked cases: retrieval Recall@K, NLVR2 and GQA scores and files."""

import json
import re

import numpy as np
import pytest

from semvlp_jax.evaluators import gqa, nlvr2, retrieval

INF = np.inf

# ------------------------------------------------------------------------------------------------
# Retrieval

# 3 images x 6 texts, captions (0, 1) describe image 0, (2, 3) image 1, (4, 5) image 2.
TEXT_IMAGE = np.array([0, 0, 1, 1, 2, 2])
I2T = np.array(
    [
        # image 0: best GT = text 0 at 0.9; negatives 0.8, 0.2, 0.3, 0.4 all < 0.9 -> rank 0
        [0.9, 0.1, 0.8, 0.2, 0.3, 0.4],
        # image 1: best GT = text 2 at 0.5; negatives 0.7, 0.6 >= 0.5 (0.2, 0.3 not) -> rank 2
        [0.7, 0.6, 0.5, 0.1, 0.2, 0.3],
        # image 2: its first caption (0.05) is last, its second (0.6) is top -> rank 0
        [0.1, 0.2, 0.3, 0.4, 0.05, 0.6],
    ]
)
T2I = np.array(
    [
        [0.9, 0.5, 0.1],  # text 0 -> image 0 at 0.9, nothing above -> rank 0
        [0.2, 0.8, 0.7],  # text 1 -> image 0 at 0.2, 0.8 and 0.7 above -> rank 2
        [0.3, 0.6, 0.1],  # text 2 -> image 1 at 0.6 -> rank 0
        [0.7, 0.4, 0.1],  # text 3 -> image 1 at 0.4, 0.7 above -> rank 1
        [0.1, 0.2, 0.3],  # text 4 -> image 2 at 0.3 -> rank 0
        [0.5, 0.1, 0.4],  # text 5 -> image 2 at 0.4, 0.5 above -> rank 1
    ]
)


def test_retrieval_ranks_by_hand():
    i2t_ranks, t2i_ranks = retrieval.ranks(I2T, T2I, TEXT_IMAGE)
    np.testing.assert_array_equal(i2t_ranks, [0, 2, 0])
    np.testing.assert_array_equal(t2i_ranks, [0, 2, 0, 1, 0, 1])


def test_recall_at_k_by_hand():
    r = retrieval.recall_at_k(I2T, T2I, TEXT_IMAGE, ks=(1, 2, 5))
    assert list(r) == ['i2t_r1', 'i2t_r2', 'i2t_r5', 't2i_r1', 't2i_r2', 't2i_r5', 'rsum']
    # i2t ranks [0, 2, 0]: R@1 = R@2 = 2/3, R@5 = 3/3.
    assert r['i2t_r1'] == pytest.approx(200 / 3, abs=1e-12)
    assert r['i2t_r2'] == pytest.approx(200 / 3, abs=1e-12)
    assert r['i2t_r5'] == 100.0
    # t2i ranks [0, 2, 0, 1, 0, 1]: R@1 = 3/6, R@2 = 5/6, R@5 = 6/6.
    assert r['t2i_r1'] == 50.0
    assert r['t2i_r2'] == pytest.approx(500 / 6, abs=1e-12)
    assert r['t2i_r5'] == 100.0
    # rsum = (200/3 + 200/3 + 500/6) + (100 + 50 + 100) = 650/3 + 250 = 1400/3 = 466.66...
    assert r['rsum'] == pytest.approx(200 / 3 + 200 / 3 + 100 + 50 + 500 / 6 + 100, abs=1e-9)
    assert r['rsum'] == pytest.approx(1400 / 3, abs=1e-9)


def test_recall_default_ks_and_rsum():
    r = retrieval.recall_at_k(I2T, T2I, TEXT_IMAGE)
    assert list(r) == ['i2t_r1', 'i2t_r5', 'i2t_r10', 't2i_r1', 't2i_r5', 't2i_r10', 'rsum']
    # Every rank is < 5, so R@5 = R@10 = 100; rsum = 200/3 + 100 + 100 + 50 + 100 + 100.
    assert r['rsum'] == pytest.approx(200 / 3 + 450, abs=1e-9)
    assert r['rsum'] == pytest.approx(sum(v for k, v in r.items() if k != 'rsum'), abs=1e-9)


def test_only_second_caption_on_top_counts_for_the_image():
    # Image 0's first caption (text 0) is last, its second (text 1) is first: any caption counts.
    i2t = np.array([[0.0, 0.9, 0.5, 0.4], [0.1, 0.2, 0.3, 0.8]])
    text_image = np.array([0, 0, 1, 1])
    r = retrieval.recall_at_k(i2t, i2t.T, text_image, ks=(1,))
    # image 0: best GT 0.9 > 0.5, 0.4 -> rank 0; image 1: best GT 0.8 > 0.1, 0.2 -> rank 0.
    assert r['i2t_r1'] == 100.0


def test_tie_with_a_negative_is_pessimistic():
    # Image 0's GT (text 0, 0.5) ties text 1 (0.5): the negative wins the tie -> rank 1, not 0.
    # Image 1's GT (text 1, 0.9) beats 0.1 -> rank 0.
    scores = np.array([[0.5, 0.5], [0.1, 0.9]])
    text_image = np.array([0, 1])
    i2t_ranks, t2i_ranks = retrieval.ranks(scores, scores.T, text_image)
    np.testing.assert_array_equal(i2t_ranks, [1, 0])
    # Text 0: image 0 at 0.5 vs image 1 at 0.1 -> 0; text 1: image 1 at 0.9 vs 0.5 -> 0.
    np.testing.assert_array_equal(t2i_ranks, [0, 0])
    r = retrieval.recall_at_k(scores, scores.T, text_image, ks=(1,))
    assert r == {'i2t_r1': 50.0, 't2i_r1': 100.0, 'rsum': 150.0}


def test_constant_scores_score_zero_at_one():
    # All 4 negatives tie each image's GT -> i2t rank 4; both other images tie a text's GT -> 2.
    scores = np.zeros((3, 6))
    i2t_ranks, t2i_ranks = retrieval.ranks(scores, scores.T, TEXT_IMAGE)
    np.testing.assert_array_equal(i2t_ranks, [4, 4, 4])
    np.testing.assert_array_equal(t2i_ranks, [2] * 6)
    r = retrieval.recall_at_k(scores, scores.T, TEXT_IMAGE, ks=(1, 5))
    assert r == {'i2t_r1': 0.0, 'i2t_r5': 100.0, 't2i_r1': 0.0, 't2i_r5': 100.0, 'rsum': 200.0}


def test_constant_scores_with_only_ground_truth_candidates():
    # One image and its 3 captions: no negatives in either direction, so every rank is 0.
    scores = np.zeros((1, 3))
    r = retrieval.recall_at_k(scores, scores.T, np.array([0, 0, 0]), ks=(1,))
    assert r == {'i2t_r1': 100.0, 't2i_r1': 100.0, 'rsum': 200.0}


def test_minus_inf_shortlist_entries():
    text_image = np.array([0, 0, 1, 1])
    i2t = np.array(
        [
            # image 0: both GTs off the shortlist (-inf); 0.2 and the -inf negative tie/beat -> 2
            [-INF, -INF, 0.2, -INF],
            # image 1: best GT 0.5 beats 0.3 and -inf -> 0
            [-INF, 0.3, 0.5, -INF],
        ]
    )
    t2i = np.array(
        [
            [0.1, -INF],  # text 0 -> image 0 at 0.1 > -inf -> 0
            [-INF, -INF],  # text 1 -> image 0 at -inf ties image 1 at -inf -> 1
            [-INF, 0.4],  # text 2 -> image 1 at 0.4 -> 0
            [0.2, -INF],  # text 3 -> image 1 at -inf, 0.2 above -> 1
        ]
    )
    i2t_ranks, t2i_ranks = retrieval.ranks(i2t, t2i, text_image)
    np.testing.assert_array_equal(i2t_ranks, [2, 0])
    np.testing.assert_array_equal(t2i_ranks, [0, 1, 0, 1])
    r = retrieval.recall_at_k(i2t, t2i, text_image, ks=(1, 2))
    # i2t: R@1 = 1/2, R@2 = 1/2 (rank 2 is not < 2); t2i: R@1 = 2/4, R@2 = 4/4.
    assert r == {'i2t_r1': 50.0, 'i2t_r2': 50.0, 't2i_r1': 50.0, 't2i_r2': 100.0, 'rsum': 250.0}


def test_nan_scores_rejected():
    i2t = I2T.copy()
    i2t[1, 3] = np.nan
    with pytest.raises(ValueError, match='i2t_scores contains 1 NaN'):
        retrieval.recall_at_k(i2t, T2I, TEXT_IMAGE)
    t2i = T2I.copy()
    t2i[0, 0] = t2i[5, 2] = np.nan
    with pytest.raises(ValueError, match='t2i_scores contains 2 NaN'):
        retrieval.recall_at_k(I2T, t2i, TEXT_IMAGE)


def test_bad_shapes_and_text_image_rejected():
    with pytest.raises(ValueError, match=r't2i_scores must have shape \[n_texts, n_images\]'):
        retrieval.recall_at_k(I2T, I2T, TEXT_IMAGE)  # forgot the transpose
    with pytest.raises(ValueError, match='i2t_scores must be 2-D'):
        retrieval.recall_at_k(I2T[0], T2I, TEXT_IMAGE)
    with pytest.raises(ValueError, match=r'text_image must have shape \[n_texts\]'):
        retrieval.recall_at_k(I2T, T2I, TEXT_IMAGE[:5])
    with pytest.raises(ValueError, match='outside'):
        retrieval.recall_at_k(I2T, T2I, np.array([0, 0, 1, 1, 2, 3]))
    with pytest.raises(ValueError, match='integer'):
        retrieval.recall_at_k(I2T, T2I, TEXT_IMAGE.astype(float))
    with pytest.raises(ValueError, match='image 1 has no text'):
        retrieval.recall_at_k(I2T, T2I, np.array([0, 0, 0, 2, 2, 2]))
    with pytest.raises(ValueError, match='ks'):
        retrieval.recall_at_k(I2T, T2I, TEXT_IMAGE, ks=(0,))


# ------------------------------------------------------------------------------------------------
# NLVR2

# Set 850 has sentence 0 over pairs 0-3 and sentence 1 over pairs 0-1.
NLVR2_LABELS = {
    'dev-850-0-0': True,
    'dev-850-1-0': False,
    'dev-850-2-0': True,
    'dev-850-3-0': False,
    'dev-850-0-1': True,
    'dev-850-1-1': False,
}


def test_nlvr2_accuracy_and_consistency_by_hand():
    predictions = dict(NLVR2_LABELS)
    predictions['dev-850-0-1'] = False  # the one mistake, in sentence 1's group
    # accuracy: 5 of 6 examples right = 83.33...
    # consistency: group 'dev-850-0' (4 pairs) all right, group 'dev-850-1' (2 pairs) not -> 1/2.
    # (Grouping by the wrong field, i.e. by pair, would give 3 of 4 groups right = 75.)
    result = nlvr2.score(predictions, NLVR2_LABELS)
    assert result['accuracy'] == pytest.approx(500 / 6, abs=1e-12)
    assert result['consistency'] == 50.0
    assert nlvr2.score(NLVR2_LABELS, NLVR2_LABELS) == {'accuracy': 100.0, 'consistency': 100.0}


def test_nlvr2_labels_as_jsonl_strings():
    labels = {k: str(v) for k, v in NLVR2_LABELS.items()}  # 'True' / 'False'
    predictions = {k: not v for k, v in NLVR2_LABELS.items()}
    assert nlvr2.score(predictions, labels) == {'accuracy': 0.0, 'consistency': 0.0}


def test_nlvr2_group_key():
    assert nlvr2.group_key('dev-850-0-1') == 'dev-850-1'
    assert nlvr2.group_key('test1-7-3-2') == 'test1-7-2'


def test_nlvr2_missing_and_unknown_identifiers():
    predictions = dict(NLVR2_LABELS)
    del predictions['dev-850-2-0']
    with pytest.raises(
        nlvr2.PredictionsError, match=r"no prediction for 'dev-850-2-0' \(1 in all\)"
    ):
        nlvr2.score(predictions, NLVR2_LABELS)
    predictions = dict(NLVR2_LABELS, **{'dev-999-0-0': True})
    with pytest.raises(ValueError, match="unknown identifiers 'dev-999-0-0'"):
        nlvr2.score(predictions, NLVR2_LABELS)


def test_nlvr2_malformed_identifier():
    for bad in ('dev-850-0', 'dev-850-0-1-2', 'dev--0-1'):
        labels = {bad: True}
        with pytest.raises(nlvr2.PredictionsError, match=f'malformed NLVR2 identifier {bad!r}'):
            nlvr2.score(labels, labels)


def test_nlvr2_parse_label():
    assert nlvr2.parse_label(True) is True
    assert nlvr2.parse_label(False) is False
    assert nlvr2.parse_label(np.bool_(True)) is True
    assert nlvr2.parse_label('True') is True
    assert nlvr2.parse_label('false') is False
    assert nlvr2.parse_label('TRUE') is True
    for bad in (1, 0, 'yes', '', None):
        with pytest.raises(ValueError, match=f'not an NLVR2 label.*{bad!r}'):
            nlvr2.parse_label(bad)


def test_nlvr2_predictions_round_trip(tmp_path):
    path = tmp_path / 'predictions.csv'
    nlvr2.write_predictions(path, NLVR2_LABELS)
    assert path.read_text().splitlines() == [
        'dev-850-0-0,True',
        'dev-850-0-1,True',
        'dev-850-1-0,False',
        'dev-850-1-1,False',
        'dev-850-2-0,True',
        'dev-850-3-0,False',
    ]
    assert nlvr2.read_predictions(path) == NLVR2_LABELS


def test_nlvr2_read_predictions_errors(tmp_path):
    path = tmp_path / 'bad.csv'
    path.write_text('dev-850-0-0,True\ndev-850-1-0,maybe\n')
    with pytest.raises(
        nlvr2.PredictionsError, match=re.escape(f'{path}:2: ') + "not an NLVR2 label.*'maybe'"
    ):
        nlvr2.read_predictions(path)
    path.write_text('dev-850-0-0,True\ndev-850-1-0\n')
    with pytest.raises(nlvr2.PredictionsError, match=re.escape(f'{path}:2: expected')):
        nlvr2.read_predictions(path)
    path.write_text('dev-850-0-0,True\ndev-850-1-0,False\ndev-850-0-0,False\n')
    with pytest.raises(
        nlvr2.PredictionsError,
        match=re.escape(f"{path}:3: duplicate identifier 'dev-850-0-0' (first on line 1)"),
    ):
        nlvr2.read_predictions(path)


# ------------------------------------------------------------------------------------------------
# GQA


def _question(answer, structural=None):
    q = {'imageId': 'n1', 'question': '?', 'answer': answer}
    if structural is not None:
        q['types'] = {'structural': structural, 'semantic': 'attr', 'detailed': 'x'}
    return q


GQA_QUESTIONS = {
    'q1': _question('red', 'query'),
    'q2': _question('table', 'query'),
    'q3': _question('yes', 'verify'),
    'q4': _question('no', 'logical'),
    'q5': _question('left', 'query'),
}
GQA_PREDICTIONS = {
    'q1': ' Red ',  # right after strip + lower
    'q2': 'chair',  # wrong
    'q3': 'yes',  # right
    'q4': 'yes',  # wrong
    'q5': 'left',  # right
}


def test_gqa_accuracy_and_per_structural_type_by_hand():
    result = gqa.score(GQA_QUESTIONS, GQA_PREDICTIONS)
    # 3 of 5 right = 60; query q1, q2, q5 -> 2/3; verify q3 -> 1/1; logical q4 -> 0/1.
    assert result['accuracy'] == 60.0
    assert list(result['per_structural_type']) == ['logical', 'query', 'verify']
    assert result['per_structural_type']['logical'] == 0.0
    assert result['per_structural_type']['query'] == pytest.approx(200 / 3, abs=1e-12)
    assert result['per_structural_type']['verify'] == 100.0


def test_gqa_without_types_has_no_breakdown():
    questions = {qid: _question(q['answer']) for qid, q in GQA_QUESTIONS.items()}
    assert gqa.score(questions, GQA_PREDICTIONS) == {'accuracy': 60.0}
    questions['q1'] = GQA_QUESTIONS['q1']  # only some questions typed
    with pytest.raises(ValueError, match='4 of 5 questions lack types.structural'):
        gqa.score(questions, GQA_PREDICTIONS)


def test_gqa_missing_and_unknown_questions():
    predictions = {qid: 'yes' for qid in GQA_QUESTIONS if qid != 'q3'}
    with pytest.raises(
        gqa.PredictionsError, match=r"no prediction for questions 'q3' \(1 in all\)"
    ):
        gqa.score(GQA_QUESTIONS, predictions)
    predictions = dict(GQA_PREDICTIONS, **{f'x{i}': 'no' for i in range(7)})
    # Only the first five (sorted) are listed, then the count.
    with pytest.raises(
        ValueError, match=r"unknown questions 'x0', 'x1', 'x2', 'x3', 'x4', \.\.\. \(7 in all\)"
    ):
        gqa.score(GQA_QUESTIONS, predictions)


def test_gqa_submission_round_trip(tmp_path):
    path = tmp_path / 'submission.json'
    gqa.write_submission(path, {'q2': 'chair', 'q10': 'no', 'q1': 'red'})
    # Sorted by questionId as strings: 'q1' < 'q10' < 'q2'.
    assert json.loads(path.read_text()) == [
        {'questionId': 'q1', 'prediction': 'red'},
        {'questionId': 'q10', 'prediction': 'no'},
        {'questionId': 'q2', 'prediction': 'chair'},
    ]
    assert gqa.load_submission(path) == {'q2': 'chair', 'q10': 'no', 'q1': 'red'}


def test_gqa_load_submission_errors(tmp_path):
    path = tmp_path / 'sub.json'
    path.write_text(json.dumps([{'questionId': 'q1', 'prediction': 'a'}] * 2))
    with pytest.raises(
        gqa.PredictionsError, match=re.escape(f"{path}: record 1: duplicate questionId 'q1'")
    ):
        gqa.load_submission(path)
    path.write_text(json.dumps({'q1': 'a'}))
    with pytest.raises(
        gqa.PredictionsError, match=re.escape(f'{path}: a GQA submission is a JSON list')
    ):
        gqa.load_submission(path)
    path.write_text(json.dumps([{'questionId': 'q1'}]))
    with pytest.raises(
        gqa.PredictionsError, match=re.escape(f'{path}: record 0 must be an object')
    ):
        gqa.load_submission(path)
