"""ViT import into the vision tower: parity with PyTorch's outputs for the HF, timm and
big_vision formats (goldens written once by tools/make_vit_golden.py), the other spellings each
format has, position resampling, the errors, the report and the config checks."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from configs import demo_pixels
from semvlp_jax import config_checks
from semvlp_jax.checkpoint import flat_leaves
from semvlp_jax.data.dims import DataDims
from semvlp_jax.errors import ConfigError, MissingConfigFile
from semvlp_jax.models.semvlp import SemVLP
from semvlp_jax.models.vision import PatchEmbeddings, patchify
from semvlp_jax.weights import convert, vit
from tests.conftest import ROOT

# A tiny random HF ViTModel (32 px, 8 px patches, width 16, 2 layers, 4 heads, MLP 32, eps
# 1e-6), the same weights in timm's and big_vision's names, and its outputs on two images.
GOLDEN_HF = ROOT / 'tests/golden/vit_tiny'
GOLDEN_TIMM = ROOT / 'tests/golden/vit_tiny_timm.safetensors'
GOLDEN_BIG_VISION = ROOT / 'tests/golden/vit_tiny_big_vision.npz'
GOLDEN_OUTPUTS = ROOT / 'tests/golden/vit_tiny_outputs.npz'
PARITY = 1e-5
HEADS = 4  # the timm file does not say


def _tower_model(path, **kw):
    kw.setdefault('num_heads', HEADS)
    return convert.vit_tower_model(path, **kw)


def _parity(model) -> float:
    return convert.check_vit_against(model, GOLDEN_OUTPUTS)['last_hidden_state']


def _hf_tensors():
    return safetensors.numpy.load_file(GOLDEN_HF / vit.WEIGHTS_FILE)


def _timm_tensors():
    return safetensors.numpy.load_file(GOLDEN_TIMM)


def _npz_arrays():
    with np.load(GOLDEN_BIG_VISION) as npz:
        return {k: npz[k] for k in npz.files}


def _hf_copy(tensors, directory, **config_changes):
    """The golden HF checkpoint with `tensors` as its weights and config.json changed."""
    directory.mkdir(parents=True, exist_ok=True)
    config = json.loads((GOLDEN_HF / vit.CONFIG_FILE).read_text())
    (directory / vit.CONFIG_FILE).write_text(json.dumps({**config, **config_changes}))
    safetensors.numpy.save_file(dict(tensors), directory / vit.WEIGHTS_FILE)
    return directory


def _timm_copy(tensors, path):
    safetensors.numpy.save_file(dict(tensors), path)
    return path


def _npz_copy(arrays, path):
    np.savez(path, **arrays)
    return path


def _model_config(**changes):
    """config.model of the pixel demo with the golden's tower (a 32 px image, 4 x 4 patches)."""
    config = demo_pixels.get_config()
    config.model.update(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        vision_tower=dict(
            num_layers=2, width=16, num_heads=HEADS, mlp_size=32, layer_norm_eps=1e-6
        ),
    )
    tower = changes.pop('vision_tower', {})
    config.model.update(changes)
    config.model.vision_tower.update(tower)
    return config


def _tower_params(model_config):
    """Host (numpy) params of the vision side alone, zeros, without initialising it."""
    abstract = nnx.eval_shape(lambda: PatchEmbeddings(model_config, rngs=nnx.Rngs(0)))
    state = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
    return {vit.OURS: jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), state)}


# ---------------------------------------------------------------------------------- parity


@pytest.mark.parametrize(
    'path, dropped, new_mask_token',
    [
        (GOLDEN_HF, ['pooler.dense.bias', 'pooler.dense.weight'], False),
        (GOLDEN_TIMM, ['head.bias', 'head.weight'], True),
        (GOLDEN_BIG_VISION, ['head/bias', 'head/kernel'], True),
    ],
    ids=['hf', 'timm', 'big_vision'],
)
def test_each_format_computes_what_pytorch_computed(path, dropped, new_mask_token):
    model, report = _tower_model(path)
    assert _parity(model) < PARITY
    assert report.dropped == dropped
    # Everything of the tower loaded; what no ViT has (the LayerNorm after the type embedding)
    # and, but for HF's, the mask token are new.
    new = ['visual_embeddings/norm/bias', 'visual_embeddings/norm/scale']
    if new_mask_token:
        new.insert(0, 'visual_embeddings/mask_token')
    assert report.new == new
    assert len(report.loaded) == 4 + 2 * 16 + 2 + (not new_mask_token)
    if path == GOLDEN_HF:
        np.testing.assert_array_equal(
            model.mask_token[...], _hf_tensors()['embeddings.mask_token'].reshape(-1)
        )
    if path == GOLDEN_BIG_VISION:
        np.testing.assert_array_equal(model.position[0], np.zeros(16))
        assert any('no [CLS] row' in note for note in report.notes)


