"""The local VQA v2 scorer against values worked out by hand from the official rules."""

import json
import pathlib
import subprocess
import sys

import pytest

from semvlp_jax.evaluators import vqa_eval

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    'text, expected',
    [
        # '.' is dropped (not before a digit), 'two' -> '2', lower-cased.
        ('Two Dogs.', '2 dogs'),
        # Both periods go; 'am' is then one token, so it is not an article.
        ('a.m.', 'am'),
        ('A.M.', 'am'),
        # A period before a digit stays.
        ('2.5', '2.5'),
        ('5.', '5'),
        ('.5', '.5'),
        # '3 . 5': the period is followed by a space, so it goes; split/join squeezes the spaces.
        ('3 . 5', '3 5'),
        # A digit-comma-digit anywhere deletes every symbol instead of spacing it out.
        ('yes, 1,000!', 'yes 1000'),
        ('1,000', '1000'),
        ('1,2-3', '123'),
        # ... whereas without it a lone '-' becomes a space.
        ('12-3', '12 3'),
        ('hello-world', 'hello world'),
        # ' -' is present, so '-' is deleted: 'hello  world' -> split/join -> 'hello world'.
        ('hello - world', 'hello world'),
        # The test is per symbol but the deletion hits every occurrence: both '-' go.
        ('well-known - fact', 'wellknown fact'),
        # The space test reads the original text: ';' turning into a space does not put '-' next
        # to one, so both '-' are still spaced out (not 'x yz').
        ('x;-y-z', 'x y z'),
        ('x-;y-z', 'x y z'),
        ('red,blue', 'red blue'),
        # ', ' is present, so both commas are deleted, gluing 'red' and 'blue'.
        ('red,blue, green', 'redblue green'),
        # Colon, '#' and apostrophe are not punctuation; the trailing '?' becomes a space.
        ('what: is #1?', 'what: is #1'),
        # Article dropped, then 'dont' -> "don't".
        ('the dont', "don't"),
        ('An Apple', 'apple'),
        ('a', ''),
        ('none', '0'),
        ('None', '0'),
        ('Ten', '10'),
        ('eleven', 'eleven'),
        ('\tred\n', 'red'),
        ('Red\tCar', 'red car'),
        ("yall'd've", "y'all'd've"),
        # Quirks of the official contraction table.
        ("Let's", "let's"),
        ('lets', 'lets'),
        ('shes', 'shes'),
        ("somebody'd", 'somebodyd'),
        # 'Im' is a key, but only with a capital, which lower-casing has removed.
        ('Im', 'im'),
    ],
)
def test_normalize_answer(text, expected):
    assert vqa_eval.normalize_answer(text) == expected


def test_at_most_32_periods_removed():
    # The official code passes re.UNICODE (32) as `count`: of 40 periods, 8 survive.
    assert vqa_eval.normalize_answer('.' * 40) == '.' * 8
    assert vqa_eval.normalize_answer('.' * 32 + 'x') == 'x'


def test_punctuation_set():
    assert len(vqa_eval.PUNCTUATION) == 21
    for kept in "':.*#&%$~|^":
        assert kept not in vqa_eval.PUNCTUATION


def test_contraction_map():
    table = vqa_eval.CONTRACTIONS
    assert len(table) == 120
    assert table['dont'] == "don't"
    assert table['oclock'] == "o'clock"
    assert table['twas'] == "'twas"
    assert table["yall'd've"] == "y'all'd've"
    assert table["y'alld've"] == "y'all'd've"
    assert table["y'all'dve"] == "y'all'd've"
    assert table["couldnt've"] == "couldn't've"
    assert table["couldn'tve"] == "couldn't've"
    assert table["ow's'at"] == table["'ows'at"] == table["'ow'sat"] == "'ow's'at"
    assert table["let's"] == "let's"
    assert table["she's"] == "she's"
    assert table["somebody'd"] == 'somebodyd'
    assert table["Id've"] == table["I'dve"] == "I'd've"
    # No fully stripped key for a form with several apostrophes; no key for the identity quirks.
    for absent in ('couldntve', 'yalldve', 'owsat', 'lets', 'shes', 'somebodyd'):
        assert absent not in table


