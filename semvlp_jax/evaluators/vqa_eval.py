"""VQA v2 accuracy, reproducing the official GT-Vision-Lab evaluator (``vqaEval.py``) exactly.

Two rule sets:

- ``'current'``: the official code since 2021 (commit a013f00). Answers are normalised only for
  questions whose ten ground-truth (GT) answers disagree; unanimous questions compare raw strings.
- ``'legacy'``: the pre-2021 copy still used by ALBEF / SIMLA / LAVIS. The prediction is always
  normalised; GT answers only get punctuation processing, and only when they disagree.

Command line::

    python -m semvlp_jax.evaluators.vqa_eval --questions Q.json --annotations A.json \\
        --results R.json [--json] [--rules current|legacy]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from etils import epath

from semvlp_jax.evaluators.errors import PredictionsError, is_json_int

RULES = ('current', 'legacy')
NUM_GT_ANSWERS = 10

# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------

# The 21 symbols the official code treats as punctuation. Apostrophe, colon and period are not
# among them: apostrophes feed the contraction map and periods have their own rule.
PUNCTUATION = (
    ';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-',
    '>', '<', '@', '`', ',', '?', '!',
)  # fmt: skip
COMMA_BETWEEN_DIGITS = re.compile(r'(\d)(,)(\d)')
# '(?!<=\d)' is a typo for a look-behind in the official pattern: as written it is a look-ahead
# that can never fail in front of '.', so the pattern means "a period not followed by a digit".
PERIOD = re.compile(r'(?!<=\d)(\.)(?!\d)')
# The official code calls periodStrip.sub('', text, re.UNICODE): the flag lands in the positional
# `count` argument, so at most re.UNICODE == 32 periods are removed per answer.
PERIOD_MAX_REMOVED = 32

NUMBER_WORDS = {
    'none': '0',
    'zero': '0',
    'one': '1',
    'two': '2',
    'three': '3',
    'four': '4',
    'five': '5',
    'six': '6',
    'seven': '7',
    'eight': '8',
    'nine': '9',
    'ten': '10',
}
ARTICLES = frozenset({'a', 'an', 'the'})

# Contracted forms; the map from apostrophe-less spellings to these is derived by
# `_build_contractions`.
CONTRACTED = (
    "ain't", "aren't", "can't", "could've", "couldn't", "couldn't've", "didn't", "doesn't",
    "don't", "hadn't", "hadn't've", "hasn't", "haven't", "he'd", "he'd've", "he's", "how'd",
    "how'll", "how's", "I'd've", "I'm", "I've", "isn't", "it'd", "it'd've", "it'll", "ma'am",
    "mightn't", "mightn't've", "might've", "mustn't", "must've", "needn't", "not've", "o'clock",
    "oughtn't", "'ow's'at", "shan't", "she'd've", "should've", "shouldn't", "shouldn't've",
    "somebody'd've", "somebody'll", "somebody's", "someone'd", "someone'd've", "someone'll",
    "someone's", "something'd", "something'd've", "something'll", "that's", "there'd",
    "there'd've", "there're", "there's", "they'd", "they'd've", "they'll", "they're", "they've",
    "'twas", "wasn't", "we'd've", "we've", "weren't", "what'll", "what're", "what's", "what've",
    "when's", "where'd", "where's", "where've", "who'd", "who'd've", "who'll", "who's", "who've",
    "why'll", "why're", "why's", "won't", "would've", "wouldn't", "wouldn't've", "y'all",
    "y'all'll", "y'all'd've", "you'd", "you'd've", "you'll", "you're", "you've",
)  # fmt: skip
# Quirks of the official table, kept so scores match: these keys keep their apostrophe and map to
# themselves (so 'lets' and 'shes' are never expanded) ...
CONTRACTIONS_IDENTITY = ("let's", "she's")
# ... and this entry is inverted (it strips the apostrophe instead of restoring it).
CONTRACTIONS_INVERTED = {"somebody'd": 'somebodyd'}


def _build_contractions() -> dict[str, str]:
    """The official contraction map: apostrophe-less spelling -> contracted form."""
    table = {}
    for form in CONTRACTED:
        positions = [i for i, char in enumerate(form) if char == "'"]
        # One key per apostrophe with just that one removed; for a single apostrophe this is the
        # fully stripped spelling, for several there is deliberately no fully stripped key.
        for i in positions:
            table[form[:i] + form[i + 1 :]] = form
    for form in CONTRACTIONS_IDENTITY:
        table[form] = form
    table.update(CONTRACTIONS_INVERTED)
    return table


CONTRACTIONS = _build_contractions()


def strip_whitespace(text: str) -> str:
    """Tabs and newlines to spaces, then strip."""
    return text.replace('\n', ' ').replace('\t', ' ').strip()


def process_punctuation(text: str) -> str:
    """The official punctuation step followed by the period step."""
    out = text
    # The official code tests the digit-comma-digit pattern inside the loop for every symbol, so
    # one '1,000' anywhere makes *all* punctuation be deleted rather than spaced out.
    delete_all = COMMA_BETWEEN_DIGITS.search(text) is not None
    for p in PUNCTUATION:
        # The test looks at the original text, not at `out`.
        if delete_all or p + ' ' in text or ' ' + p in text:
            out = out.replace(p, '')
        else:
            out = out.replace(p, ' ')
    return PERIOD.sub('', out, count=PERIOD_MAX_REMOVED)


def process_digit_article(text: str) -> str:
    """Lower-case; number words to digits; drop articles; restore contractions."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in ARTICLES]
    return ' '.join(CONTRACTIONS.get(word, word) for word in words)


