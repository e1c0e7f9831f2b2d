"""ViT checkpoints into the model's vision tower (`config.init_vit`), by explicit name tables.

Three formats, told apart by the path (`Checkpoint.at`):
- **HF ViT**: a directory holding HF's `config.json` (`model_type` 'vit') and
  `model.safetensors` (or the shards `model.safetensors.index.json` lists), what
  `ViTModel.save_pretrained` writes. Names with or without the `vit.` prefix of
  `ViTForImageClassification`: `embeddings.{cls_token, position_embeddings, mask_token}`,
  `embeddings.patch_embeddings.projection` (an OIHW conv), `encoder.layer.<i>.{layernorm_before,
  attention.attention.{query, key, value}, attention.output.dense, layernorm_after,
  intermediate.dense, output.dense}`, `layernorm`. config.json's sizes must be the tower's.
- **timm / DeiT**: a `.safetensors` file, or a directory whose `config.json` is timm's (it has
  `architecture`) beside `model.safetensors`: `cls_token`, `pos_embed`,
  `patch_embed.proj` (OIHW), `blocks.<i>.{norm1, attn.qkv (fused [3D, D]: query, key, value
  rows in that order), attn.proj, norm2, mlp.fc1, mlp.fc2}`, `norm`.
- **big_vision / google-research vision_transformer**: a `.npz` file, names joined by `/`,
  optionally under `params/`, `params/img/` (a two-tower model's image tower) or `opt/target/`:
  `embedding` (an HWIO conv), `cls`, `pos_embedding` [1, N, D] (big_vision: [CLS] has no
  position, so our [CLS] row is zeros) or `Transformer/posembed_input/pos_embedding`
  [1, 1 + N, D], `Transformer/encoderblock_<i>/{LayerNorm_0, MultiHeadDotProductAttention_0
  (query/key/value kernels [D, H, D/H], out [H, D/H, D]), LayerNorm_1, MlpBlock_0/Dense_{0,1}}`
  (the original ViT checkpoints number them `MultiHeadDotProductAttention_1`, `LayerNorm_2`,
  `MlpBlock_3`), `Transformer/encoder_norm`. A scanned `Transformer/encoderblock/...` (a leading
  layers axis) is read as its layers.
Neither timm nor big_vision stores the LayerNorm epsilon: both use 1e-6, which the tower must
have; a timm file does not say its number of heads either (the fused qkv hides it), so the
tower's is taken as it is.

PyTorch Linear weights are [out, in], our kernels [in, out]; Flax Dense kernels are [in, out]
already. The patch kernel `visual_embeddings/patch/kernel` [P*P*3, width] is the HWIO conv
kernel [P, P, 3, width] reshaped (an OIHW one is transposed (2, 3, 1, 0) first), see
`models/vision.py`.

Position tables: the [CLS] row then the patch rows of a square grid. A checkpoint whose grid
differs from the model's (`grid_size`) is resampled bilinearly (`resample_positions`) and the
report says so. DeiT's distilled checkpoints put a `dist_token` after [CLS]: its position row
(`pos_embed` row 1) is removed, and the token itself is dropped, like every head.

As for BERT (`weights/hf_bert.py`), whatever the table does not account for is an error
listing the names: a tensor it needs that the file lacks, a tensor no entry takes, a shape that
does not fit (with a hint when it is a transpose). Tensors known to have no counterpart are
skipped and reported as dropped: HF's `pooler.*` and `classifier.*`; timm's `head.*`,
`head_dist.*`, `fc_norm.*` (the norm of a global-average-pool head), `pre_logits.*` and
`dist_token`; big_vision's `head/*`, `pre_logits/*`, `MAPHead_0/*` and, in a file with a
prefix, every name outside it (a two-tower model's text tower). What no format provides stays
as initialised and is reported as new: the mask token (unless an HF file has one), the
projection to the encoder's width, `visual_embeddings/norm` and everything outside the vision
side. A model without a tower (`vision_tower.num_layers == 0`) is refused: the checkpoint's
blocks would have nowhere to go.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import safetensors
import safetensors.numpy
from flax import nnx

from semvlp_jax.checkpoint import flat_shapes
from semvlp_jax.errors import ConfigError, MissingConfigFile
from semvlp_jax.models.vision import CHANNELS, PatchEmbeddings, TowerConfig, grid_size
from semvlp_jax.pretrained import LoadReport
from semvlp_jax.weights.hf_bert import WeightsError, read_config_json

CONFIG_FILE = 'config.json'
WEIGHTS_FILE = 'model.safetensors'
INDEX_FILE = 'model.safetensors.index.json'

HF, TIMM, BIG_VISION = 'hf_vit', 'timm', 'big_vision'
FORMATS = (HF, TIMM, BIG_VISION)
OURS = 'visual_embeddings'  # where the vision side's leaves live in the model's params
# timm's and big_vision's LayerNorm epsilon (neither file stores it).
FILE_EPS = 1e-6

# Tower size (TowerConfig field) -> HF config.json key; `patch_size` is config.model's own.
HF_SIZE_KEYS = {
    'width': 'hidden_size',
    'num_heads': 'num_attention_heads',
    'mlp_size': 'intermediate_size',
    'num_layers': 'num_hidden_layers',
    'layer_norm_eps': 'layer_norm_eps',
    'patch_size': 'patch_size',
}

# Name prefixes (or whole names) of tensors that have no counterpart here, by format.
DROPPED = {
    HF: ('pooler.', 'classifier.'),
    TIMM: ('head.', 'head_dist.', 'fc_norm.', 'pre_logits.', 'dist_token'),
    BIG_VISION: ('head/', 'pre_logits/', 'MAPHead_0/'),
}
# timm tensors that change what the blocks compute: an error saying why, not "unexpected".
UNSUPPORTED = {
    r'blocks\.\d+\.ls[12]\.gamma': 'LayerScale (DeiT III), which the tower does not have',
    r'reg_token': 'register tokens, which the tower does not have',
    r'norm_pre\.(weight|bias)': "a LayerNorm before the blocks (CLIP's ln_pre), which the "
    'tower does not have',
    r'blocks\.\d+\.attn\.[qk]_norm\.(weight|bias)': 'query/key normalisation, which the tower '
    'does not have',
}
# Prefixes a big_vision / vision_transformer .npz may put before the image model's names.
NPZ_PREFIXES = ('params/img/', 'params/', 'opt/target/', '')
# big_vision's numbering of a block's sub-modules, and the original ViT checkpoints'.
NPZ_NUMBERINGS = {
    'big_vision': {'attention': 0, 'norm2': 1, 'mlp': 0},
    'vision_transformer': {'attention': 1, 'norm2': 2, 'mlp': 3},
}
SCANNED_BLOCK = 'Transformer/encoderblock/'


@dataclasses.dataclass
class VitLoadReport(LoadReport):
    """A LoadReport with sentences about what the import changed (a resampled grid, a removed
    distillation position), which its summary ends with."""

    notes: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        return super().summary() + ''.join(f'; {note}' for note in self.notes)


# ---------------------------------------------------------------------------------- the sizes


@dataclasses.dataclass(frozen=True)
class VitSizes:
    """What a checkpoint says about its ViT (None: it does not say, or the tensor that would
    is absent, which the name table then reports). `said` spells each known value the way the
    checkpoint gives it, for messages."""

    width: int | None
    num_heads: int | None
    mlp_size: int | None
    num_layers: int
    patch_size: int | None
    layer_norm_eps: float
    grid: int | None  # patches per side of its position table
    said: Mapping[str, str]
    problems: tuple[str, ...] = ()  # what makes the checkpoint unusable whatever the model

    def model_config(self, num_heads: int | None = None) -> dict[str, Any]:
        """The `config.model` values of a model with this checkpoint's tower, at its image size
        (`num_heads` where the checkpoint does not say)."""
        heads = self.num_heads if self.num_heads is not None else num_heads
        return dict(
            visual_input='patches',
            image_size=self.grid * self.patch_size,
            patch_size=self.patch_size,
            hidden_size=self.width,
            vision_tower=dict(
                num_layers=self.num_layers,
                width=self.width,
                num_heads=heads,
                mlp_size=self.mlp_size,
                layer_norm_eps=self.layer_norm_eps,
            ),
        )

    def mismatches(self, model: ml_collections.ConfigDict, key: str) -> list[str]:
        """Sentences naming each `config.model` value that differs from this checkpoint (which
        config key `key` names)."""
        problems = list(self.problems)
        tower = TowerConfig.from_config(model)
        for field in HF_SIZE_KEYS:
            theirs = getattr(self, field)
            if field == 'patch_size':
                ours, name = model.get('patch_size'), 'config.model.patch_size'
            else:
                ours, name = getattr(tower, field), f'config.model.vision_tower.{field}'
            if theirs is not None and ours != theirs:
                problems.append(f'{name}={ours} but config.{key} has {self.said[field]}')
        return problems


def _hf_sizes(directory: Path) -> VitSizes:
    path = directory / CONFIG_FILE
    required = tuple(k for k in (*HF_SIZE_KEYS.values(), 'image_size') if k != 'layer_norm_eps')
    raw = read_config_json(path, required)
    raw.setdefault('layer_norm_eps', 1e-12)  # HF ViTConfig's default
    problems = []
    if raw.get('model_type', 'vit') != 'vit':
        problems.append(
            f'{path}: model_type={raw["model_type"]!r}; this reads HF ViT (model_type "vit")'
        )
    if raw.get('hidden_act', 'gelu') != 'gelu':
        problems.append(
            f'{path}: hidden_act={raw["hidden_act"]!r}; the tower computes exact GELU '
            '(hidden_act "gelu")'
        )
    if not raw.get('qkv_bias', True):
        problems.append(f'{path}: qkv_bias=false; the tower has query, key and value biases')
    if raw.get('num_channels', CHANNELS) != CHANNELS:
        problems.append(f'{path}: num_channels={raw["num_channels"]}; pixels have {CHANNELS}')
    sizes = {}
    for field, name in (*HF_SIZE_KEYS.items(), ('image_size', 'image_size')):
        value = raw[name]
        if isinstance(value, list | tuple):  # [height, width]
            if len(set(value)) != 1:
                problems.append(f'{path}: {name}={value}; the tower reads square images')
            value = value[0]
        sizes[field] = value
    if sizes['image_size'] % sizes['patch_size']:
        problems.append(
            f'{path}: image_size={sizes["image_size"]} is not a multiple of '
            f'patch_size={sizes["patch_size"]}'
        )
    return VitSizes(
        width=sizes['width'],
        num_heads=sizes['num_heads'],
        mlp_size=sizes['mlp_size'],
        num_layers=sizes['num_layers'],
        patch_size=sizes['patch_size'],
        layer_norm_eps=sizes['layer_norm_eps'],
        grid=sizes['image_size'] // sizes['patch_size'],
        said={field: f'{name}={sizes[field]}' for field, name in HF_SIZE_KEYS.items()},
        problems=tuple(problems),
    )


def _square_root(n: int) -> int | None:
    root = math.isqrt(n) if n > 0 else 0
    return root if root and root * root == n else None


def _position_rows(rows: int, before: int) -> tuple[int, int | None]:
    """(token rows before the patch rows, patches per side) of a position table of `rows`
    rows: `before` token rows if the rest is a square grid, else none if all rows are (the
    tokens get no position), else (`before`, None)."""
    for prefix in (before, 0):
        grid = _square_root(rows - prefix)
        if grid is not None:
            return prefix, grid
    return before, None


def _shape_sizes(fmt: str, shapes: Mapping[str, tuple[int, ...]], table: _Table) -> VitSizes:
    """A timm or big_vision checkpoint's sizes, read from its tensors' shapes."""

    def size(name, axis):
        shape = shapes.get(name)
        return shape[axis] if shape is not None and -len(shape) <= axis < len(shape) else None

    def said(name, what, value):
        shape = list(shapes[name]) if name in shapes else '?'
        return f'{what} {value} ({name} {shape})'

    t = table
    width = size(t.patch_bias, 0)
    values = {
        'width': (width, t.patch_bias, 'width'),
        'num_heads': (
            size(t.heads_from, 1) if t.heads_from else None,
            t.heads_from,
            'num_heads',
        ),
        'mlp_size': (size(t.mlp_from, t.mlp_axis), t.mlp_from, 'mlp size'),
        'patch_size': (size(t.patch_kernel, t.patch_axis), t.patch_kernel, 'patch size'),
    }
    grid = None
    if t.positions in shapes and len(shapes[t.positions]) == 3:
        grid = _position_rows(shapes[t.positions][1], t.position_prefix)[1]
    said_ = {field: said(name, what, value) for field, (value, name, what) in values.items()}
    said_['num_layers'] = f'{t.num_layers} blocks'
    said_['layer_norm_eps'] = (
        f'layer_norm_eps {FILE_EPS} ({fmt} LayerNorms use it; the file does not store it)'
    )
    return VitSizes(
        width=width,
        num_heads=values['num_heads'][0],
        mlp_size=values['mlp_size'][0],
        num_layers=t.num_layers,
        patch_size=values['patch_size'][0],
        layer_norm_eps=FILE_EPS,
        grid=grid,
        said=said_,
    )


# ---------------------------------------------------------------------------------- the tables


@dataclasses.dataclass(frozen=True)
class Entry:
    """One tensor: the checkpoint's (canonical) name, our leaf path, and how it converts:
    `copy`; `linear` (PyTorch [out, in], transposed); `token` ([1, 1, D] -> [D]); `conv_oihw`
    / `conv_hwio` (a patch conv kernel -> [P*P*3, D]); `qkv_linear` / `qkv_bias` (third `third`
    of timm's fused query-key-value rows); `heads_in` ([D, H, D/H] -> [D, D]), `heads_bias`
    ([H, D/H] -> [D]), `heads_out` ([H, D/H, D] -> [D, D]); `positions` ([1, `prefix_rows` +
    N, D], the patch rows after `prefix_rows` token rows, -> [1 + N', D])."""

    theirs: str
    ours: str
    kind: str
    third: int = 0
    prefix_rows: int = 1


@dataclasses.dataclass(frozen=True)
class _Table:
    """A format's name table for a file, and the names its sizes are read from."""

    entries: tuple[Entry, ...]
    num_layers: int  # the file's
    patch_kernel: str
    patch_axis: int  # the axis of patch_kernel that is P
    patch_bias: str
    positions: str
    position_prefix: int  # token rows (cls, dist) before the patch rows in the file
    mlp_from: str
    mlp_axis: int
    heads_from: str | None  # a name whose axis 1 is the number of heads


class _Builder:
    def __init__(self):
        self.entries: list[Entry] = []

    def add(self, theirs, ours, kind, **kw):
        self.entries.append(Entry(theirs, f'{OURS}/{ours}', kind, **kw))

    def torch_linear(self, theirs, ours):
        self.add(f'{theirs}.weight', f'{ours}/kernel', 'linear')
        self.add(f'{theirs}.bias', f'{ours}/bias', 'copy')

    def torch_norm(self, theirs, ours):
        self.add(f'{theirs}.weight', f'{ours}/scale', 'copy')
        self.add(f'{theirs}.bias', f'{ours}/bias', 'copy')

    def flax(self, theirs, ours, kernel='copy', bias='copy', scale=False):
        weight = 'scale' if scale else 'kernel'  # a LayerNorm's, or a Dense's / conv's
        self.add(f'{theirs}/{weight}', f'{ours}/{weight}', kernel)
        self.add(f'{theirs}/bias', f'{ours}/bias', bias)


def _block(i: int) -> str:
    return f'tower/blocks/{i}'


def _layers(names, pattern: str) -> int:
    """How many layers `names` hold: 1 + the largest index `pattern` (a regex, one group)
    finds, 0 if none."""
    found = [int(m.group(1)) for m in map(re.compile(pattern).match, names) if m]
    return 1 + max(found) if found else 0


def _hf_table(names, num_layers: int) -> _Table:
    b = _Builder()
    b.add('embeddings.cls_token', 'cls', 'token')
    if 'embeddings.mask_token' in names:  # ViTModel(use_mask_token=True)
        b.add('embeddings.mask_token', 'mask_token', 'token')
    b.add('embeddings.position_embeddings', 'position', 'positions', prefix_rows=1)
    b.add('embeddings.patch_embeddings.projection.weight', 'patch/kernel', 'conv_oihw')
    b.add('embeddings.patch_embeddings.projection.bias', 'patch/bias', 'copy')
    for i in range(num_layers):
        layer, ours = f'encoder.layer.{i}', _block(i)
        b.torch_norm(f'{layer}.layernorm_before', f'{ours}/norm1')
        for projection in ('query', 'key', 'value'):
            b.torch_linear(
                f'{layer}.attention.attention.{projection}', f'{ours}/attention/{projection}'
            )
        b.torch_linear(f'{layer}.attention.output.dense', f'{ours}/attention/output')
        b.torch_norm(f'{layer}.layernorm_after', f'{ours}/norm2')
        b.torch_linear(f'{layer}.intermediate.dense', f'{ours}/mlp/expand')
        b.torch_linear(f'{layer}.output.dense', f'{ours}/mlp/contract')
    b.torch_norm('layernorm', 'tower/norm')
    return _Table(
        entries=tuple(b.entries),
        num_layers=_layers(names, r'encoder\.layer\.(\d+)\.'),
        patch_kernel='embeddings.patch_embeddings.projection.weight',
        patch_axis=-1,
        patch_bias='embeddings.patch_embeddings.projection.bias',
        positions='embeddings.position_embeddings',
        position_prefix=1,
        mlp_from='encoder.layer.0.intermediate.dense.weight',
        mlp_axis=0,
        heads_from=None,
    )


def _timm_table(shapes: Mapping[str, tuple[int, ...]], num_layers: int) -> _Table:
    names = shapes.keys()
    b = _Builder()
    b.add('cls_token', 'cls', 'token')
    # [CLS] (and DeiT's dist_token) rows first; a table of patch rows only (no_embed_class) too.
    before = 2 if 'dist_token' in names else 1
    rows = shapes.get('pos_embed', (1, before, 0))
    prefix = _position_rows(rows[1], before)[0] if len(rows) == 3 else before
    b.add('pos_embed', 'position', 'positions', prefix_rows=prefix)
    b.add('patch_embed.proj.weight', 'patch/kernel', 'conv_oihw')
    b.add('patch_embed.proj.bias', 'patch/bias', 'copy')
    for i in range(num_layers):
        block, ours = f'blocks.{i}', _block(i)
        b.torch_norm(f'{block}.norm1', f'{ours}/norm1')
        for third, projection in enumerate(('query', 'key', 'value')):
            b.add(
                f'{block}.attn.qkv.weight',
                f'{ours}/attention/{projection}/kernel',
                'qkv_linear',
                third=third,
            )
            b.add(
                f'{block}.attn.qkv.bias',
                f'{ours}/attention/{projection}/bias',
                'qkv_bias',
                third=third,
            )
        b.torch_linear(f'{block}.attn.proj', f'{ours}/attention/output')
        b.torch_norm(f'{block}.norm2', f'{ours}/norm2')
        b.torch_linear(f'{block}.mlp.fc1', f'{ours}/mlp/expand')
        b.torch_linear(f'{block}.mlp.fc2', f'{ours}/mlp/contract')
    b.torch_norm('norm', 'tower/norm')
    return _Table(
        entries=tuple(b.entries),
        num_layers=_layers(names, r'blocks\.(\d+)\.'),
        patch_kernel='patch_embed.proj.weight',
        patch_axis=-1,
        patch_bias='patch_embed.proj.bias',
        positions='pos_embed',
        position_prefix=prefix,
        mlp_from='blocks.0.mlp.fc1.weight',
        mlp_axis=0,
        heads_from=None,
    )


def _npz_table(names, num_layers: int) -> _Table:
    attention_1 = 'Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel'
    numbering = NPZ_NUMBERINGS['vision_transformer' if attention_1 in names else 'big_vision']
    b = _Builder()
    b.flax('embedding', 'patch', kernel='conv_hwio')
    b.add('cls', 'cls', 'token')
    if 'pos_embedding' in names:  # big_vision: patch rows only, [CLS] has no position
        positions, prefix = 'pos_embedding', 0
    else:
        positions, prefix = 'Transformer/posembed_input/pos_embedding', 1
    b.add(positions, 'position', 'positions', prefix_rows=prefix)
    attention = f'MultiHeadDotProductAttention_{numbering["attention"]}'
    for i in range(num_layers):
        block, ours = f'Transformer/encoderblock_{i}', _block(i)
        b.flax(f'{block}/LayerNorm_0', f'{ours}/norm1', scale=True)
        for projection in ('query', 'key', 'value'):
            b.flax(
                f'{block}/{attention}/{projection}',
                f'{ours}/attention/{projection}',
                kernel='heads_in',
                bias='heads_bias',
            )
        b.flax(f'{block}/{attention}/out', f'{ours}/attention/output', kernel='heads_out')
        b.flax(f'{block}/LayerNorm_{numbering["norm2"]}', f'{ours}/norm2', scale=True)
        mlp = f'{block}/MlpBlock_{numbering["mlp"]}'
        b.flax(f'{mlp}/Dense_0', f'{ours}/mlp/expand')
        b.flax(f'{mlp}/Dense_1', f'{ours}/mlp/contract')
    b.flax('Transformer/encoder_norm', 'tower/norm', scale=True)
    return _Table(
        entries=tuple(b.entries),
        num_layers=_layers(names, r'Transformer/encoderblock_(\d+)/'),
        patch_kernel='embedding/kernel',
        patch_axis=0,
        patch_bias='embedding/bias',
        positions=positions,
        position_prefix=prefix,
        mlp_from=f'Transformer/encoderblock_0/MlpBlock_{numbering["mlp"]}/Dense_0/kernel',
        mlp_axis=1,
        heads_from=f'Transformer/encoderblock_0/{attention}/query/kernel',
    )


# ---------------------------------------------------------------------------------- the files


def _safetensors_headers(files) -> dict[str, tuple[Path, tuple[int, ...]]]:
    """Each tensor's file and shape, from the headers."""
    stored = {}
    for file in files:
        try:
            with safetensors.safe_open(file, framework='numpy') as f:
                for name in f.keys():
                    stored[name] = (file, tuple(f.get_slice(name).get_shape()))
        except Exception as e:  # safetensors raises its own error types for a damaged file
            raise WeightsError(f'{file}: not a readable safetensors file ({e})') from None
    return stored


def _npz_headers(file: Path) -> dict[str, tuple[Path, tuple[int, ...]]]:
    """Each array's file and shape, from its .npy header, without reading the data."""
    stored = {}
    try:
        with zipfile.ZipFile(file) as archive:
            for info in archive.infolist():
                with archive.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    stored[info.filename.removesuffix('.npy')] = (file, tuple(read(f)[0]))
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise WeightsError(f'{file}: not a readable .npz file ({e})') from None
    return stored


def _read_stored(fmt: str, names: Mapping[str, Path]) -> dict[str, np.ndarray]:
    """The stored tensors `names` (name -> its file) as arrays."""
    by_file: dict[Path, list[str]] = {}
    for name, file in names.items():
        by_file.setdefault(file, []).append(name)
    arrays = {}
    for file, wanted in by_file.items():
        try:
            if fmt == BIG_VISION:
                with np.load(file, allow_pickle=False) as npz:
                    arrays.update((name, npz[name]) for name in wanted)
            else:
                with safetensors.safe_open(file, framework='numpy') as f:
                    arrays.update((name, f.get_tensor(name)) for name in wanted)
        except Exception as e:  # as in the headers: the file's own error types
            raise WeightsError(f'{file}: cannot read {len(wanted)} tensor(s) ({e})') from None
    return arrays


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A ViT checkpoint on disk: its format and files."""

    format: str
    path: Path
    files: tuple[Path, ...]

    @classmethod
    def at(cls, path: str | Path, key: str = 'init_vit') -> Checkpoint:
        """The checkpoint at `path` (named by config key `key`), its format told by the path:
        a directory (HF, or timm's hub layout), a `.safetensors` file (timm) or a `.npz` file
        (big_vision)."""
        path = Path(path)
        if path.is_dir():
            config = path / CONFIG_FILE
            if not config.is_file():
                raise MissingConfigFile(
                    f'config.{key}={str(path)!r}: no {CONFIG_FILE}; an HF ViT checkpoint '
                    f'directory holds {CONFIG_FILE} and {WEIGHTS_FILE} (what save_pretrained '
                    'writes); a timm or big_vision checkpoint is a .safetensors or .npz file'
                )
            try:
                raw = json.loads(config.read_text())
            except json.JSONDecodeError as e:
                raise WeightsError(f'{config}: not valid JSON ({e})') from None
            fmt = TIMM if 'architecture' in raw and 'model_type' not in raw else HF
            if (path / WEIGHTS_FILE).is_file():
                files = (path / WEIGHTS_FILE,)
            elif fmt == HF and (path / INDEX_FILE).is_file():
                weight_map = json.loads((path / INDEX_FILE).read_text())['weight_map']
                files = tuple(path / name for name in sorted(set(weight_map.values())))
            else:
                raise MissingConfigFile(
                    f'config.{key}={str(path)!r}: no {WEIGHTS_FILE}; a pytorch_model.bin needs '
                    'PyTorch to read: load it there and save it as safetensors'
                )
            return cls(fmt, path, files)
        if path.is_file() and path.suffix == '.safetensors':
            return cls(TIMM, path, (path,))
        if path.is_file() and path.suffix == '.npz':
            return cls(BIG_VISION, path, (path,))
        if not path.exists():
            raise MissingConfigFile(f'config.{key}={str(path)!r}: no such file or directory')
        raise WeightsError(
            f'config.{key}={str(path)!r}: not a ViT checkpoint this reads: an HF directory '
            f'({CONFIG_FILE}, {WEIGHTS_FILE}), a timm .safetensors file or a big_vision .npz'
        )

    def stored(self) -> dict[str, tuple[Path, tuple[int, ...]]]:
        """Every tensor the files hold: its stored name -> (file, shape), from the headers."""
        if self.format == BIG_VISION:
            return _npz_headers(self.files[0])
        return _safetensors_headers(self.files)

    def sources(self, stored) -> tuple[dict[str, tuple[str, int | None]], list[str]]:
        """Canonical name -> (stored name, layer of a scanned tensor or None), and the stored
        names a big_vision prefix leaves out. Canonical: HF's without `vit.`, big_vision's
        without its prefix and with a scanned `Transformer/encoderblock/...` split into
        `Transformer/encoderblock_<i>/...`; timm's as stored."""
        sources: dict[str, tuple[str, int | None]] = {}
        if self.format == HF:
            for name in stored:
                key = name.removeprefix('vit.')
                if key in sources:
                    raise WeightsError(
                        f'{self.path}: {name!r} and {sources[key][0]!r} are the same tensor ({key})'
                    )
                sources[key] = (name, None)
            return sources, []
        if self.format == TIMM:
            return {name: (name, None) for name in stored}, []
        prefix = next((p for p in NPZ_PREFIXES if f'{p}embedding/kernel' in stored), '')
        outside = []
        for name, (_, shape) in stored.items():
            if not name.startswith(prefix):
                outside.append(name)
                continue
            key = name[len(prefix) :]
            if key.startswith(SCANNED_BLOCK) and shape:  # [layers, ...]: one tensor per layer
                rest = key[len(SCANNED_BLOCK) :]
                sources.update(
                    (f'Transformer/encoderblock_{i}/{rest}', (name, i)) for i in range(shape[0])
                )
            else:
                sources[key] = (name, None)
        return sources, sorted(outside)

    def shapes(self) -> tuple[dict[str, tuple[int, ...]], list[str]]:
        """Canonical name -> shape, from the headers only; and the names left out."""
        stored = self.stored()
        sources, outside = self.sources(stored)
        shapes = {}
        for key, (name, layer) in sources.items():
            shape = stored[name][1]
            shapes[key] = shape if layer is None else shape[1:]
        return shapes, outside

    def read(self, keys) -> dict[str, np.ndarray]:
        """The tensors of canonical names `keys`, float32 (only those are read)."""
        stored = self.stored()
        sources, _ = self.sources(stored)
        wanted = {sources[key][0] for key in keys}
        arrays = _read_stored(self.format, {name: stored[name][0] for name in wanted})
        out = {}
        for key in keys:
            name, layer = sources[key]
            value = arrays[name] if layer is None else arrays[name][layer]
            out[key] = np.asarray(value, np.float32)
        return out

    def table(self, shapes: Mapping[str, tuple[int, ...]], num_layers: int) -> _Table:
        """The name table for a tower of `num_layers` blocks."""
        if self.format == HF:
            return _hf_table(shapes.keys(), num_layers)
        if self.format == TIMM:
            return _timm_table(shapes, num_layers)
        return _npz_table(shapes.keys(), num_layers)

    def sizes(self, shapes: Mapping[str, tuple[int, ...]] | None = None) -> VitSizes:
        """What the checkpoint says about its sizes: HF's config.json; timm's and big_vision's
        tensor shapes (`shapes`, canonical; read from the headers if not given)."""
        if self.format == HF:
            return _hf_sizes(self.path)
        if shapes is None:
            shapes = self.shapes()[0]
        table = self.table(shapes, 0)
        return _shape_sizes(self.format, shapes, table)


def checkpoint_sizes(path: str | Path, key: str = 'init_vit') -> VitSizes:
    """The sizes of the ViT checkpoint at `path` (any of the three formats)."""
    return Checkpoint.at(path, key).sizes()


# ---------------------------------------------------------------------------------- matching


def resample_positions(position: np.ndarray, new_grid: int) -> np.ndarray:
    """A position table [1 + N, D] ([CLS] row first, then the patch rows of a square
    sqrt(N) x sqrt(N) grid, row-major) for a grid of `new_grid` x `new_grid` patches:
    [1 + new_grid**2, D], the [CLS] row unchanged, the patch grid resized bilinearly.

    `jax.image.resize(..., 'bilinear', antialias=False)`: half-pixel centres (sample i of the
    new grid sits at (i + 0.5) * g / g' - 0.5 of the old one, clamped to its edge samples) and
    no antialiasing when shrinking, as PyTorch's `F.interpolate(mode='bilinear',
    align_corners=False)`, which timm uses for .npz checkpoints. (big_vision's own
    `resample_posemb` uses `scipy.ndimage.zoom(order=1)`, which aligns the corner samples
    instead: the same grid size, slightly different values inside.) The identity when the
    grids agree. A non-square N is a WeightsError."""
    position = np.asarray(position, np.float32)
    if position.ndim != 2 or position.shape[0] < 2:
        raise WeightsError(f'a position table is [1 + N, D]; got shape {list(position.shape)}')
    patches = position.shape[0] - 1
    grid = _square_root(patches)
    if grid is None:
        raise WeightsError(
            f'a position table with {patches} patch rows (after the [CLS] row): not a square '
            'grid, so it cannot be resampled'
        )
    if grid == new_grid:
        return position
    width = position.shape[1]
    resized = jax.image.resize(
        jnp.asarray(position[1:].reshape(grid, grid, width)),
        (new_grid, new_grid, width),
        method='bilinear',
        antialias=False,
    )
    return np.concatenate([position[:1], np.asarray(resized).reshape(new_grid**2, width)])


@dataclasses.dataclass(frozen=True)
class _Context:
    patch_size: int
    num_heads: int
    grid: int  # the model's


def _theirs_shape(entry: Entry, ours: tuple[int, ...], c: _Context) -> tuple[int, ...]:
    """The shape the checkpoint's tensor must have for our leaf of shape `ours` (positions:
    at the model's own grid)."""
    p, h = c.patch_size, c.num_heads
    kind = entry.kind
    if kind == 'linear':
        return ours[::-1]
    if kind == 'token':
        return (1, 1, *ours)
    if kind == 'conv_oihw':
        return (ours[1], CHANNELS, p, p)
    if kind == 'conv_hwio':
        return (p, p, CHANNELS, ours[1])
    if kind == 'qkv_linear':
        return (3 * ours[1], ours[0])
    if kind == 'qkv_bias':
        return (3 * ours[0],)
    if kind == 'heads_in':
        return (ours[0], h, ours[1] // h)
    if kind == 'heads_bias':
        return (h, ours[0] // h)
    if kind == 'heads_out':
        return (h, ours[0] // h, ours[1])
    if kind == 'positions':
        return (1, entry.prefix_rows + c.grid**2, ours[1])
    return ours


def _fits(entry: Entry, shape: tuple[int, ...], ours: tuple[int, ...], c: _Context) -> bool:
    if entry.kind == 'positions':  # any square grid: resampled
        return (
            len(shape) == 3
            and shape[0] == 1
            and shape[2] == ours[1]
            and _square_root(shape[1] - entry.prefix_rows) is not None
        )
    return tuple(shape) == _theirs_shape(entry, ours, c)


def _hint(entry: Entry, shape: tuple[int, ...], expected: tuple[int, ...]) -> str:
    if shape == shape[::-1]:
        return ''  # a square matrix's transpose cannot show
    if entry.kind in ('linear', 'qkv_linear') and shape == expected[::-1]:
        return ' (transposed? PyTorch Linear weights are [out, in])'
    if entry.kind == 'conv_oihw' and shape == (*expected[2:], *expected[1::-1]):
        return ' (an HWIO kernel? PyTorch conv weights are [out, in, P, P])'
    if entry.kind == 'conv_hwio' and shape == (expected[3], expected[2], *expected[:2]):
        return ' (an OIHW kernel? Flax conv kernels are [P, P, in, out])'
    if entry.kind not in ('linear', 'qkv_linear') and shape == expected[::-1]:
        return ' (transposed?)'
    return ''


def _describe(entry: Entry, expected: tuple[int, ...]) -> str:
    if entry.kind == 'positions':
        rows = f'{entry.prefix_rows} + g*g' if entry.prefix_rows else 'g*g'
        return (
            f'[1, {rows}, {expected[2]}] (g = {math.isqrt(expected[1] - entry.prefix_rows)} here)'
        )
    return str(list(expected))


def _dropped_by_rule(fmt: str, name: str) -> bool:
    return any(
        name == rule or (rule[-1] in './' and name.startswith(rule)) for rule in DROPPED[fmt]
    )


@dataclasses.dataclass(frozen=True)
class Plan:
    """What an import does: the entries to convert, the names dropped and notes for the
    report."""

    entries: tuple[Entry, ...]
    dropped: list[str]
    notes: list[str]


def plan(
    checkpoint: Checkpoint,
    shapes: Mapping[str, tuple[int, ...]],
    outside: list[str],
    ours: Mapping[str, tuple[int, ...]],
    model: ml_collections.ConfigDict,
) -> Plan:
    """Matches the checkpoint's tensors (canonical name -> shape) with our leaves (`ours`, leaf
    path -> shape) through the format's name table; raises WeightsError listing every tensor
    that does not map."""
    tower = TowerConfig.from_config(model)
    context = _Context(model.patch_size, tower.num_heads, grid_size(model))
    table = checkpoint.table(shapes, tower.num_layers)
    problems: list[str] = []
    for entry in table.entries:
        if entry.theirs not in shapes:
            also = (
                ' (or pos_embedding)'
                if entry.theirs.endswith('posembed_input/pos_embedding')
                else ''
            )
            hint = ''
            if entry.theirs == 'norm.weight' and 'fc_norm.weight' in shapes:
                hint = (
                    '; this file pools with fc_norm (a global-average-pool head), the tower '
                    'ends in a LayerNorm over every token'
                )
            problems.append(f'missing {entry.theirs}{also} (for {entry.ours}){hint}')
            continue
        if entry.ours not in ours:
            problems.append(f'{entry.theirs}: the model has no {entry.ours}')
            continue
        shape, leaf = tuple(shapes[entry.theirs]), ours[entry.ours]
        if not _fits(entry, shape, leaf, context):
            expected = _theirs_shape(entry, leaf, context)
            problems.append(
                f'{entry.theirs}: shape {list(shape)}, expected {_describe(entry, expected)} '
                f'for {entry.ours}{_hint(entry, shape, expected)}'
            )
    known = {e.theirs for e in table.entries}
    dropped = []
    for name in sorted(shapes.keys() - known):
        if _dropped_by_rule(checkpoint.format, name):
            dropped.append(name)
            continue
        reason = next((r for p, r in UNSUPPORTED.items() if re.fullmatch(p, name)), None)
        if checkpoint.format == TIMM and reason:
            problems.append(f'unsupported {name}: {reason}')
        else:
            problems.append(f'unexpected {name}: no entry of the name table takes it')
    if problems:
        problems = list(dict.fromkeys(problems))  # a fused qkv tensor is three entries
        raise WeightsError(
            f'{checkpoint.path}: {len(problems)} tensor(s) do not map onto the vision tower '
            f'({tower.num_layers} blocks, width {tower.width}):\n  ' + '\n  '.join(problems)
        )
    notes = []
    position = next(e for e in table.entries if e.kind == 'positions')
    rows = shapes[position.theirs][1]
    grid = _square_root(rows - position.prefix_rows)
    if position.prefix_rows == 0:
        notes.append(
            f'{position.theirs} has no [CLS] row ([CLS] gets no position there): our [CLS] '
            'position row is zeros'
        )
    if position.prefix_rows == 2:
        dropped.append(f'{position.theirs} row 1 (the dist_token position)')
    if grid != context.grid:
        notes.append(
            f'position embeddings resampled from a {grid}x{grid} grid to '
            f'{context.grid}x{context.grid} (bilinear)'
        )
    return Plan(table.entries, sorted(outside) + dropped, notes)


def _to_ours(entry: Entry, value: np.ndarray, grid: int) -> np.ndarray:
    kind = entry.kind
    if kind == 'linear':
        return value.T
    if kind in ('token', 'heads_bias'):
        return value.reshape(-1)
    if kind == 'conv_oihw':
        return value.transpose(2, 3, 1, 0).reshape(-1, value.shape[0])
    if kind == 'conv_hwio':
        return value.reshape(-1, value.shape[-1])
    if kind in ('qkv_linear', 'qkv_bias'):
        third = value.shape[0] // 3
        part = value[entry.third * third : (entry.third + 1) * third]
        return part.T if kind == 'qkv_linear' else part
    if kind == 'heads_in':
        return value.reshape(value.shape[0], -1)
    if kind == 'heads_out':
        return value.reshape(-1, value.shape[-1])
    if kind == 'positions':
        rows = value[0]
        cls = rows[:1] if entry.prefix_rows else np.zeros_like(rows[:1])
        return resample_positions(np.concatenate([cls, rows[entry.prefix_rows :]]), grid)
    return value


def _require_tower(model: ml_collections.ConfigDict, key: str) -> None:
    if model.get('visual_input') != 'patches':
        raise ConfigError(
            f'config.{key} imports a ViT, which reads pixels: it needs '
            f"config.model.visual_input='patches' (not {model.get('visual_input')!r})"
        )
    tower = TowerConfig.from_config(model)
    if tower.num_layers <= 0:
        raise ConfigError(
            f"config.{key} needs a vision tower for the checkpoint's blocks: "
            f'config.model.vision_tower.num_layers={tower.num_layers} (no tower); set it and '
            "the tower's sizes to the checkpoint's"
        )


def expected_shapes(model: ml_collections.ConfigDict) -> dict[str, tuple[int, ...]]:
    """Our vision side's leaf shapes (`visual_embeddings/...`) for `config.model` `model`,
    without allocating it."""
    abstract = nnx.eval_shape(lambda: PatchEmbeddings(model, rngs=nnx.Rngs(0)))
    return flat_shapes({OURS: nnx.to_pure_dict(nnx.state(abstract, nnx.Param))})


def check_vit(path: str | Path, model: ml_collections.ConfigDict, *, key: str = 'init_vit') -> Plan:
    """What `load_vit` would do, read from config.json and the tensors' headers only: raises
    ConfigError (a size that is not the model's, no tower) or WeightsError (a tensor that does
    not map) before anything is loaded."""
    _require_tower(model, key)
    checkpoint = Checkpoint.at(path, key)
    shapes, outside = checkpoint.shapes()
    problems = checkpoint.sizes(shapes).mismatches(model, key)
    if problems:
        raise ConfigError('; '.join(problems))
    return plan(checkpoint, shapes, outside, expected_shapes(model), model)


def load_vit(
    path: str | Path, params, model: ml_collections.ConfigDict, *, key: str = 'init_vit'
) -> tuple[Any, VitLoadReport]:
    """`params` with every vision-tower leaf the ViT checkpoint at `path` gives replaced by
    its value.

    `model` is `config.model` (pixels in, a tower of the checkpoint's sizes); `key` the config
    key that named `path` (for messages). Loaded leaves are built shard by shard in the
    sharding of the leaf they replace (each process reads the file and keeps its shards).
    """
    _require_tower(model, key)
    checkpoint = Checkpoint.at(path, key)
    shapes, outside = checkpoint.shapes()  # sizes and names first, from the headers
    problems = checkpoint.sizes(shapes).mismatches(model, key)
    if problems:
        raise ConfigError('; '.join(problems))
    leaf_shapes = flat_shapes(params)
    how = plan(checkpoint, shapes, outside, leaf_shapes, model)
    tensors = checkpoint.read({e.theirs for e in how.entries})
    grid = grid_size(model)
    values = {e.ours: _to_ours(e, tensors[e.theirs], grid) for e in how.entries}

    def replace(path, leaf):
        value = values.get(jax.tree_util.keystr(path, simple=True, separator='/'))
        if value is None:
            return leaf
        value = np.ascontiguousarray(value).astype(leaf.dtype)
        if not isinstance(leaf, jax.Array):  # a host tree in, a host tree out
            return value
        return jax.make_array_from_callback(leaf.shape, leaf.sharding, lambda index: value[index])

    merged = jax.tree_util.tree_map_with_path(replace, params)
    report = VitLoadReport(
        loaded=sorted(values),
        new=sorted(leaf_shapes.keys() - values.keys()),
        dropped=how.dropped,
        notes=how.notes,
    )
    return merged, report
