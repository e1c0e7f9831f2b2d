"""The vocabularies a run fixes at its first start: the tokenizer, and the answer lists.

Both index model parameters (word embeddings, answer classifier rows), so a resumed run and a
fine-tune must read them as they were, not rebuild them from data that may have changed.
"""

from __future__ import annotations

import collections
import json
import os

import ml_collections
from etils import epath

from semvlp_jax.data import synthetic, synthetic_tasks
from semvlp_jax.data.tokenizers import (
    Tokenizer,
    load_or_train_sentencepiece,
    load_tokenizer,
    write_atomically,
)
from semvlp_jax.errors import ConfigError, MissingConfigFile
from semvlp_jax.workdir import RunDir

# The vocabulary file of an HF BERT checkpoint directory.
BERT_VOCAB = 'vocab.txt'
# Scenes used to train the synthetic tokenizer: enough to see every word of the grammar.
TOKENIZER_CORPUS_SCENES = 2000


def synthetic_tokenizer(data: ml_collections.ConfigDict, path: epath.Path) -> Tokenizer:
    """The sentencepiece model at `path`; trained there at first use on every text of the
    synthetic tasks (pre-training and downstream share one vocabulary)."""
    scenes = synthetic.SyntheticConfig.from_data(data)
    return load_or_train_sentencepiece(
        path,
        lambda: synthetic_tasks.text_corpus(scenes, TOKENIZER_CORPUS_SCENES),
        vocab_size=data.vocab_size,
    )


def run_tokenizer(
    data: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    init_from: str = '',
    init_bert: str = '',
) -> Tokenizer:
    """The tokenizer the run in `workdir` reads `config.data` with, kept in WORKDIR/tokenizer/.

    The file, first match: `config.data.tokenizer.path` (a sentencepiece `.model` or a BERT
    `vocab.txt`, by `config.data.tokenizer.kind`; built data always names one); the `vocab.txt`
    of the BERT checkpoint in `init_bert` (the value of `config.init_bert`), whose word
    embeddings it indexes; for synthetic data, the word model trained on the synthetic texts at
    first use, or, for a fine-tune (`init_from`, the value of `config.init_from`), the
    pre-training run's tokenizer copied over. A file is copied into the workdir at the first
    start so that a resumed run reads text as it started even if the original changes; a
    fine-tune must name the file its pre-training run kept.
    """
    run = RunDir(workdir)
    kept = RunDir.of(init_from).tokenizer_files() if init_from else []
    kind, source = _configured_tokenizer(data, init_bert)
    if source is None:  # synthetic data without a configured file
        path = run.synthetic_tokenizer
        if init_from and not path.exists():
            if not kept:
                raise MissingConfigFile(
                    f'config.init_from={init_from!r}: no tokenizer/{path.name} in that run '
                    'directory; a fine-tune must use its pre-training vocabulary'
                )
            if kept[0].name != path.name:  # a BERT-initialised pre-training run: its vocab.txt
                return _kept_copy(run, 'wordpiece', kept[0], kept)
            write_atomically(path, kept[0].read_bytes())
        return synthetic_tokenizer(data, path)
    return _kept_copy(run, kind, source, kept)


def _configured_tokenizer(
    data: ml_collections.ConfigDict, init_bert: str
) -> tuple[str, epath.Path | None]:
    """(kind, file) the config names for the tokenizer; file None for the synthetic model."""
    configured = data.get('tokenizer') or {}
    if configured.get('path'):
        return configured.get('kind', 'sentencepiece'), epath.Path(configured['path'])
    if init_bert:
        return 'wordpiece', epath.Path(init_bert) / BERT_VOCAB
    return 'sentencepiece', None


def _kept_copy(run: RunDir, kind: str, source: epath.Path, kept: list[epath.Path]) -> Tokenizer:
    """The run's copy of tokenizer file `source` (made at the first start), after checking that
    a fine-tune reads the file its pre-training run kept (`kept`)."""
    if kept and source.is_file() and all(k.read_bytes() != source.read_bytes() for k in kept):
        raise ConfigError(
            f'the tokenizer {str(source)!r} differs from {kept[0]}, the tokenizer of the run in '
            'config.init_from; a fine-tune must use its pre-training vocabulary'
        )
    copy = run.tokenizer_dir / source.name
    if not copy.exists():
        if not source.is_file():
            raise MissingConfigFile(
                f'tokenizer file {str(source)!r} (config.data.tokenizer.path, or the vocab.txt '
                'of config.init_bert): no such file (train one with '
                '`python -m semvlp_jax.data.train_tokenizer`)'
            )
        write_atomically(copy, source.read_bytes())  # processes sharing a workdir race here
    return load_tokenizer(kind, copy)


def answer_vocabulary(counts: collections.Counter, min_count: int, key: str) -> list[str]:
    """Answers seen at least `min_count` (the value of config key `key`) times, most frequent
    first (ties alphabetical)."""
    kept = [answer for answer, count in counts.items() if count >= min_count]
    if not kept:
        raise ConfigError(
            f'config.{key}={min_count}: no training answer is that frequent '
            f'(the most frequent is seen {max(counts.values(), default=0)} times)'
        )
    return sorted(kept, key=lambda answer: (-counts[answer], answer))


def fixed_answers(
    path: epath.Path, counts: collections.Counter, min_count: int, key: str, *, is_writer: bool
) -> list[str]:
    """The answer list kept at `path`, or, at the first start, the answers of `counts` seen
    `min_count` times (config key `key`), written there by the writer process. No counts (no
    question data) gives no answers."""
    if path.exists():
        return json.loads(path.read_text())
    answers = answer_vocabulary(counts, min_count, key) if counts else []
    if is_writer:
        write_atomically(path, json.dumps(answers).encode())
    return answers
