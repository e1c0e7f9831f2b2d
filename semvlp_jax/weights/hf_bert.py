"""HuggingFace BERT checkpoints in and out of SemVLP's text side, by an explicit name table.

A BERT directory holds `config.json`, `model.safetensors` (or the shards that
`model.safetensors.index.json` lists) and usually `vocab.txt`. Its tensors fill the text
embeddings, every encoder layer's self-attention and FFN, the pooler and the MLM head (transform
and output bias; in both models the decoder is the word-embedding table). Names are read with or
without the `bert.` prefix (`BertForPreTraining` / `BertModel.save_pretrained`) and with
LayerNorm `gamma/beta` or `weight/bias`; PyTorch Linear weights are [out, in], our kernels
[in, out]. The position table keeps BERT's first `max_text_len` rows: a text never reaches the
others. A word table grown by MVPTR's phrase concepts (`extra_rows`, appended after BERT's
vocabulary) takes BERT's rows first and keeps its initialisation in the rest; the same for the
MLM output bias. The staged mode's visual layers (`encoder/visual_stage`) start from the same
BERT layers as the shared bottom layers.

Whatever the table does not account for is an error listing the names: a tensor it needs that
the file lacks, a tensor no entry takes, a shape that does not fit (with a hint when it is the
transpose). The pooler and the MLM head are each all-or-nothing: a `BertModel` file has no MLM
head, a `BertForMaskedLM` file no pooler, and what a file lacks is initialised and reported as
new. Tensors known to have no counterpart are skipped and reported as dropped: BERT's
next-sentence head and the `position_ids` buffer; a stored decoder must equal what it is tied to.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import safetensors.numpy

from semvlp_jax.checkpoint import flat_leaves, flat_shapes
from semvlp_jax.errors import ConfigError, MissingConfigFile
from semvlp_jax.models.encoder import stack_sizes, unstack_layers
from semvlp_jax.pretrained import LoadReport

CONFIG_FILE = 'config.json'
WEIGHTS_FILE = 'model.safetensors'
INDEX_FILE = 'model.safetensors.index.json'
VOCAB_FILE = 'vocab.txt'

# HF `hidden_act` -> `config.model.gelu`: the activations this model computes.
HIDDEN_ACTS = {'gelu': 'exact', 'gelu_new': 'tanh', 'gelu_pytorch_tanh': 'tanh'}
GELU_TO_HIDDEN_ACT = {'exact': 'gelu', 'tanh': 'gelu_new'}

# config.model key -> config.json key, for the sizes that must agree.
SIZE_KEYS = {
    'hidden_size': 'hidden_size',
    'num_heads': 'num_attention_heads',
    'mlp_size': 'intermediate_size',
    'num_layers': 'num_hidden_layers',
}

# Tensors of BERT files that have no counterpart here, and why.
SKIPPED = {
    'embeddings.position_ids': 'a buffer of position indices',
    'cls.seq_relationship.weight': "BERT's next-sentence head",
    'cls.seq_relationship.bias': "BERT's next-sentence head",
}
# Stored copies of tied tensors: each must equal the tensor it is tied to.
TIED = {
    'cls.predictions.decoder.weight': 'embeddings.word_embeddings.weight',
    'cls.predictions.decoder.bias': 'cls.predictions.bias',
}
REQUIRED_PARTS = ('embeddings', 'encoder')  # the optional ones: pooler, mlm_head


class WeightsError(ConfigError):
    """A checkpoint that does not map onto the model: the message lists the tensors."""


def read_config_json(path: Path, required: tuple[str, ...]) -> dict[str, Any]:
    """An HF `config.json` as a dict; `WeightsError` when it is not JSON or lacks a `required`
    key (what every importer of HF checkpoints reads first)."""
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise WeightsError(f'{path}: not valid JSON ({e})') from None
    missing = [key for key in required if key not in raw]
    if missing:
        raise WeightsError(f'{path}: missing {", ".join(missing)}')
    return raw


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """What `config.json` says about a BERT checkpoint."""

    vocab_size: int
    hidden_size: int
    num_heads: int
    mlp_size: int
    num_layers: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    gelu: str  # config.model.gelu that computes its hidden_act

    @classmethod
    def read(cls, directory: str | Path) -> BertConfig:
        path = Path(directory) / CONFIG_FILE
        if not path.is_file():
            raise MissingConfigFile(
                f'{directory}: no {CONFIG_FILE}; an HF BERT checkpoint directory holds '
                f'{CONFIG_FILE} and {WEIGHTS_FILE} (what save_pretrained writes)'
            )
        keys = (*SIZE_KEYS.values(), 'vocab_size', 'max_position_embeddings', 'type_vocab_size')
        raw = read_config_json(path, keys)
        act = raw.get('hidden_act', 'gelu')
        if act not in HIDDEN_ACTS:
            raise WeightsError(
                f'{path}: hidden_act={act!r}; this model computes {sorted(HIDDEN_ACTS)}'
            )
        return cls(
            vocab_size=raw['vocab_size'],
            hidden_size=raw['hidden_size'],
            num_heads=raw['num_attention_heads'],
            mlp_size=raw['intermediate_size'],
            num_layers=raw['num_hidden_layers'],
            max_positions=raw['max_position_embeddings'],
            type_vocab_size=raw['type_vocab_size'],
            layer_norm_eps=raw.get('layer_norm_eps', 1e-12),
            gelu=HIDDEN_ACTS[act],
        )

    def model_config(self) -> dict[str, Any]:
        """The `config.model` values that build this BERT's text side."""
        return dict(
            hidden_size=self.hidden_size,
            num_heads=self.num_heads,
            mlp_size=self.mlp_size,
            num_layers=self.num_layers,
            gelu=self.gelu,
            layer_norm_eps=self.layer_norm_eps,
        )

    def mismatches(self, model: ml_collections.ConfigDict, key: str) -> list[str]:
        """Sentences naming each `config.model` value that differs from this checkpoint (whose
        directory is config key `key`)."""
        problems = []
        for ours, theirs in SIZE_KEYS.items():
            if model[ours] != getattr(self, ours):
                problems.append(
                    f'config.model.{ours}={model[ours]} but config.{key} has '
                    f'{theirs}={getattr(self, ours)}'
                )
        if model.get('gelu', 'exact') != self.gelu:
            problems.append(
                f'config.model.gelu={model.get("gelu", "exact")!r} but config.{key} has '
                f'hidden_act={GELU_TO_HIDDEN_ACT[self.gelu]!r} (gelu={self.gelu!r})'
            )
        if model.get('layer_norm_eps', 1e-12) != self.layer_norm_eps:
            problems.append(
                f'config.model.layer_norm_eps={model.get("layer_norm_eps", 1e-12)} but '
                f'config.{key} has layer_norm_eps={self.layer_norm_eps}'
            )
        if self.type_vocab_size != 2:
            problems.append(
                f'config.{key} has type_vocab_size={self.type_vocab_size}; this model needs 2 '
                '(text tokens type 0, image tokens type 1)'
            )
        return problems