# ---------------------------------------------------------------------------------------------
# Per-question accuracy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    'matches, expected',
    [
        (0, 0.0),
        # The one 'yes' left out: 0 others match -> 0; the 9 'no' left out: 1 match -> 1/3.
        # (0 + 9 * 1/3) / 10 = 0.3
        (1, 0.3),
        # 'yes' left out: 1/3 each; 'no' left out: 2/3 each. (2/3 + 16/3) / 10 = 0.6
        (2, 0.6),
        # 'yes' left out: 2/3 each; 'no' left out: min(1, 3/3) = 1. (2 + 7) / 10 = 0.9
        (3, 0.9),
        # Every left-out set still holds at least 3 matches.
        (4, 1.0),
        (10, 1.0),
    ],
)
def test_leave_one_out(matches, expected):
    gt = ['yes'] * matches + ['no'] * (10 - matches)
    for rules in vqa_eval.RULES:
        assert vqa_eval.question_accuracy('yes', gt, rules) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    'prediction, gt, current, legacy',
    [
        # Unanimous: current compares raw strings (case counts); legacy normalises the prediction.
        ('Yes', ['yes'] * 10, 0.0, 1.0),
        # Legacy turns the prediction into '0' but leaves the unanimous GT 'none' alone.
        ('none', ['none'] * 10, 1.0, 0.0),
        # Disagreeing GTs: 'yes.' loses its period under both rules -> 3 matches -> 0.9.
        ('yes', ['yes.'] * 3 + ['no'] * 7, 0.9, 0.9),
        # Current maps every GT to '2' (10 matches); legacy leaves the GT 'two' as it is, so
        # the prediction '2' matches only the two '2's -> 0.6.
        ('two', ['two'] * 8 + ['2'] * 2, 1.0, 0.6),
        # Legacy GTs keep their articles.
        ('cat', ['the cat'] * 3 + ['dog'] * 7, 0.9, 0.0),
        # Legacy GTs keep their case.
        ('yes', ['Yes.'] * 3 + ['no'] * 7, 0.9, 0.0),
        # Legacy GTs get no whitespace step.
        ('yes', [' yes'] * 3 + ['no'] * 7, 0.9, 0.0),
        # Current strips whitespace before the unanimity test: still unanimous, raw compare.
        ('Yes', ['Yes'] * 9 + ['Yes\n'], 1.0, 0.0),
        ('yes', ['Yes'] * 9 + ['Yes\n'], 0.0, 0.0),
        # Not unanimous: current lower-cases the prediction too.
        ('Yes', ['yes'] * 9 + ['no'], 1.0, 1.0),
    ],
)
def test_rules(prediction, gt, current, legacy):
    assert vqa_eval.question_accuracy(prediction, gt) == pytest.approx(current, abs=1e-12)
    assert vqa_eval.question_accuracy(prediction, gt, 'current') == pytest.approx(
        current, abs=1e-12
    )
    assert vqa_eval.question_accuracy(prediction, gt, 'legacy') == pytest.approx(legacy, abs=1e-12)


def test_unknown_rules():
    with pytest.raises(ValueError, match='rules'):
        vqa_eval.question_accuracy('yes', ['yes'] * 10, 'newest')


# ---------------------------------------------------------------------------------------------
# Whole-set scoring
# ---------------------------------------------------------------------------------------------

# (question_id, question_type, answer_type, ten GT answers, prediction, accuracy)
SET = [
    (1, 'is the', 'yes/no', ['yes'] * 10, 'yes', 1.0),
    (2, 'are there', 'yes/no', ['yes'] * 3 + ['no'] * 7, 'Yes', 0.9),
    (3, 'how many', 'number', ['2'] * 2 + ['3'] * 8, 'two', 0.6),
    # Unanimous, so 'Red' is compared raw: 0 under current (1.0 under legacy).
    (4, 'what color', 'other', ['red'] * 10, 'Red', 0.0),
    (5, 'is the', 'yes/no', ['no'] * 10, 'yes', 0.0),
]


def _questions():
    return {
        'info': {},
        'questions': [
            {'image_id': 100 + qid, 'question': f'question {qid}?', 'question_id': qid}
            for qid, *_ in SET
        ],
    }


def _annotations():
    annotations = []
    for qid, question_type, answer_type, gt, _, _ in SET:
        annotations.append(
            {
                'question_id': qid,
                'image_id': 100 + qid,
                'question_type': question_type,
                'answer_type': answer_type,
                'multiple_choice_answer': gt[-1],
                'answers': [
                    {'answer': answer, 'answer_confidence': 'yes', 'answer_id': i + 1}
                    for i, answer in enumerate(gt)
                ],
            }
        )
    return {'info': {}, 'annotations': annotations}


def _results():
    return [{'question_id': qid, 'answer': prediction} for qid, *_, prediction, _ in SET]


