"""Text tokenizers behind one interface: SentencePiece models and BERT WordPiece vocabularies.

Data pipelines and heads read the special ids (pad, unk, [CLS], [SEP], [MASK]) from the tokenizer
object, never as constants, so they work with whichever tokenizer a config picks:

- SentencePiece models trained here (`SentencePieceTokenizer.train`, or the command
  `python -m semvlp_jax.data.train_tokenizer`) have fixed ids pad=0, unk=1, [CLS]=2, [SEP]=3,
  [MASK]=4.
- A BERT `vocab.txt` (`WordPieceTokenizer`, for runs initialised from BERT) has the ids of its
  file: 0, 100, 101, 102, 103 in Google's English BERT vocabularies.

`load_tokenizer(kind, path)` opens either kind.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import sentencepiece as spm
from etils import epath
from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers

# The ids of SentencePiece models trained here (a WordPiece vocabulary has its own).
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
        path = epath.Path(model_path)
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
        write_atomically(epath.Path(model_path), model.getvalue())
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


class WordPieceTokenizer:
    """A BERT WordPiece vocabulary (`vocab.txt`, one piece a line, id = line number); implements
    ``Tokenizer``. For runs initialised from BERT, whose word embeddings are indexed by it.

    Tokenises as BERT does, through the HuggingFace `tokenizers` library: BERT normaliser (control
    characters removed, CJK characters spaced, and with ``lowercase`` also lower-cased and
    accents stripped, as for BERT "uncased"), BERT pre-tokeniser (whitespace and punctuation), then
    greedy longest-match WordPiece with "##" continuation pieces; a word that cannot be built
    from the pieces is one [UNK]. Special tokens in the text are not recognised: a caption holding
    "[SEP]" is encoded as the characters, so ``encode`` never returns [CLS], [SEP], [MASK] or pad.
    """

    SPECIAL_TOKENS = ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')

    def __init__(self, vocab_path: str | os.PathLike, lowercase: bool = True):
        path = epath.Path(vocab_path)
        if not path.is_file():
            raise FileNotFoundError(f'WordPiece vocabulary file not found: {path}')
        try:
            vocab = _read_wordpiece_vocab(path)
        except Exception as error:  # the library raises a bare Exception (e.g. invalid UTF-8)
            raise ValueError(f'{path} is not a readable WordPiece vocabulary: {error}') from error
        missing = [token for token in self.SPECIAL_TOKENS if token not in vocab]
        if missing:
            raise ValueError(
                f'WordPiece vocabulary {path} lacks the special tokens {", ".join(missing)}'
            )
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
            vocab[token] for token in self.SPECIAL_TOKENS
        )
        tokenizer = _HFTokenizer(models.WordPiece(vocab, unk_token='[UNK]'))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        # No clean-up: decode glues punctuation back the way SentencePieceTokenizer.decode does,
        # so both kinds give the same text for the same words.
        tokenizer.decoder = decoders.WordPiece(prefix='##', cleanup=False)
        self._tokenizer = tokenizer
        self.vocab_path = path
        self.lowercase = lowercase
        # Ids are line numbers: a repeated line leaves a gap in the ids rather than shifting
        # them, so the embedding table needs max id + 1 rows, not one per distinct piece.
        self.vocab_size: int = max(vocab.values()) + 1

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset((self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id))

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def encode_pieces(self, text: str) -> list[str]:
        """The pieces of ``text`` as strings (for inspection)."""
        return self._tokenizer.encode(text, add_special_tokens=False).tokens

    def decode(self, ids: Sequence[int]) -> str:
        special = self.special_ids
        text = self._tokenizer.decode(
            [int(i) for i in ids if int(i) not in special], skip_special_tokens=False
        )
        return _CLOSING_PUNCTUATION.sub(r'\1', text)


# load_tokenizer's kinds: what each opens.
TOKENIZER_KINDS: dict[str, Callable[[epath.Path], Tokenizer]] = {
    'sentencepiece': SentencePieceTokenizer,  # a `.model` file trained here
    'wordpiece': WordPieceTokenizer,  # a BERT `vocab.txt`
}


def load_tokenizer(kind: str, path: str | os.PathLike) -> Tokenizer:
    """The tokenizer of ``kind`` ('sentencepiece': a `.model`; 'wordpiece': a BERT `vocab.txt`)
    stored at ``path``."""
    if kind not in TOKENIZER_KINDS:
        raise ValueError(
            f'unknown tokenizer kind {kind!r}; expected one of {", ".join(TOKENIZER_KINDS)}'
        )
    return TOKENIZER_KINDS[kind](epath.Path(path))


def load_or_train_sentencepiece(
    model_path: str | os.PathLike, sentences: Callable[[], Iterable[str]], vocab_size: int
) -> SentencePieceTokenizer:
    """Loads ``model_path`` if it exists, else trains on ``sentences()`` and caches it there.

    ``sentences`` is only called when training is needed. The file is written atomically, so a
    concurrent reader sees either no model or a whole one.
    """
    if epath.Path(model_path).exists():
        return SentencePieceTokenizer(model_path)
    return SentencePieceTokenizer.train(sentences(), model_path, vocab_size)


def _read_wordpiece_vocab(path: epath.Path) -> dict[str, int]:
    """The library's own reading of a vocab.txt (ids are line numbers), through a local copy
    when the file is on an object store."""
    if '://' not in os.fspath(path):
        return models.WordPiece.read_file(os.fspath(path))
    with tempfile.TemporaryDirectory() as local:
        copy = os.path.join(local, path.name)
        with open(copy, 'wb') as f:
            f.write(path.read_bytes())
        return models.WordPiece.read_file(copy)


def write_atomically(path: epath.Path, data: bytes) -> None:
    """Writes `data` to `path` so that a reader sees no file or the whole file (an object on a
    store is replaced whole; a local file is written beside and renamed)."""
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if '://' in os.fspath(path):
        path.write_bytes(data)
        return
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        with os.fdopen(handle, 'wb') as temp_file:
            temp_file.write(data)
            temp_file.flush()
            os.fsync(temp_file.fileno())
        os.replace(temp_name, path)
    except BaseException:
        epath.Path(temp_name).unlink(missing_ok=True)
        raise


@dataclasses.dataclass(frozen=True)
class TextEncoder:
    """[CLS] pieces [SEP] padded to max_len; pieces beyond max_len - 2 are truncated."""

    tokenizer: Tokenizer
    max_len: int

    def __call__(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        t = self.tokenizer
        pieces = t.encode(text)[: self.max_len - 2]
        ids = np.full(self.max_len, t.pad_id, np.int32)
        ids[: len(pieces) + 2] = [t.cls_id, *pieces, t.sep_id]
        mask = np.zeros(self.max_len, np.int32)
        mask[: len(pieces) + 2] = 1
        return ids, mask