@dataclasses.dataclass(frozen=True)
class Entry:
    """One tensor: BERT's name (no `bert.` prefix, LayerNorm weight/bias), our leaf path in the
    unrolled layout, and how it converts: `copy`, `linear` (transposed), `rows` (our first
    rows of BERT's table) or `grown` (BERT's table is our first rows; ours has `extra_rows`
    more)."""

    bert: str
    ours: str
    kind: str
    part: str  # embeddings | encoder | pooler | mlm_head


def name_table(num_layers: int, visual_layers: int = 0) -> list[Entry]:
    """Every tensor a BERT of `num_layers` layers gives this model (and BERT's bottom
    `visual_layers` layers again to the staged mode's visual layers)."""
    entries: list[Entry] = []

    def linear(bert, ours, part):
        entries.append(Entry(f'{bert}.weight', f'{ours}/kernel', 'linear', part))
        entries.append(Entry(f'{bert}.bias', f'{ours}/bias', 'copy', part))

    def norm(bert, ours, part):
        entries.append(Entry(f'{bert}.weight', f'{ours}/scale', 'copy', part))
        entries.append(Entry(f'{bert}.bias', f'{ours}/bias', 'copy', part))

    for table, ours, kind in (
        ('word', 'word', 'grown'),
        ('position', 'position', 'rows'),
        ('token_type', 'token_type', 'copy'),
    ):
        entries.append(
            Entry(
                f'embeddings.{table}_embeddings.weight',
                f'text_embeddings/{ours}/embedding',
                kind,
                'embeddings',
            )
        )
    norm('embeddings.LayerNorm', 'text_embeddings/norm', 'embeddings')
    layers = [(i, f'encoder/layers/{i}') for i in range(num_layers)]
    layers += [(i, f'encoder/visual_stage/layers/{i}') for i in range(visual_layers)]
    for i, ours in layers:
        bert = f'encoder.layer.{i}'
        for projection in ('query', 'key', 'value'):
            linear(
                f'{bert}.attention.self.{projection}',
                f'{ours}/self_attention/{projection}',
                'encoder',
            )
        linear(f'{bert}.attention.output.dense', f'{ours}/self_attention/output', 'encoder')
        norm(f'{bert}.attention.output.LayerNorm', f'{ours}/self_attention/norm', 'encoder')
        linear(f'{bert}.intermediate.dense', f'{ours}/feed_forward/expand', 'encoder')
        linear(f'{bert}.output.dense', f'{ours}/feed_forward/contract', 'encoder')
        norm(f'{bert}.output.LayerNorm', f'{ours}/feed_forward/norm', 'encoder')
    linear('pooler.dense', 'pooler/dense', 'pooler')
    linear('cls.predictions.transform.dense', 'mlm_head/transform/dense', 'mlm_head')
    norm('cls.predictions.transform.LayerNorm', 'mlm_head/transform/norm', 'mlm_head')
    entries.append(Entry('cls.predictions.bias', 'mlm_head/bias', 'grown', 'mlm_head'))
    return entries