def test_score_current():
    scores = vqa_eval.score(_questions(), _annotations(), _results())
    # (1 + 0.9 + 0.6 + 0 + 0) / 5 = 0.5
    assert scores.overall == 50.0
    # yes/no: (1 + 0.9 + 0) / 3 = 0.63333 -> 63.33
    assert scores.per_answer_type == {'yes/no': 63.33, 'number': 60.0, 'other': 0.0}
    # is the: (1 + 0) / 2
    assert scores.per_question_type == {
        'is the': 50.0,
        'are there': 90.0,
        'how many': 60.0,
        'what color': 0.0,
    }
    assert scores.per_question == pytest.approx({qid: acc for qid, *_, acc in SET}, abs=1e-12)
    assert scores.to_json() == {
        'overall': 50.0,
        'perAnswerType': scores.per_answer_type,
        'perQuestionType': scores.per_question_type,
    }


def test_score_legacy():
    scores = vqa_eval.score(_questions(), _annotations(), _results(), rules='legacy')
    # Only question 4 changes ('Red' -> 'red' matches all ten): (1 + 0.9 + 0.6 + 1 + 0) / 5
    assert scores.overall == 70.0
    assert scores.per_answer_type == {'yes/no': 63.33, 'number': 60.0, 'other': 100.0}
    assert scores.per_question_type['what color'] == 100.0


def test_score_is_order_independent_of_results():
    forward = vqa_eval.score(_questions(), _annotations(), _results())
    backward = vqa_eval.score(_questions(), _annotations(), _results()[::-1])
    assert forward == backward


def _raises(results, match, **kwargs):
    with pytest.raises(vqa_eval.PredictionsError) as info:
        vqa_eval.score(_questions(), _annotations(), results, results_source='r.json', **kwargs)
    assert str(info.value) == match


def test_results_errors():
    results = _results()
    _raises(
        {'1': 'yes'},
        'results file r.json: expected a list of {"question_id", "answer"} records',
    )
    _raises(
        results + [{'question_id': 6}, 'yes'],
        'results file r.json: records that are not objects with "question_id" and "answer", '
        'at positions: 5, 6 (2 in all)',
    )
    _raises(
        results[:4] + [{'question_id': '5', 'answer': 'yes'}],
        "results file r.json: question ids that are not integers: '5'",
    )
    _raises(
        results[:4] + [{'question_id': True, 'answer': 'yes'}],
        'results file r.json: question ids that are not integers: True',
    )
    _raises(
        results[:4] + [{'question_id': 5, 'answer': 5}],
        'results file r.json: answers that are not strings, question ids: 5',
    )
    _raises(
        results + [results[1], results[1], results[2]],
        'results file r.json: question ids answered more than once: 2, 3 (2 in all)',
    )
    _raises(
        results + [{'question_id': 99, 'answer': 'yes'}],
        'results file r.json: unknown question ids (not in the annotations): 99',
    )
    _raises(
        results[:2],
        'results file r.json: annotated questions missing from the results, '
        'question ids: 3, 4, 5 (3 in all)',
    )
    # Without a source the message still says which input is at fault.
    with pytest.raises(vqa_eval.PredictionsError) as info:
        vqa_eval.score(_questions(), _annotations(), [])
    assert str(info.value) == (
        'results: annotated questions missing from the results, '
        'question ids: 1, 2, 3, 4, 5 (5 in all)'
    )


def test_long_id_lists_are_cut():
    assert vqa_eval._some(list(range(1, 8))) == '1, 2, 3, 4, 5, ... (7 in all)'


def test_annotation_errors():
    questions, annotations = _questions(), _annotations()
    del questions['questions'][0]
    with pytest.raises(ValueError) as info:
        vqa_eval.score(
            questions,
            annotations,
            _results(),
            questions_source='q.json',
            annotations_source='a.json',
        )
    assert str(info.value) == (
        'questions file q.json and annotations file a.json do not cover the same questions; '
        'annotated question ids not among the questions: 1'
    )

    questions, annotations = _questions(), _annotations()
    annotations['annotations'][2]['answers'].pop()
    with pytest.raises(ValueError, match=r'^annotations file a\.json: question id 3 needs 10 '):
        vqa_eval.score(questions, annotations, _results(), annotations_source='a.json')

    questions, annotations = _questions(), _annotations()
    del annotations['annotations'][1]['answer_type']
    with pytest.raises(
        ValueError, match=r'^annotations: question id 2 has no string "answer_type"'
    ):
        vqa_eval.score(questions, annotations, _results())

    questions, annotations = _questions(), _annotations()
    del annotations['annotations'][1]['question_type']
    with pytest.raises(ValueError, match='question id 2 has no string "question_type"'):
        vqa_eval.score(questions, annotations, _results())