def normalize_answer(text: str) -> str:
    """The full official normalisation: whitespace, punctuation, periods, digits/articles."""
    return process_digit_article(process_punctuation(strip_whitespace(text)))


# ---------------------------------------------------------------------------------------------
# Accuracy
# ---------------------------------------------------------------------------------------------


def _check_rules(rules: str) -> None:
    if rules not in RULES:
        raise ValueError(f'rules must be one of {RULES}, got {rules!r}')


def _processed(prediction: str, gt_answers: Sequence[str], rules: str) -> tuple[str, list[str]]:
    """The prediction and GT answers as the chosen rules compare them."""
    if rules == 'current':
        prediction = strip_whitespace(prediction)
        gts = [strip_whitespace(answer) for answer in gt_answers]
        if len(set(gts)) > 1:
            prediction = normalize_answer(prediction)
            gts = [process_digit_article(process_punctuation(answer)) for answer in gts]
        return prediction, gts
    # Legacy: the GT answers get neither the whitespace step nor the digit/article step.
    gts = list(gt_answers)
    if len(set(gts)) > 1:
        gts = [process_punctuation(answer) for answer in gts]
    return normalize_answer(prediction), gts


def leave_one_out_accuracy(prediction: str, gt_answers: Sequence[str]) -> float:
    """Mean over annotators of min(1, matches among the other annotators / 3); no processing."""
    if not gt_answers:
        raise ValueError('no ground-truth answers')
    matches = [answer == prediction for answer in gt_answers]
    total = sum(matches)
    # Leaving annotator i out removes exactly its own match, if any.
    per_annotator = [min(1.0, (total - own) / 3) for own in matches]
    return sum(per_annotator) / len(per_annotator)


def question_accuracy(prediction: str, gt_answers: Sequence[str], rules: str = 'current') -> float:
    """Accuracy in [0, 1] of one prediction against a question's GT answers (unrounded)."""
    _check_rules(rules)
    return leave_one_out_accuracy(*_processed(prediction, gt_answers, rules))


@dataclasses.dataclass
class VQAScores:
    """Percent rounded to 2 places as in the official accuracy dict; per_question in [0, 1]."""

    overall: float
    per_answer_type: dict[str, float]
    per_question_type: dict[str, float]
    per_question: dict[int, float]

    def to_json(self) -> dict:
        """The official accuracy dict (without per-question values)."""
        return {
            'overall': self.overall,
            'perAnswerType': dict(self.per_answer_type),
            'perQuestionType': dict(self.per_question_type),
        }


def _percent(values: Sequence[float]) -> float:
    # Same operation order as the official setAccuracy, so rounding ties fall the same way.
    return round(100 * float(sum(values)) / len(values), 2)


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def _name(what: str, source: str | None) -> str:
    return f'{what} file {source}' if source else what