def test_a_wrong_mapping_shows_in_the_parity_check(tmp_path):
    """The check can fail: query and key of layer 1 swapped in the file."""
    tensors = _hf_tensors()
    prefix = 'encoder.layer.1.attention.attention.'
    for part in ('weight', 'bias'):
        q, k = f'{prefix}query.{part}', f'{prefix}key.{part}'
        tensors[q], tensors[k] = tensors[k], tensors[q]
    model, _ = _tower_model(_hf_copy(tensors, tmp_path / 'swapped'))
    assert _parity(model) > 1e-2
    # ... and so do timm's fused rows taken in the wrong order (key, query, value).
    timm = _timm_tensors()
    for part in ('weight', 'bias'):
        name = f'blocks.0.attn.qkv.{part}'
        q, k, v = np.split(timm[name], 3)
        timm[name] = np.concatenate([k, q, v])
    model, _ = _tower_model(_timm_copy(timm, tmp_path / 'kqv.safetensors'))
    assert _parity(model) > 1e-2


def test_the_patch_embedding_is_the_checkpoints_convolution():
    """Our dense layer over flattened patches = the HWIO conv, stride P, no padding."""
    model, _ = _tower_model(GOLDEN_HF)
    pixels = jnp.asarray(np.load(GOLDEN_OUTPUTS)['pixels'])
    tensors = _hf_tensors()
    oihw = tensors['embeddings.patch_embeddings.projection.weight']
    conv = jax.lax.conv_general_dilated(
        pixels,
        jnp.asarray(oihw.transpose(2, 3, 1, 0)),  # OIHW -> HWIO
        window_strides=(8, 8),
        padding='VALID',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        precision=jax.lax.Precision.HIGHEST,
    )
    conv = conv + tensors['embeddings.patch_embeddings.projection.bias']
    assert conv.shape == (2, 4, 4, 16)
    ours = model.patch(patchify(pixels, 8))
    np.testing.assert_allclose(ours, conv.reshape(2, 16, 16), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------- spellings


def _hf_classification(tensors):
    """ViTForImageClassification's names: `vit.` prefix, a classifier, no pooler."""
    out = {f'vit.{k}': v for k, v in tensors.items() if not k.startswith('pooler.')}
    out['classifier.weight'] = np.ones((3, 16), np.float32)
    out['classifier.bias'] = np.zeros(3, np.float32)
    return out


def _deit_distilled(tensors):
    """A DeiT distilled checkpoint: a dist_token after [CLS], its own position row (row 1),
    and a second head."""
    pos = tensors['pos_embed']
    return {
        **tensors,
        'dist_token': np.full((1, 1, 16), 7.0, np.float32),
        'pos_embed': np.concatenate(
            [pos[:, :1], np.full((1, 1, 16), 9.0, np.float32), pos[:, 1:]], 1
        ),
        'head_dist.weight': np.ones((5, 16), np.float32),
        'head_dist.bias': np.zeros(5, np.float32),
    }


def _hf_shards(tensors, directory):
    """The HF checkpoint in two shards and the index that lists them."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(GOLDEN_HF / vit.CONFIG_FILE, directory / vit.CONFIG_FILE)
    names = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((names[::2], names[1::2])):
        file = f'model-0000{i + 1}-of-00002.safetensors'
        safetensors.numpy.save_file({n: tensors[n] for n in part}, directory / file)
        weight_map.update(dict.fromkeys(part, file))
    (directory / vit.INDEX_FILE).write_text(json.dumps({'weight_map': weight_map}))
    return directory


def _timm_hub(tensors, directory):
    """timm's layout on a model hub: its own config.json beside model.safetensors."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {'architecture': 'vit_tiny_patch8_32', 'num_classes': 5, 'num_features': 16}
    (directory / vit.CONFIG_FILE).write_text(json.dumps(config))
    safetensors.numpy.save_file(dict(tensors), directory / vit.WEIGHTS_FILE)
    return directory


def _vision_transformer(arrays):
    """google-research/vision_transformer's names: `opt/target/` prefix, MultiHeadDot...
    Attention_1, LayerNorm_2, MlpBlock_3, and a 1 + N position table under
    Transformer/posembed_input (row 0 zeros: the golden's [CLS] already holds its position)."""
    out = {}
    for name, value in arrays.items():
        name = name.removeprefix('params/')
        name = name.replace('MultiHeadDotProductAttention_0', 'MultiHeadDotProductAttention_1')
        name = name.replace('LayerNorm_1', 'LayerNorm_2').replace('MlpBlock_0', 'MlpBlock_3')
        if name == 'pos_embedding':
            name = 'Transformer/posembed_input/pos_embedding'
            value = np.concatenate([np.zeros((1, 1, 16), np.float32), value], axis=1)
        out[f'opt/target/{name}'] = value
    out['opt/state/step'] = np.zeros((), np.int32)  # outside the prefix: dropped
    return out


def _scanned(arrays):
    """big_vision with scan: one `Transformer/encoderblock/...` per tensor, layers stacked."""
    out = {k: v for k, v in arrays.items() if '/encoderblock_' not in k}
    for name in arrays:
        if '/encoderblock_0/' in name:
            rest = name.split('/encoderblock_0/')[1]
            layers = [arrays[name.replace('_0/', f'_{i}/', 1)] for i in range(2)]
            out[f'params/Transformer/encoderblock/{rest}'] = np.stack(layers)
    return out


def _two_tower(arrays):
    """A LiT / SigLIP-style two-tower file: the image tower under `params/img/`."""
    out = {f'params/img/{k.removeprefix("params/")}': v for k, v in arrays.items()}
    out['params/txt/Embed_0/embedding'] = np.zeros((10, 16), np.float32)
    out['params/t'] = np.ones(1, np.float32)
    return out


@pytest.mark.parametrize(
    'write, dropped',
    [
        (
            lambda tmp: _hf_copy(_hf_classification(_hf_tensors()), tmp / 'classifier'),
            ['classifier.bias', 'classifier.weight'],
        ),
        (
            lambda tmp: _hf_shards(_hf_tensors(), tmp / 'shards'),
            ['pooler.dense.bias', 'pooler.dense.weight'],
        ),
        (lambda tmp: _timm_hub(_timm_tensors(), tmp / 'hub'), ['head.bias', 'head.weight']),
        (
            lambda tmp: _timm_copy(_deit_distilled(_timm_tensors()), tmp / 'deit.safetensors'),
            [
                'dist_token',
                'head.bias',
                'head.weight',
                'head_dist.bias',
                'head_dist.weight',
                'pos_embed row 1 (the dist_token position)',
            ],
        ),
        (
            lambda tmp: _npz_copy(_vision_transformer(_npz_arrays()), tmp / 'vt.npz'),
            ['opt/state/step', 'head/bias', 'head/kernel'],
        ),
        (
            lambda tmp: _npz_copy(_scanned(_npz_arrays()), tmp / 'scanned.npz'),
            ['head/bias', 'head/kernel'],
        ),
        (
            lambda tmp: _npz_copy(_two_tower(_npz_arrays()), tmp / 'two_tower.npz'),
            ['params/t', 'params/txt/Embed_0/embedding', 'head/bias', 'head/kernel'],
        ),
    ],
    ids=[
        'hf_classification',
        'hf_shards',
        'timm_hub',
        'deit_distilled',
        'vision_transformer',
        'scanned',
        'two_tower',
    ],
)
def test_other_spellings_of_each_format_compute_the_same(write, dropped, tmp_path):
    model, report = _tower_model(write(tmp_path))
    assert _parity(model) < PARITY
    assert report.dropped == dropped


def test_a_timm_table_without_a_cls_position_gets_a_zero_row(tmp_path):
    """timm's no_embed_class layout ([CLS] has no position): the [CLS] row folded into the
    token computes the same, and our [CLS] position row is zeros."""
    tensors = _timm_tensors()
    pos = tensors['pos_embed']
    tensors['cls_token'] = tensors['cls_token'] + pos[:, :1]
    tensors['pos_embed'] = np.ascontiguousarray(pos[:, 1:])
    model, report = _tower_model(_timm_copy(tensors, tmp_path / 'no_embed_class.safetensors'))
    assert _parity(model) < PARITY
    np.testing.assert_array_equal(model.position[0], np.zeros(16))
    assert 'pos_embed has no [CLS] row' in report.summary()


# ---------------------------------------------------------------------------------- positions


def test_resample_positions_by_hand():
    """2 x 2 -> 4 x 4, half-pixel centres: new sample i sits at i/2 - 1/4 of the old grid
    (clamped), so each axis takes the old values with weights (1, 0), (3/4, 1/4), (1/4, 3/4),
    (0, 1); 4 x 4 -> 2 x 2 averages each 2 x 2 block (no antialiasing)."""
    cls = [5.0, -5.0]
    grid = [[0.0, 4.0], [8.0, 12.0]]  # f(row, column) = 8 row + 4 column
    table = np.array([cls] + [[v, -v] for row in grid for v in row], np.float32)
    resized = vit.resample_positions(table, 4)
    expected = np.array(
        [
            [0.0, 1.0, 3.0, 4.0],
            [2.0, 3.0, 5.0, 6.0],
            [6.0, 7.0, 9.0, 10.0],
            [8.0, 9.0, 11.0, 12.0],
        ]
    )
    assert resized.shape == (17, 2)
    np.testing.assert_array_equal(resized[0], cls)
    np.testing.assert_allclose(resized[1:, 0].reshape(4, 4), expected, atol=1e-6)
    np.testing.assert_allclose(resized[1:, 1].reshape(4, 4), -expected, atol=1e-6)

    fine = np.concatenate([[[1.0]], np.arange(16, dtype=np.float32).reshape(16, 1)])
    coarse = vit.resample_positions(fine, 2)
    # Blocks {0,1,4,5}, {2,3,6,7}, {8,9,12,13}, {10,11,14,15}.
    np.testing.assert_allclose(coarse[:, 0], [1.0, 2.5, 4.5, 10.5, 12.5], atol=1e-6)

    np.testing.assert_array_equal(vit.resample_positions(table, 2), table)
    with pytest.raises(vit.WeightsError, match='15 patch rows .* not a square grid'):
        vit.resample_positions(np.zeros((16, 2), np.float32), 4)


def test_a_32_pixel_checkpoint_in_a_48_pixel_model_resamples():
    model, report = _tower_model(GOLDEN_HF, image_size=48)
    golden = _hf_tensors()['embeddings.position_embeddings'][0]
    assert model.position.shape == (1 + 36, 16)
    np.testing.assert_array_equal(model.position[0], golden[0])  # [CLS] row as it was
    np.testing.assert_allclose(
        model.position[...], vit.resample_positions(golden, 6), atol=1e-6, rtol=0
    )
    # The corner patches keep (close to) their own rows; the middle ones are blends.
    np.testing.assert_allclose(model.position[1], golden[1], atol=1e-6)
    assert not np.allclose(model.position[2], golden[2])
    assert 'position embeddings resampled from a 4x4 grid to 6x6' in report.summary()


# ---------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    'change, message',
    [
        (
            lambda t: {k: v for k, v in t.items() if k != 'encoder.layer.1.output.dense.bias'},
            r'missing encoder.layer.1.output.dense.bias \(for visual_embeddings/tower/blocks/1/'
            r'mlp/contract/bias\)',
        ),
        (
            lambda t: {
                **t,
                'encoder.layer.0.attention.attention.rotary.weight': t['layernorm.bias'],
            },
            'unexpected encoder.layer.0.attention.attention.rotary.weight',
        ),
        (
            lambda t: {
                **t,
                'encoder.layer.0.intermediate.dense.weight': np.ascontiguousarray(
                    t['encoder.layer.0.intermediate.dense.weight'].T
                ),
            },
            r'encoder.layer.0.intermediate.dense.weight: shape \[16, 32\], expected \[32, 16\] '
            r'for visual_embeddings/tower/blocks/0/mlp/expand/kernel \(transposed\?',
        ),
        (
            lambda t: {
                **t,
                'embeddings.patch_embeddings.projection.weight': np.ascontiguousarray(
                    t['embeddings.patch_embeddings.projection.weight'].transpose(2, 3, 1, 0)
                ),
            },
            r'projection.weight: shape \[8, 8, 3, 16\], expected \[16, 3, 8, 8\] .*an HWIO kernel',
        ),
        (
            lambda t: {
                **t,
                'embeddings.position_embeddings': t['embeddings.position_embeddings'][:, :16],
            },
            r'embeddings.position_embeddings: shape \[1, 16, 16\], expected \[1, 1 \+ g\*g, 16\]',
        ),
    ],
    ids=['missing', 'extra', 'transposed', 'hwio_kernel', 'not_a_grid'],
)
def test_tensors_that_do_not_map_are_listed(change, message, tmp_path):
    path = _hf_copy(change(_hf_tensors()), tmp_path / 'bad')
    model_config = _model_config().model
    with pytest.raises(vit.WeightsError, match=message):
        vit.load_vit(path, _tower_params(model_config), model_config)
    with pytest.raises(vit.WeightsError, match=message):  # from the headers alone
        vit.check_vit(path, model_config)


