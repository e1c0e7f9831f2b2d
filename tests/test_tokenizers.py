"""Tests for the tokenizer interface, its SentencePiece and WordPiece implementations, and the
train_tokenizer command."""

import os
import sys
import types

import pytest

import semvlp_jax.data
from semvlp_jax.data import train_tokenizer
from semvlp_jax.data.synthetic import SyntheticConfig, SyntheticScenes, caption_corpus
from semvlp_jax.data.tokenizers import (
    SentencePieceTokenizer,
    Tokenizer,
    WordPieceTokenizer,
    load_or_train_sentencepiece,
    load_tokenizer,
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


# A BERT-layout vocabulary: [PAD] first, unused slots, the other specials at Google's ids, then
# words and "##" continuation pieces from id 104.
BERT_WORDS = ['the', 'man', 'is', 'play', '##ing', 'a', 'guitar', 'cafe', '.', ',', '?', 's']
THE, MAN, IS, PLAY, ING, A, GUITAR, CAFE, PERIOD, COMMA, QUESTION, S = range(104, 116)


def write_vocab(path, tokens):
    path.write_text(''.join(f'{token}\n' for token in tokens), encoding='utf-8')
    return path


def bert_vocab(directory, specials=('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')):
    pad, *others = specials
    unused = [f'[unused{i}]' for i in range(99)]
    return write_vocab(directory / 'vocab.txt', [pad, *unused, *others, *BERT_WORDS])


@pytest.fixture
def wordpiece(tmp_path):
    return WordPieceTokenizer(bert_vocab(tmp_path))


def test_wordpiece_special_ids_come_from_the_vocab(wordpiece):
    assert isinstance(wordpiece, Tokenizer)
    assert (
        wordpiece.pad_id,
        wordpiece.unk_id,
        wordpiece.cls_id,
        wordpiece.sep_id,
        wordpiece.mask_id,
    ) == (0, 100, 101, 102, 103)
    assert wordpiece.special_ids == frozenset({0, 100, 101, 102, 103})
    assert wordpiece.vocab_size == 104 + len(BERT_WORDS)


def test_wordpiece_encodes_as_bert_uncased(wordpiece):
    # Lower-cased, accent stripped, punctuation split off, "playing" = play ##ing, "at" unknown.
    text = 'The man, at the Café, is PLAYING a guitar.'
    ids = wordpiece.encode(text)
    assert ids == [THE, MAN, COMMA, 100, THE, CAFE, COMMA, IS, PLAY, ING, A, GUITAR, PERIOD]
    assert wordpiece.encode_pieces(text)[7:10] == ['is', 'play', '##ing']
    # A word is whole pieces or one [UNK]: "plays" has no "##s" piece, though "s" is a word.
    assert wordpiece.encode('plays') == [100]
    # Special tokens in the text are characters, not special ids.
    assert wordpiece.encode('[CLS] man') == [100, 100, 100, MAN]


def test_wordpiece_decode_joins_pieces_and_skips_special_ids(wordpiece):
    text = 'is the man playing a guitar?'
    ids = wordpiece.encode(text)
    assert wordpiece.decode(ids) == text
    padded = [wordpiece.cls_id, *ids, wordpiece.sep_id, wordpiece.mask_id, wordpiece.pad_id]
    assert wordpiece.decode(padded) == text
    assert wordpiece.decode(wordpiece.encode('The man, at the cafe.')) == 'the man, the cafe.'


def test_wordpiece_cased_keeps_case_and_accents(tmp_path):
    cased = WordPieceTokenizer(bert_vocab(tmp_path), lowercase=False)
    assert cased.encode('The man in a Café') == [100, MAN, 100, A, 100]
    assert cased.encode('the cafe') == [THE, CAFE]


def test_wordpiece_vocab_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='absent.txt'):
        WordPieceTokenizer(tmp_path / 'absent.txt')
    no_cls_mask = write_vocab(tmp_path / 'partial.txt', ['[PAD]', '[UNK]', '[SEP]', 'man'])
    with pytest.raises(
        ValueError, match=r'partial\.txt lacks the special tokens \[CLS\], \[MASK\]$'
    ):
        WordPieceTokenizer(no_cls_mask)
    binary = tmp_path / 'binary.txt'
    binary.write_bytes(b'[PAD]\n\xff\xfe\n')
    with pytest.raises(ValueError, match='binary.txt'):
        WordPieceTokenizer(binary)


def test_load_tokenizer_opens_each_kind(tmp_path, tokenizer):
    wordpiece = load_tokenizer('wordpiece', bert_vocab(tmp_path))
    assert isinstance(wordpiece, WordPieceTokenizer)
    assert wordpiece.encode('the man playing') == [THE, MAN, PLAY, ING]
    sentencepiece = load_tokenizer('sentencepiece', str(tokenizer.model_path))
    assert isinstance(sentencepiece, SentencePieceTokenizer)
    assert sentencepiece.encode('a red circle') == tokenizer.encode('a red circle')
    with pytest.raises(ValueError, match="'bert'; expected one of sentencepiece, wordpiece"):
        load_tokenizer('bert', tmp_path / 'vocab.txt')


CAPTIONS = [
    'A man riding a horse on the beach.',
    'Two dogs play with a red ball.',
    'A woman holds an umbrella in the rain.',
    'A plate of food sits on a wooden table.',
]
MORE_CAPTIONS = ['A cat sleeps on a sofa.', 'Children fly a kite in the park.']


