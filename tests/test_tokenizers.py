"""Tests for the tokenizer interface and the SentencePiece implementation."""

import os

import pytest

from semvlp_jax.data.synthetic import SyntheticConfig, SyntheticScenes, caption_corpus
from semvlp_jax.data.tokenizers import (
    SentencePieceTokenizer,
    Tokenizer,
    load_or_train_sentencepiece,
)

CONFIG = SyntheticConfig(render_pixels=False)


@pytest.fixture(scope='module')
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp('spm') / 'synthetic.model'
    return SentencePieceTokenizer.train(caption_corpus(CONFIG, 300), path, vocab_size=128)


def held_out_texts(count=50):
    """Captions and questions of validation scenes (not seen in training)."""
    scenes = SyntheticScenes(CONFIG, 'val', count)
    return [
        text
        for i in range(count)
        for text in scenes[i]['captions'] + [q['question'] for q in scenes[i]['questions']]
    ]


def test_special_ids_are_fixed(tokenizer):
    assert isinstance(tokenizer, Tokenizer)
    assert (
        tokenizer.pad_id,
        tokenizer.unk_id,
        tokenizer.cls_id,
        tokenizer.sep_id,
        tokenizer.mask_id,
    ) == (0, 1, 2, 3, 4)
    assert tokenizer.special_ids == frozenset({0, 1, 2, 3, 4})


def test_vocabulary_is_the_words_of_the_corpus(tokenizer):
    words = {
        word for text in caption_corpus(CONFIG, 300) for word in text.replace('?', ' ?').split()
    }
    assert tokenizer.vocab_size == len(words) + 5 <= 128


def test_round_trip_with_one_id_per_word(tokenizer):
    for text in held_out_texts():
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text
        assert not set(ids) & tokenizer.special_ids
        # Whole words, and the question mark on its own.
        assert tokenizer.encode_pieces(text) == ['▁' + w for w in text.replace('?', ' ?').split()]


def test_encode_lower_cases_and_decode_skips_special_ids(tokenizer):
    ids = tokenizer.encode('is there a red circle?')
    assert tokenizer.encode('Is there a RED Circle?') == ids
    padded = [tokenizer.cls_id, *ids, tokenizer.sep_id, tokenizer.mask_id, tokenizer.pad_id]
    assert tokenizer.decode(padded) == 'is there a red circle?'


def test_unknown_words_become_unk(tokenizer):
    ids = tokenizer.encode('is there a pink hexagon, or 3 crosses?')
    assert tokenizer.unk_id in ids
    assert ids[:3] == tokenizer.encode('is there a')
    assert ids[-2:] == tokenizer.encode('crosses?')
    assert tokenizer.decode(ids) == 'is there a crosses?'


def test_subword_model_splits_unknown_words_into_pieces(tmp_path):
    bpe = SentencePieceTokenizer.train(
        caption_corpus(CONFIG, 100), tmp_path / 'bpe.model', vocab_size=128, model_type='bpe'
    )
    ids = bpe.encode('a green rectangle')  # an unseen word made of seen letters
    assert bpe.unk_id not in ids and len(ids) > 3
    assert bpe.decode(ids) == 'a green rectangle'


def test_cache_is_reused_without_retraining(tmp_path):
    path = tmp_path / 'cache' / 'spm.model'
    calls = []

    def sentences():
        calls.append(1)
        return caption_corpus(CONFIG, 50)

    first = load_or_train_sentencepiece(path, sentences, vocab_size=128)
    modified = os.stat(path).st_mtime_ns
    second = load_or_train_sentencepiece(path, sentences, vocab_size=128)
    assert len(calls) == 1
    assert os.stat(path).st_mtime_ns == modified
    assert os.listdir(path.parent) == ['spm.model']  # no temporary file left behind
    text = 'a small red circle left of a large blue square'
    assert second.encode(text) == first.encode(text)
    assert second.vocab_size == first.vocab_size


def test_missing_or_corrupt_model_names_the_path(tmp_path):
    missing = tmp_path / 'missing.model'
    with pytest.raises(FileNotFoundError, match='missing.model'):
        SentencePieceTokenizer(missing)
    corrupt = tmp_path / 'corrupt.model'
    corrupt.write_bytes(b'not a model')
    with pytest.raises(ValueError, match='corrupt.model'):
        SentencePieceTokenizer(corrupt)
    with pytest.raises(ValueError, match='corrupt.model'):
        load_or_train_sentencepiece(corrupt, lambda: ['unused'], vocab_size=128)


def test_training_on_nothing_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match='no sentences'):
        SentencePieceTokenizer.train([], tmp_path / 'empty.model', vocab_size=128)
    assert not (tmp_path / 'empty.model').exists()