def test_timm_and_big_vision_files_that_do_not_map(tmp_path):
    model_config = _model_config().model
    params = _tower_params(model_config)
    timm = {**_timm_tensors(), 'blocks.0.ls1.gamma': np.ones(16, np.float32)}
    timm.pop('norm.weight')
    path = _timm_copy(timm, tmp_path / 'deit3.safetensors')
    with pytest.raises(vit.WeightsError) as error:
        vit.load_vit(path, params, model_config)
    assert 'unsupported blocks.0.ls1.gamma: LayerScale' in str(error.value)
    assert 'missing norm.weight (for visual_embeddings/tower/norm/scale)' in str(error.value)
    # A big_vision file of 2 heads for a tower of 4: its kernels say so.
    arrays = _npz_arrays()
    for name in [n for n in arrays if n.endswith(('query/kernel', 'key/kernel', 'value/kernel'))]:
        arrays[name] = arrays[name].reshape(16, 2, 8)
    path = _npz_copy(arrays, tmp_path / 'two_heads.npz')
    with pytest.raises(
        ConfigError,
        match='config.model.vision_tower.num_heads=4 but config.init_vit has num_heads 2',
    ):
        vit.check_vit(path, model_config)


@pytest.mark.parametrize(
    'changes, message',
    [
        (
            dict(vision_tower=dict(num_layers=3)),
            'config.model.vision_tower.num_layers=3 but config.init_vit has num_hidden_layers=2',
        ),
        (
            dict(vision_tower=dict(width=24, num_heads=4)),
            'config.model.vision_tower.width=24 but config.init_vit has hidden_size=16',
        ),
        (
            dict(vision_tower=dict(layer_norm_eps=1e-12)),
            'config.model.vision_tower.layer_norm_eps=1e-12 but config.init_vit has '
            'layer_norm_eps=1e-06',
        ),
        (
            dict(patch_size=16),
            'config.model.patch_size=16 but config.init_vit has patch_size=8',
        ),
        (dict(vision_tower=dict(num_layers=0)), r'needs a vision tower .*num_layers=0'),
        (dict(visual_input='regions'), "config.model.visual_input='patches'"),
    ],
    ids=['layers', 'width', 'eps', 'patch', 'no_tower', 'regions'],
)
def test_a_model_that_is_not_the_checkpoints_is_refused(changes, message):
    model_config = _model_config(**changes).model
    with pytest.raises(ConfigError, match=message):
        vit.check_vit(GOLDEN_HF, model_config)
    if changes.get('visual_input') != 'regions':
        with pytest.raises(ConfigError, match=message):
            vit.load_vit(GOLDEN_HF, _tower_params(model_config), model_config)


