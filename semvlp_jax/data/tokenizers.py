"""Text tokenizers behind one interface, and a SentencePiece implementation.

Every tokenizer uses the same special ids (pad=0, unk=1, [CLS]=2, [SEP]=3, [MASK]=4) so that data
pipelines and heads do not depend on which tokenizer a config picks.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import sentencepiece as spm

PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 1, 2, 3, 4
CONTROL_SYMBOLS = ('[CLS]', '[SEP]', '[MASK]')  # take ids 2, 3, 4 after pad and unk

# Punctuation becomes a word of its own (as BERT's basic tokenizer does), so that "circle?" is
# "circle" + "?" rather than a separate word.
_PUNCTUATION = re.compile(r'([^\w\s])')
# Punctuation that decode glues back onto the preceding word.
_CLOSING_PUNCTUATION = re.compile(r' ([?.!,;:])')


@runtime_checkable
class Tokenizer(Protocol):
    """The one tokenizer interface used by the data pipeline."""

    vocab_size: int
    pad_id: int
    unk_id: int
    cls_id: int
    sep_id: int
    mask_id: int

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without special tokens added."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, skipping special ids."""
        ...

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids that are not words: pad, unk, [CLS], [SEP], [MASK]."""
        ...


def _split_punctuation(text: str) -> str:
    return ' '.join(_PUNCTUATION.sub(r' \1 ', text).split())


class SentencePieceTokenizer:
    """A trained SentencePiece model; implements ``Tokenizer``.

    Text is lower-cased (NFKC + case folding) by the model's normaliser.
    """

    pad_id = PAD_ID
    unk_id = UNK_ID
    cls_id = CLS_ID
    sep_id = SEP_ID
    mask_id = MASK_ID

    def __init__(self, model_path: str | os.PathLike):
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f'SentencePiece model file not found: {path}')
        self._processor = spm.SentencePieceProcessor()
        try:
            self._processor.LoadFromSerializedProto(path.read_bytes())
        except (RuntimeError, OSError) as error:
            raise ValueError(f'{path} is not a valid SentencePiece model: {error}') from error
        expected = {
            '<pad>': PAD_ID,
            '<unk>': UNK_ID,
            **{symbol: CONTROL_SYMBOLS.index(symbol) + CLS_ID for symbol in CONTROL_SYMBOLS},
        }
        found = {piece: self._processor.piece_to_id(piece) for piece in expected}
        if found != expected:
            raise ValueError(
                f'{path} has special ids {found}, expected {expected}; '
                'train it with SentencePieceTokenizer.train'
            )
        self.model_path = path
        self.vocab_size: int = self._processor.get_piece_size()

    @classmethod
    def train(
        cls,
        sentences: Iterable[str],
        model_path: str | os.PathLike,
        vocab_size: int,
        *,
        model_type: str = 'word',
    ) -> SentencePieceTokenizer:
        """Trains on ``sentences`` in memory, writes the model atomically to ``model_path``.

        ``vocab_size`` is an upper bound: a small corpus gives fewer pieces. The default
        ``model_type="word"`` keeps whole words (so MLM masks whole words); on a small vocabulary
        "bpe" and "unigram" split common words into fragments. Use "unigram" or "bpe" for open
        vocabulary text where unknown words should become pieces rather than unk.
        """
        iterator = iter(sentences)
        first = next(iterator, None)
        if first is None:
            raise ValueError(f'no sentences to train the SentencePiece model {model_path} on')
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=(_split_punctuation(s) for s in itertools.chain([first], iterator)),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=-1,
            eos_id=-1,
            control_symbols=list(CONTROL_SYMBOLS),
            normalization_rule_name='nmt_nfkc_cf',
            # Every character: the default 0.9995 drops the rarest ones, and a word model then
            # drops every word that holds one ("exactly" for its x, digits above 4).
            character_coverage=1.0,
            hard_vocab_limit=False,
            minloglevel=2,
        )
        _write_atomically(Path(model_path), model.getvalue())
        return cls(model_path)

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset((PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID))

    def encode(self, text: str) -> list[int]:
        return self._processor.encode(_split_punctuation(text), out_type=int)

    def encode_pieces(self, text: str) -> list[str]:
        """The pieces of ``text`` as strings (for inspection)."""
        return self._processor.encode(_split_punctuation(text), out_type=str)

    def decode(self, ids: Sequence[int]) -> str:
        special = self.special_ids
        text = self._processor.decode([int(i) for i in ids if int(i) not in special])
        return _CLOSING_PUNCTUATION.sub(r'\1', text)


def load_or_train_sentencepiece(
    model_path: str | os.PathLike, sentences: Callable[[], Iterable[str]], vocab_size: int
) -> SentencePieceTokenizer:
    """Loads ``model_path`` if it exists, else trains on ``sentences()`` and caches it there.

    ``sentences`` is only called when training is needed. The file is written atomically, so a
    concurrent reader sees either no model or a whole one.
    """
    if Path(model_path).exists():
        return SentencePieceTokenizer(model_path)
    return SentencePieceTokenizer.train(sentences(), model_path, vocab_size)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        with os.fdopen(handle, 'wb') as temp_file:
            temp_file.write(data)
            temp_file.flush()
            os.fsync(temp_file.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