def _some(items: Sequence[Any], limit: int = 5) -> str:
    """The first few distinct items and, for several, how many in all."""
    unique = list({repr(item): item for item in items}.values())  # repr: ids may be unhashable
    shown = ', '.join(repr(item) if isinstance(item, str) else str(item) for item in unique[:limit])
    if len(unique) == 1:
        return shown
    more = ', ...' if len(unique) > limit else ''
    return f'{shown}{more} ({len(unique)} in all)'


def _annotation_table(
    questions: Any, annotations: Any, questions_source: str | None, annotations_source: str | None
) -> dict[int, dict]:
    """Annotations by question id, in file order, after checking both files."""
    q_name = _name('questions', questions_source)
    a_name = _name('annotations', annotations_source)
    if not isinstance(questions, dict) or not isinstance(questions.get('questions'), list):
        raise ValueError(f'{q_name}: expected an object with a "questions" list')
    if not isinstance(annotations, dict) or not isinstance(annotations.get('annotations'), list):
        raise ValueError(f'{a_name}: expected an object with an "annotations" list')

    table: dict[int, dict] = {}
    for index, ann in enumerate(annotations['annotations']):
        if not isinstance(ann, dict) or not is_json_int(ann.get('question_id')):
            raise ValueError(f'{a_name}: annotation #{index} has no integer "question_id"')
        qid = ann['question_id']
        if qid in table:
            raise ValueError(f'{a_name}: question id {qid} is annotated twice')
        answers = ann.get('answers')
        if (
            not isinstance(answers, list)
            or len(answers) != NUM_GT_ANSWERS
            or not all(isinstance(a, dict) and isinstance(a.get('answer'), str) for a in answers)
        ):
            raise ValueError(
                f'{a_name}: question id {qid} needs {NUM_GT_ANSWERS} answers '
                '(objects with a string "answer")'
            )
        for key in ('answer_type', 'question_type'):
            if not isinstance(ann.get(key), str):
                raise ValueError(f'{a_name}: question id {qid} has no string "{key}"')
        table[qid] = ann

    question_ids = []
    for index, question in enumerate(questions['questions']):
        if not isinstance(question, dict) or not is_json_int(question.get('question_id')):
            raise ValueError(f'{q_name}: question #{index} has no integer "question_id"')
        question_ids.append(question['question_id'])
    only_questions = sorted(set(question_ids) - table.keys())
    only_annotations = sorted(table.keys() - set(question_ids))
    if only_questions or only_annotations:
        parts = []
        if only_questions:
            parts.append(f'question ids not annotated: {_some(only_questions)}')
        if only_annotations:
            parts.append(
                f'annotated question ids not among the questions: {_some(only_annotations)}'
            )
        raise ValueError(
            f'{q_name} and {a_name} do not cover the same questions; ' + '; '.join(parts)
        )
    return table


def _results_table(
    results: Any, known_ids: Mapping[int, Any], source: str | None
) -> dict[int, str]:
    """Predicted answers by question id, after checking them against the annotated ids."""
    name = _name('results', source)
    if not isinstance(results, list):
        raise PredictionsError(f'{name}: expected a list of {{"question_id", "answer"}} records')

    malformed, bad_ids, bad_answers, repeated, unknown = [], [], [], [], []
    answers: dict[int, str] = {}
    for index, record in enumerate(results):
        if not isinstance(record, dict) or 'question_id' not in record or 'answer' not in record:
            malformed.append(index)
            continue
        qid = record['question_id']
        if not is_json_int(qid):
            bad_ids.append(qid)
            continue
        if not isinstance(record['answer'], str):
            bad_answers.append(qid)
        if qid in answers:
            repeated.append(qid)
        elif qid not in known_ids:
            unknown.append(qid)
        answers[qid] = record['answer']

    if malformed:
        raise PredictionsError(
            f'{name}: records that are not objects with "question_id" and "answer", '
            f'at positions: {_some(malformed)}'
        )
    if bad_ids:
        raise PredictionsError(f'{name}: question ids that are not integers: {_some(bad_ids)}')
    if bad_answers:
        raise PredictionsError(
            f'{name}: answers that are not strings, question ids: {_some(bad_answers)}'
        )
    if repeated:
        raise PredictionsError(f'{name}: question ids answered more than once: {_some(repeated)}')
    if unknown:
        raise PredictionsError(
            f'{name}: unknown question ids (not in the annotations): {_some(unknown)}'
        )
    missing = [qid for qid in known_ids if qid not in answers]
    if missing:
        raise PredictionsError(
            f'{name}: annotated questions missing from the results, question ids: {_some(missing)}'
        )
    return answers


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