# ---------------------------------------------------------------------------------------------
# Files and command line
# ---------------------------------------------------------------------------------------------


def _write_set(tmp_path, results):
    paths = {
        'questions': tmp_path / 'questions.json',
        'annotations': tmp_path / 'annotations.json',
        'results': tmp_path / 'results.json',
    }
    paths['questions'].write_text(json.dumps(_questions()))
    paths['annotations'].write_text(json.dumps(_annotations()))
    paths['results'].write_text(json.dumps(results))
    argv = []
    for flag, path in paths.items():
        argv += [f'--{flag}', str(path)]
    return argv, paths


def _run_cli(argv):
    return subprocess.run(
        [sys.executable, '-m', 'semvlp_jax.evaluators.vqa_eval', *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_json_round_trip(tmp_path):
    argv, _ = _write_set(tmp_path, _results())
    for rules in vqa_eval.RULES:
        proc = _run_cli([*argv, '--json', '--rules', rules])
        assert proc.returncode == 0, proc.stderr
        expected = vqa_eval.score(_questions(), _annotations(), _results(), rules=rules)
        assert json.loads(proc.stdout) == expected.to_json()
    assert json.loads(proc.stdout)['overall'] == 70.0  # legacy ran last


def test_cli_text(tmp_path):
    argv, _ = _write_set(tmp_path, _results())
    proc = _run_cli(argv)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        'Overall Accuracy is: 50.00\n'
        '\n'
        'Per Answer Type Accuracy is the following:\n'
        'yes/no : 63.33\n'
        'number : 60.00\n'
        'other : 0.00\n'
        '\n'
        'Per Question Type Accuracy is the following:\n'
        'is the : 50.00\n'
        'are there : 90.00\n'
        'how many : 60.00\n'
        'what color : 0.00\n'
    )


def test_cli_error_exits_2_without_traceback(tmp_path):
    argv, paths = _write_set(tmp_path, _results()[1:])
    proc = _run_cli(argv)
    assert proc.returncode == 2
    assert proc.stdout == ''
    assert 'Traceback' not in proc.stderr
    assert proc.stderr == (
        f'error: results file {paths["results"]}: annotated questions missing from the results, '
        'question ids: 1\n'
    )


@pytest.mark.parametrize(
    'results, message',
    [
        (_results()[:-1], 'annotated questions missing from the results, question ids: 5'),
        (_results() + _results()[:1], 'question ids answered more than once: 1'),
        (
            _results() + [{'question_id': 42, 'answer': 'no'}],
            'unknown question ids (not in the annotations): 42',
        ),
        (
            _results()[:3] + [{'question_id': 4, 'answer': ['red']}] + _results()[4:],
            'answers that are not strings, question ids: 4',
        ),
    ],
)
def test_main_errors(tmp_path, capsys, results, message):
    argv, paths = _write_set(tmp_path, results)
    with pytest.raises(SystemExit) as info:
        vqa_eval.main(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err == f'error: results file {paths["results"]}: {message}\n'


def test_main_file_errors(tmp_path, capsys):
    argv, paths = _write_set(tmp_path, _results())
    paths['results'].write_text('[{"question_id": 1,')
    with pytest.raises(SystemExit) as info:
        vqa_eval.main(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith(
        f'error: results file {paths["results"]} is not valid JSON: '
    )

    paths['results'].unlink()
    with pytest.raises(SystemExit) as info:
        vqa_eval.main(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith(f'error: cannot read results file {paths["results"]}')


def test_write_results(tmp_path):
    path = tmp_path / 'results.json'
    vqa_eval.write_results(path, {3: 'two', 1: 'yes', 2: 'no'})
    assert vqa_eval.load_json(path, 'results') == [
        {'question_id': 1, 'answer': 'yes'},
        {'question_id': 2, 'answer': 'no'},
        {'question_id': 3, 'answer': 'two'},
    ]
    assert [p.name for p in tmp_path.iterdir()] == ['results.json']


def test_no_jax_import():
    proc = subprocess.run(
        [
            sys.executable,
            '-c',
            'import sys, semvlp_jax.evaluators.vqa_eval; print("jax" in sys.modules)',
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.strip() == 'False', proc.stderr