def run_cli(capsys, *argv):
    code = train_tokenizer.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_tokenizer_from_text_files(tmp_path, capsys):
    first = tmp_path / 'first.txt'
    first.write_text('\n' + '\n\n'.join(CAPTIONS) + '\n', encoding='utf-8')  # blank lines
    second = tmp_path / 'second.txt'
    second.write_text('\n'.join(MORE_CAPTIONS), encoding='utf-8')
    output = tmp_path / 'out' / 'captions.model'
    code, out, err = run_cli(
        capsys, '--output', output, '--vocab_size', 100, '--text', first, second
    )
    assert (code, err) == (0, '')
    model = load_tokenizer('sentencepiece', output)
    # Words of both files are known; the default unigram model spells unseen words in pieces.
    for text in (
        CAPTIONS[0],
        MORE_CAPTIONS[1],
        'A horse sleeps in the rain.',
        'a red kite in the garden.',
    ):
        ids = model.encode(text)
        assert model.unk_id not in ids
        assert model.decode(ids) == text.lower()
    assert f'vocabulary of {model.vocab_size} pieces (asked for 100)' in out
    # The first two sentences (blank lines skipped) are shown encoded.
    shown = [line.strip() for line in out.splitlines()[1:]]
    assert len(shown) == 2
    for line, caption in zip(shown, CAPTIONS[:2]):
        assert line == f'{caption!r} -> {model.encode_pieces(caption)} {model.encode(caption)}'


def test_train_tokenizer_word_model_knows_only_corpus_words(tmp_path, capsys):
    corpus = write_vocab(tmp_path / 'corpus.txt', CAPTIONS)
    output = tmp_path / 'words.model'
    code, _, _ = run_cli(
        capsys, '--output', output, '--vocab_size', 100, '--model_type', 'word', '--text', corpus
    )
    assert code == 0
    model = load_tokenizer('sentencepiece', output)
    ids = model.encode('A woman riding a kite.')
    assert ids.count(model.unk_id) == 1 and model.encode_pieces('woman riding') == [
        '▁woman',
        '▁riding',
    ]


def test_train_tokenizer_errors_exit_2_naming_the_file(tmp_path, capsys):
    output = tmp_path / 'never.model'
    missing = tmp_path / 'missing.txt'
    code, _, err = run_cli(capsys, '--output', output, '--vocab_size', 50, '--text', missing)
    assert code == 2 and err == f'error: text file not found: {missing}\n'
    blank = tmp_path / 'blank.txt'
    blank.write_text('\n  \n\n', encoding='utf-8')
    code, _, err = run_cli(capsys, '--output', output, '--vocab_size', 50, '--text', blank)
    assert code == 2 and err == f'error: no sentences in {blank}\n'
    code, _, err = run_cli(capsys, '--output', output, '--vocab_size', 50)  # no corpus
    assert code == 2 and 'one of the arguments --text --dataset is required' in err
    corpus = write_vocab(tmp_path / 'corpus.txt', CAPTIONS)
    code, _, err = run_cli(
        capsys, '--output', output, '--vocab_size', 50, '--text', corpus, '--data_dir', tmp_path
    )
    assert code == 2 and '--data_dir and --splits go with --dataset' in err
    code, _, err = run_cli(capsys, '--output', output, '--vocab_size', 8, '--text', corpus)
    assert code == 2 and f'training on {corpus} failed' in err and 'vocab_size' in err
    assert not output.exists()


def test_train_tokenizer_reads_the_text_field_of_a_dataset(tmp_path, capsys, monkeypatch):
    def stored(image_id, question, answer):
        """A GQA record as the data source gives it: every text field as bytes."""
        fields = dict(question_id=f'q{image_id}', image_id=image_id, structural='query')
        fields.update(question=question, answer=answer)
        return {key: value.encode('utf-8') for key, value in fields.items()}

    splits = {
        'train': [
            stored('1', 'Is the cube red?', 'giraffe'),
            stored('2', 'What colour is the sphere?', 'zebra'),
        ],
        'val': [stored('3', 'How many cylinders?', 'okapi')],
    }
    opened = []

    class FakeBuilder:
        info = types.SimpleNamespace(splits=dict.fromkeys(splits))

        def as_data_source(self, split):
            return splits[split]

    def open_dataset(name, data_dir):
        opened.append((name, data_dir))
        return FakeBuilder()

    # The real module may not exist yet: stand a fake one in its place.
    fake = types.ModuleType('semvlp_jax.data.builders')
    fake.open_dataset = open_dataset
    monkeypatch.setitem(sys.modules, 'semvlp_jax.data.builders', fake)
    monkeypatch.setattr(semvlp_jax.data, 'builders', fake, raising=False)

    def train(output, *splits_args):
        argv = ['--output', output, '--vocab_size', 100, '--model_type', 'word']
        code, _, err = run_cli(
            capsys, *argv, '--dataset', 'gqa', '--data_dir', tmp_path, *splits_args
        )
        assert (code, err) == (0, '')
        return load_tokenizer('sentencepiece', output)

    every = train(tmp_path / 'all.model')
    assert opened == [('gqa', tmp_path)]
    for question in ('is the cube red?', 'what colour is the sphere?', 'how many cylinders?'):
        assert every.decode(every.encode(question)) == question
    for answer in ('giraffe', 'zebra', 'okapi'):  # the answer field is not read
        assert every.encode(answer) == [every.unk_id]
    val = train(tmp_path / 'val.model', '--splits', 'val')
    assert val.decode(val.encode('how many cubes?')) == 'how many?'
    code, _, err = run_cli(
        capsys,
        *('--output', tmp_path / 'x.model', '--vocab_size', 100),
        *('--dataset', 'gqa', '--data_dir', tmp_path, '--splits', 'test'),
    )
    assert (
        code == 2
        and err == f'error: dataset gqa in {tmp_path} has no split test; it has train, val\n'
    )