def test_hf_numerics_and_unknown_paths_are_refused(tmp_path):
    model_config = _model_config().model
    path = _hf_copy(_hf_tensors(), tmp_path / 'tanh', hidden_act='gelu_new', qkv_bias=False)
    with pytest.raises(ConfigError, match='hidden_act=.gelu_new.*qkv_bias=false'):
        vit.check_vit(path, model_config)
    with pytest.raises(MissingConfigFile, match='no such file or directory'):
        vit.check_vit(tmp_path / 'nowhere', model_config)
    with pytest.raises(MissingConfigFile, match='no config.json'):
        vit.check_vit(tmp_path, model_config)
    (tmp_path / 'weights.pt').write_bytes(b'')
    with pytest.raises(vit.WeightsError, match='not a ViT checkpoint this reads'):
        vit.check_vit(tmp_path / 'weights.pt', model_config)


# ---------------------------------------------------------------------------------- the model


def test_a_whole_model_gets_its_tower_and_keeps_the_rest():
    """Width 16 under an encoder of 32: the projection, the vision LayerNorm and everything
    outside the vision side are new; the leaves loaded are the tower-only model's."""
    config = _model_config(
        hidden_size=32, num_heads=2, mlp_size=64, num_layers=1, num_cross_layers=1
    )
    dims = DataDims(50, 8, 1, 3, 0, 4)
    abstract = nnx.eval_shape(lambda: SemVLP(config.model, dims, rngs=nnx.Rngs(0)))
    state = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
    params = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), state)
    loaded, report = vit.load_vit(GOLDEN_HF, params, config.model)
    assert all(k.startswith('visual_embeddings/') for k in report.loaded)
    for key in (
        'visual_embeddings/projection/kernel',
        'visual_embeddings/norm/scale',
        'text_embeddings/word/embedding',
        'encoder/layers/0/self_attention/query/kernel',
    ):
        assert key in report.new
    tower, _ = _tower_model(GOLDEN_HF)
    ours = flat_leaves({vit.OURS: nnx.to_pure_dict(nnx.state(tower, nnx.Param))})
    leaves = flat_leaves(loaded)
    for key in report.loaded:
        np.testing.assert_array_equal(leaves[key], ours[key])
    assert not leaves['visual_embeddings/projection/kernel'].any()  # as it was