def canonical_name(name: str) -> str:
    """A file's tensor name in the table's spelling: no `bert.` prefix, LayerNorm weight/bias."""
    name = name.removeprefix('bert.')
    if '.LayerNorm.' in name:
        name = name.replace('.LayerNorm.gamma', '.LayerNorm.weight')
        name = name.replace('.LayerNorm.beta', '.LayerNorm.bias')
    return name


def read_tensors(directory: str | Path) -> dict[str, np.ndarray]:
    """The checkpoint's tensors under their canonical names (float32)."""
    directory = Path(directory)
    if (directory / WEIGHTS_FILE).is_file():
        files = [directory / WEIGHTS_FILE]
    elif (directory / INDEX_FILE).is_file():
        weight_map = json.loads((directory / INDEX_FILE).read_text())['weight_map']
        files = [directory / name for name in sorted(set(weight_map.values()))]
    else:
        raise MissingConfigFile(
            f'{directory}: no {WEIGHTS_FILE} (or {INDEX_FILE}); a pytorch_model.bin needs PyTorch '
            'to read: load it in transformers and save_pretrained it again (safetensors)'
        )
    tensors: dict[str, np.ndarray] = {}
    spelled: dict[str, str] = {}
    for file in files:
        try:
            loaded = safetensors.numpy.load_file(file)
        except Exception as e:  # safetensors raises its own error types for a damaged file
            raise WeightsError(f'{file}: not a readable safetensors file ({e})') from None
        for name, value in loaded.items():
            key = canonical_name(name)
            if key in spelled:
                raise WeightsError(
                    f'{file}: {name!r} and {spelled[key]!r} are the same tensor ({key})'
                )
            spelled[key] = name
            tensors[key] = np.asarray(value, np.float32)
    return tensors


def _bert_shape(entry: Entry, ours: tuple[int, ...], extra_rows: int) -> str:
    if entry.kind == 'linear':
        return str(list(ours[::-1]))
    if entry.kind == 'rows':
        return f'[>= {ours[0]}, {ours[1]}]'
    if entry.kind == 'grown' and extra_rows:
        return f'{[ours[0] - extra_rows, *ours[1:]]} (the model adds {extra_rows} phrase rows)'
    return str(list(ours))


def _fits(entry: Entry, value: np.ndarray, ours: tuple[int, ...], extra_rows: int) -> bool:
    if entry.kind == 'linear':
        return value.shape == ours[::-1]
    if entry.kind == 'rows':
        return value.ndim == 2 and value.shape[0] >= ours[0] and value.shape[1] == ours[1]
    if entry.kind == 'grown':
        return value.shape == (ours[0] - extra_rows, *ours[1:])
    return value.shape == ours


