"""Trains a SentencePiece tokenizer on a caption corpus: plain text files or a built dataset.

    python -m semvlp_jax.data.train_tokenizer --output PATH.model --vocab_size N \\
        [--model_type unigram|bpe|word] \\
        (--text FILE [FILE ...] | --dataset NAME --data_dir DIR [--splits train,val])

--text reads files of one sentence a line (blank lines skipped). --dataset reads the text field
of every record (`semvlp_jax.data.records`) of a dataset built by `semvlp_jax.data.builders`
(the captions of
coco_captions / caption_records / karpathy, the questions of vqa_v2 / gqa, the sentences of
nlvr2), by default of all its splits. The model has the special ids of every model trained here
(pad=0, unk=1, [CLS]=2, [SEP]=3, [MASK]=4; see `tokenizers`); load it with
`load_tokenizer('sentencepiece', PATH)`.

The default model type here is unigram, unlike `SentencePieceTokenizer.train`'s word: real
captions keep bringing words the corpus never had (names, typos, numbers), which a subword model
spells out of pieces while a word model turns each into [UNK]. Word suits the synthetic data,
whose closed grammar the corpus covers entirely and where one id a word masks whole words.

Exits 2, naming the file, when an input is missing, the corpus is empty or the arguments are bad.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from semvlp_jax.data import records
from semvlp_jax.data.tokenizers import SentencePieceTokenizer

# The record field holding the text, by dataset name (`records.RECORD_TYPES`).
TEXT_FIELDS = {
    'coco_captions': 'caption',
    'caption_records': 'caption',
    'karpathy': 'caption',
    'vqa_v2': 'question',
    'gqa': 'question',
    'nlvr2': 'sentence',
}
MODEL_TYPES = ('unigram', 'bpe', 'word')
EXAMPLES_SHOWN = 2


class CorpusError(Exception):
    """An input the command cannot train on; the message names it."""


def text_file_sentences(paths: Sequence[Path]) -> Iterator[str]:
    """The non-blank lines of ``paths``, stripped, read one line at a time."""
    for path in paths:
        with open(path, encoding='utf-8') as lines:
            try:
                for line in lines:
                    if line := line.strip():
                        yield line
            except UnicodeDecodeError as error:
                raise CorpusError(f'{path} is not UTF-8 text: {error}') from error


def dataset_sentences(name: str, data_dir: Path, splits: Sequence[str] | None) -> Iterator[str]:
    """The text field of every record of ``splits`` (default: all) of dataset ``name``."""
    if name not in TEXT_FIELDS:
        raise CorpusError(f'unknown dataset {name!r}; expected one of {", ".join(TEXT_FIELDS)}')
    if not data_dir.is_dir():
        raise CorpusError(f'data directory not found: {data_dir}')
    # Imported here: only this route needs the dataset builders (and their dependencies).
    try:
        from semvlp_jax.data import builders
    except ImportError as error:
        raise CorpusError(f'--dataset needs semvlp_jax.data.builders: {error}') from error

    try:
        builder = builders.open_dataset(name, data_dir)
    except (FileNotFoundError, ValueError) as error:
        raise CorpusError(f'cannot open dataset {name} in {data_dir}: {error}') from error
    available = list(builder.info.splits)
    unknown = [split for split in splits or () if split not in available]
    if unknown:
        raise CorpusError(
            f'dataset {name} in {data_dir} has no split {", ".join(unknown)}; '
            f'it has {", ".join(available)}'
        )
    return _records_text(name, builder, splits or available)


def _records_text(name: str, builder, splits: Sequence[str]) -> Iterator[str]:
    record_type, field = records.RECORD_TYPES[name], TEXT_FIELDS[name]
    for split in splits:
        source = builder.as_data_source(split)
        for index in range(len(source)):
            stored = source[index]
            try:
                record = records.from_stored(record_type, stored)
            except KeyError as error:  # built with another schema
                raise CorpusError(
                    f'record {index} of split {split} has no field {error}: {sorted(stored)}; '
                    f'rebuild the dataset'
                ) from None
            if text := getattr(record, field).strip():
                yield text


class _Corpus:
    """Passes sentences through to training, keeping the first few (to show them encoded) and
    the error the source raised: sentencepiece turns an error in the iterator into a bare
    RuntimeError, which would lose the message naming the file."""

    def __init__(self, sentences: Iterable[str], keep: int):
        self._sentences = iter(sentences)
        self._keep = keep
        self.kept: list[str] = []
        self.error: Exception | None = None

    def __iter__(self) -> Iterator[str]:
        try:
            for sentence in self._sentences:
                if len(self.kept) < self._keep:
                    self.kept.append(sentence)
                yield sentence
        except Exception as error:
            self.error = error
            raise


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m semvlp_jax.data.train_tokenizer',
        description='Trains a SentencePiece tokenizer on captions.',
    )
    parser.add_argument('--output', required=True, type=Path, help='the model file to write')
    parser.add_argument(
        '--vocab_size',
        required=True,
        type=int,
        help='vocabulary size (an upper bound: a small corpus gives fewer pieces)',
    )
    parser.add_argument(
        '--model_type',
        default='unigram',
        choices=MODEL_TYPES,
        help='subword model (default unigram: unseen words become pieces rather than [UNK])',
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        '--text', nargs='+', type=Path, metavar='FILE', help='text files, one sentence a line'
    )
    source.add_argument('--dataset', choices=sorted(TEXT_FIELDS), help='a built dataset')
    parser.add_argument('--data_dir', type=Path, help='where --dataset was built')
    parser.add_argument(
        '--splits', help='comma-separated splits of --dataset (default: all of them)'
    )
    return parser


def _open_corpus(args: argparse.Namespace) -> tuple[str, Iterator[str]]:
    """(a description of the corpus for messages, its sentences); CorpusError if missing."""
    if args.text:
        missing = [str(path) for path in args.text if not path.is_file()]
        if missing:
            raise CorpusError(f'text file not found: {", ".join(missing)}')
        return ', '.join(str(path) for path in args.text), text_file_sentences(args.text)
    splits = [split.strip() for split in (args.splits or '').split(',') if split.strip()] or None
    corpus = f'dataset {args.dataset} in {args.data_dir}'
    return corpus, dataset_sentences(args.dataset, args.data_dir, splits)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed the usage and the error
        return int(exit_.code or 0)
    if args.vocab_size <= 0:
        parser.print_usage(sys.stderr)
        print(f'error: --vocab_size must be positive, got {args.vocab_size}', file=sys.stderr)
        return 2
    if args.dataset is None and (args.data_dir or args.splits):
        parser.print_usage(sys.stderr)
        print('error: --data_dir and --splits go with --dataset, not --text', file=sys.stderr)
        return 2
    if args.dataset is not None and args.data_dir is None:
        parser.print_usage(sys.stderr)
        print('error: --dataset needs --data_dir', file=sys.stderr)
        return 2

    try:
        corpus, sentences = _open_corpus(args)
        # Checked here rather than left to train, to name the corpus in the message.
        first = next(sentences, None)
        if first is None:
            raise CorpusError(f'no sentences in {corpus}')
    except CorpusError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    shown = _Corpus(itertools.chain([first], sentences), EXAMPLES_SHOWN)
    try:
        tokenizer = SentencePieceTokenizer.train(
            shown, args.output, args.vocab_size, model_type=args.model_type
        )
    except RuntimeError as error:
        if isinstance(shown.error, CorpusError):  # reading the corpus failed part-way
            print(f'error: {shown.error}', file=sys.stderr)
            return 2
        if shown.error is not None:
            raise shown.error from error
        # sentencepiece rejected the settings (e.g. a vocabulary too small for the characters).
        print(f'error: training on {corpus} failed: {error}', file=sys.stderr)
        return 2

    print(
        f'wrote {args.output}: {args.model_type} model, vocabulary of {tokenizer.vocab_size} '
        f'pieces (asked for {args.vocab_size})'
    )
    for sentence in shown.kept:
        print(f'  {sentence!r} -> {tokenizer.encode_pieces(sentence)} {tokenizer.encode(sentence)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