def test_loaded_leaves_keep_the_sharding_of_the_leaves_they_replace():
    model_config = _model_config().model
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(8), ('x',))
    specs = {'visual_embeddings/patch/kernel': P(None, 'x'), 'visual_embeddings/cls': P('x')}

    def place(path, leaf):
        spec = specs.get(jax.tree_util.keystr(path, simple=True, separator='/'), P())
        return jax.device_put(leaf, NamedSharding(mesh, spec))

    params = jax.tree_util.tree_map_with_path(place, _tower_params(model_config))
    loaded, _ = vit.load_vit(GOLDEN_HF, params, model_config)
    for key, spec in specs.items():
        leaf = flat_leaves(loaded)[key]
        assert leaf.sharding == NamedSharding(mesh, spec)
    kernel = _hf_tensors()['embeddings.patch_embeddings.projection.weight']
    np.testing.assert_array_equal(
        loaded['visual_embeddings']['patch']['kernel'],
        kernel.transpose(2, 3, 1, 0).reshape(192, 16),
    )


# ---------------------------------------------------------------------------------- config, CLI


def test_config_checks_read_init_vit():
    config = _model_config()
    config.init_vit = str(GOLDEN_TIMM)
    config_checks.validate(config, num_devices=1)
    config.model.vision_tower.mlp_size = 48
    with pytest.raises(
        ConfigError,
        match='config.model.vision_tower.mlp_size=48 but config.init_vit has mlp size 32',
    ):
        config_checks.validate(config, num_devices=1)
    both = _model_config()
    both.update(init_vit=str(GOLDEN_HF), init_from='/tmp/run')
    with pytest.raises(ConfigError, match='init_vit=.* and config.init_from=.* are both set'):
        config_checks.validate(both, num_devices=1)


def test_the_command_line_checks_a_checkpoint(capsys):
    argv = ['--from', 'vit', '--checkpoint', str(GOLDEN_TIMM), '--check', str(GOLDEN_OUTPUTS)]
    assert convert.main([*argv, '--num_heads', '4']) == 0
    out = capsys.readouterr().out
    assert 'dropped 2: [head.bias, head.weight]' in out and 'match: largest difference' in out
    assert convert.main(argv) == 2  # a timm file does not say its heads
    assert '--num_heads' in capsys.readouterr().err