def _to_ours(entry: Entry, value: np.ndarray, ours: tuple[int, ...]) -> np.ndarray:
    if entry.kind == 'linear':
        return value.T
    if entry.kind == 'rows':
        return value[: ours[0]]
    return value


def _from_ours(entry: Entry, value: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(value.T if entry.kind == 'linear' else value)


def bert_to_ours(
    tensors: Mapping[str, np.ndarray],
    shapes: Mapping[str, tuple[int, ...]],
    *,
    where: str,
    extra_rows: int = 0,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The tensors as our leaves (unrolled paths) for a model whose leaf shapes are `shapes`,
    and the names skipped. `extra_rows`: the phrase rows the model's word table has after
    BERT's vocabulary (a `grown` leaf comes back with BERT's rows only). Raises WeightsError
    listing every problem, `where` naming the file."""
    num_layers = len({k.split('/')[2] for k in shapes if k.startswith('encoder/layers/')})
    visual = 'encoder/visual_stage/layers/'
    visual_layers = len({k.split('/')[3] for k in shapes if k.startswith(visual)})
    table = name_table(num_layers, visual_layers)
    present_parts = {e.part for e in table if e.bert in tensors}
    problems, values = [], {}
    for entry in table:
        if entry.part not in REQUIRED_PARTS and entry.part not in present_parts:
            continue  # an optional part the file does not have: initialised, reported as new
        if entry.bert not in tensors:
            problems.append(f'missing {entry.bert} (for {entry.ours})')
            continue
        value, ours = tensors[entry.bert], shapes[entry.ours]
        if not _fits(entry, value, ours, extra_rows):
            hint = ''
            if value.shape != value.shape[::-1]:  # a square matrix's transpose cannot show
                if entry.kind == 'linear' and value.shape == ours:
                    hint = ' (transposed? PyTorch Linear weights are [out, in])'
                elif entry.kind != 'linear' and value.shape == ours[::-1]:
                    hint = ' (transposed?)'
            problems.append(
                f'{entry.bert}: shape {list(value.shape)}, expected '
                f'{_bert_shape(entry, ours, extra_rows)} for {entry.ours}{hint}'
            )
            continue
        values[entry.ours] = _to_ours(entry, value, ours)
    known = {e.bert for e in table}
    skipped = []
    for name in sorted(tensors.keys() - known):
        if name in SKIPPED:
            skipped.append(name)
        elif name in TIED:
            tied_to = TIED[name]
            if tied_to in tensors and not np.array_equal(tensors[name], tensors[tied_to]):
                problems.append(f'{name} differs from {tied_to}: this model ties them')
            skipped.append(name)
        else:
            problems.append(f'unexpected {name}: no entry of the name table takes it')
    if problems:
        raise WeightsError(
            f'{where}: {len(problems)} tensor(s) do not map onto the model '
            f'({num_layers} layers):\n  ' + '\n  '.join(problems)
        )
    return values, skipped


def _unrolled_shapes(params) -> dict[str, tuple[int, ...]]:
    """Leaf shapes of `params` with the encoder (and its visual stage) in the unrolled layout."""
    if 'stacks' not in params['encoder']:
        return flat_shapes(params)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    abstract['encoder'] = jax.eval_shape(unstack_layers, abstract['encoder'])
    return flat_shapes(abstract)


def _stacked(values: dict[str, np.ndarray], num_layers: int, num_cross_layers: int) -> dict:
    """Unrolled encoder leaves (`encoder/layers/<i>/...`, `encoder/visual_stage/layers/<i>/...`)
    -> the scanned layout's stacks."""
    visual = 'encoder/visual_stage/layers/'
    out = {k: v for k, v in values.items() if not k.startswith(('encoder/layers/', visual))}
    within = {k.split('/', 4)[4] for k in values if k.startswith(visual + '0/')}
    sizes = {int(k.split('/')[3]) for k in values if k.startswith(visual)}
    for rest in within:
        layers = [values[f'{visual}{i}/{rest}'] for i in sorted(sizes)]
        out[f'encoder/visual_stage/stack/{rest}'] = np.stack(layers)
    first = 0
    for j, size in enumerate(stack_sizes(num_layers, num_cross_layers)):
        within = {
            k.split('/', 3)[3]
            for k in values
            if k.startswith('encoder/layers/') and int(k.split('/')[2]) == first
        }
        for rest in within:
            layers = [values[f'encoder/layers/{i}/{rest}'] for i in range(first, first + size)]
            out[f'encoder/stacks/{j}/{rest}'] = np.stack(layers)
        first += size
    return out


def load_bert(
    directory: str | Path,
    params,
    model: ml_collections.ConfigDict,
    *,
    key: str = 'init_bert',
    extra_rows: int = 0,
) -> tuple[Any, LoadReport]:
    """`params` with every leaf a BERT checkpoint gives replaced by its value.

    `model` is `config.model`; `key` the config key that named `directory` (for messages);
    `extra_rows` the phrase concepts the word table has after BERT's vocabulary.
    Loaded leaves are built shard by shard in the sharding of the leaf they replace (each
    process reads the file and keeps only its shards).
    """
    bert = BertConfig.read(directory)
    problems = bert.mismatches(model, key)
    if problems:
        raise ConfigError('; '.join(problems))
    tensors = read_tensors(directory)
    values, skipped = bert_to_ours(
        tensors, _unrolled_shapes(params), where=str(directory), extra_rows=extra_rows
    )
    if 'stacks' in params['encoder']:
        values = _stacked(values, model.num_layers, model.num_cross_layers)

    def replace(path, leaf):
        value = values.get(jax.tree_util.keystr(path, simple=True, separator='/'))
        if value is None:
            return leaf
        if value.shape[0] < leaf.shape[0]:  # a grown table: its own rows after BERT's
            value = np.concatenate([value, np.asarray(leaf[value.shape[0] :])])
        value = value.astype(leaf.dtype)
        if not isinstance(leaf, jax.Array):  # a host tree in, a host tree out
            return value
        return jax.make_array_from_callback(leaf.shape, leaf.sharding, lambda index: value[index])

    merged = jax.tree_util.tree_map_with_path(replace, params)
    report = LoadReport(
        loaded=sorted(values),
        new=sorted(flat_shapes(params).keys() - values.keys()),
        dropped=skipped,
    )
    return merged, report


def export_bert(
    params,
    model: ml_collections.ConfigDict,
    output_dir: str | Path,
    *,
    vocab: Path | None = None,
    pad_id: int = 0,
) -> Path:
    """Writes the text side of `params` (config.model `model`) as an HF BERT checkpoint:
    `model.safetensors` in `BertForMaskedLM`'s names (`bert.` prefix, `cls.predictions.*`, the
    decoder tied), `config.json`, and `vocab` (a WordPiece `vocab.txt`) if given."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    params = jax.device_get(params)
    if 'stacks' in params['encoder']:
        params = {**params, 'encoder': unstack_layers(params['encoder'])}
    leaves = {k: np.asarray(v, np.float32) for k, v in flat_leaves(params).items()}
    tensors = {}
    for entry in name_table(model.num_layers):
        name = entry.bert if entry.bert.startswith('cls.') else f'bert.{entry.bert}'
        tensors[name] = _from_ours(entry, leaves[entry.ours])
    safetensors.numpy.save_file(tensors, output_dir / WEIGHTS_FILE, metadata={'format': 'pt'})
    word = leaves['text_embeddings/word/embedding']
    config = {
        'architectures': ['BertForMaskedLM'],
        'model_type': 'bert',
        'vocab_size': int(word.shape[0]),
        'hidden_size': model.hidden_size,
        'num_hidden_layers': model.num_layers,
        'num_attention_heads': model.num_heads,
        'intermediate_size': model.mlp_size,
        'hidden_act': GELU_TO_HIDDEN_ACT[model.get('gelu', 'exact')],
        'max_position_embeddings': int(leaves['text_embeddings/position/embedding'].shape[0]),
        'type_vocab_size': 2,
        'layer_norm_eps': model.get('layer_norm_eps', 1e-12),
        'hidden_dropout_prob': model.dropout_rate,
        'attention_probs_dropout_prob': model.dropout_rate,
        'initializer_range': 0.02,
        'pad_token_id': pad_id,
    }
    (output_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + '\n')
    if vocab is not None:
        shutil.copyfile(vocab, output_dir / VOCAB_FILE)
    return output_dir