def score(
    questions: dict,
    annotations: dict,
    results: list,
    *,
    rules: str = 'current',
    questions_source: str | None = None,
    annotations_source: str | None = None,
    results_source: str | None = None,
) -> VQAScores:
    """Scores loaded results JSON; the `*_source` names (file paths) only label error messages."""
    _check_rules(rules)
    table = _annotation_table(questions, annotations, questions_source, annotations_source)
    predictions = _results_table(results, table, results_source)

    per_question: dict[int, float] = {}
    by_answer_type: dict[str, list[float]] = {}
    by_question_type: dict[str, list[float]] = {}
    # Annotation-file order, as the official code iterates, so float sums agree bit for bit.
    for qid, ann in table.items():
        gt_answers = [answer['answer'] for answer in ann['answers']]
        accuracy = question_accuracy(predictions[qid], gt_answers, rules)
        per_question[qid] = accuracy
        by_answer_type.setdefault(ann['answer_type'], []).append(accuracy)
        by_question_type.setdefault(ann['question_type'], []).append(accuracy)

    if not per_question:
        raise ValueError(f'{_name("annotations", annotations_source)}: no questions to score')
    return VQAScores(
        overall=_percent(list(per_question.values())),
        per_answer_type={key: _percent(values) for key, values in by_answer_type.items()},
        per_question_type={key: _percent(values) for key, values in by_question_type.items()},
        per_question=per_question,
    )


def load_json(path: str | os.PathLike, what: str) -> Any:
    """Parsed JSON from `path`; a ValueError naming the `what` file if unreadable or invalid."""
    try:
        with epath.Path(path).open(encoding='utf-8') as f:
            return json.load(f)
    except OSError as e:
        raise ValueError(f'cannot read {what} file {path}: {e.strerror or e}') from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f'{what} file {path} is not valid JSON: {e}') from e


def write_results(path: str | os.PathLike, predictions: Mapping[int, str]) -> None:
    """Writes predictions in the official results format, sorted by question id."""
    records = [{'question_id': int(qid), 'answer': predictions[qid]} for qid in sorted(predictions)]
    path = epath.Path(path)
    tmp = path.with_name(f'{path.name}.tmp')
    # Write then rename, so an interrupted run never leaves a truncated results file behind.
    with tmp.open('w', encoding='utf-8') as f:
        json.dump(records, f)
    tmp.replace(path)


def format_text(scores: VQAScores) -> str:
    """The printout of the official demo script, answer types first."""
    lines = [f'Overall Accuracy is: {scores.overall:.02f}', '']
    lines.append('Per Answer Type Accuracy is the following:')
    lines += [f'{key} : {value:.02f}' for key, value in scores.per_answer_type.items()]
    lines += ['', 'Per Question Type Accuracy is the following:']
    lines += [f'{key} : {value:.02f}' for key, value in scores.per_question_type.items()]
    return '\n'.join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line; exits with status 2 and a one-line message on bad input."""
    parser = argparse.ArgumentParser(
        prog='python -m semvlp_jax.evaluators.vqa_eval',
        description='VQA v2 accuracy, as computed by the official evaluator.',
    )
    parser.add_argument('--questions', required=True, help='questions JSON (official format)')
    parser.add_argument('--annotations', required=True, help='annotations JSON (official format)')
    parser.add_argument('--results', required=True, help='[{"question_id", "answer"}, ...] JSON')
    parser.add_argument('--json', action='store_true', help='print one JSON object')
    parser.add_argument(
        '--rules',
        choices=RULES,
        default='current',
        help='current: official since 2021; legacy: the pre-2021 copy (ALBEF/SIMLA/LAVIS)',
    )
    args = parser.parse_args(argv)
    try:
        scores = score(
            load_json(args.questions, 'questions'),
            load_json(args.annotations, 'annotations'),
            load_json(args.results, 'results'),
            rules=args.rules,
            questions_source=args.questions,
            annotations_source=args.annotations,
            results_source=args.results,
        )
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(scores.to_json()) if args.json else format_text(scores))


if __name__ == '__main__':
    main()
