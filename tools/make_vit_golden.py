r"""Writes the ViT parity goldens under tests/golden/ with PyTorch, once; CI never runs this.

    python -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.13.0 transformers safetensors numpy
    /tmp/torchenv/bin/python tools/make_vit_golden.py

A tiny random `transformers.ViTModel` (no download: 32 x 32 pixels in 8 x 8 patches, a 4 x 4
grid; width 16, 2 layers, 4 heads, MLP 32, LayerNorm epsilon 1e-6, the pooler and a mask token)
whose every parameter is drawn at random, LayerNorm scales and biases, [CLS], positions and the
mask token included, so that a mapping that swaps or drops one shows in the outputs:
- tests/golden/vit_tiny/: `save_pretrained` output (config.json, model.safetensors in HF's
  checkpoint names: `embeddings.*`, `encoder.layer.<i>.*`, `layernorm.*`, `pooler.*`);
- tests/golden/vit_tiny_timm.safetensors: the same weights in timm's names (`cls_token`,
  `pos_embed`, `patch_embed.proj`, `blocks.<i>.{norm1, attn.qkv (fused), attn.proj, norm2,
  mlp.fc1, mlp.fc2}`, `norm`) plus a random 5-class `head` that an import drops;
- tests/golden/vit_tiny_big_vision.npz: the same weights in big_vision's names under `params/`
  (`embedding` HWIO, `cls`, `pos_embedding`, `Transformer/encoderblock_<i>/...` with per-head
  attention kernels, `Transformer/encoder_norm`) plus a random `head`. big_vision adds no
  position to [CLS], so its `cls` is HF's [CLS] token plus HF's [CLS] position row (the sum
  the HF model computes, so all three files give the same outputs exactly) and `pos_embedding`
  is HF's patch rows only;
- tests/golden/vit_tiny_outputs.npz: two random images, `pixels` [2, 32, 32, 3] (NHWC, what our
  model reads), and the HF model's `last_hidden_state` [2, 17, 16] on them (eval mode).
The renaming here is written from the checkpoint formats' documentation, independently of
semvlp_jax/weights/vit.py, so the tests of that importer check it against another reading.
"""

from __future__ import annotations

import pathlib

import numpy as np
import safetensors.torch
import torch
import transformers

GOLDEN = pathlib.Path(__file__).resolve().parent.parent / 'tests' / 'golden'
IMAGE, PATCH, WIDTH, LAYERS, HEADS, MLP = 32, 8, 16, 2, 4, 32
HEAD_CLASSES = 5


def randomise(model: torch.nn.Module) -> None:
    """Every parameter from a normal distribution: LayerNorm scales around 1, the rest
    around 0 (the patch projection smaller: it sums 192 inputs)."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            is_norm = 'layernorm' in name
            if is_norm and name.endswith('weight'):
                parameter.copy_(1.0 + 0.1 * torch.randn_like(parameter))
            elif is_norm:
                parameter.copy_(0.1 * torch.randn_like(parameter))
            elif 'patch_embeddings' in name:
                parameter.copy_(0.05 * torch.randn_like(parameter))
            else:
                parameter.copy_(0.2 * torch.randn_like(parameter))


def timm_names(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF ViT checkpoint tensors -> timm VisionTransformer's state_dict."""
    out = {
        'cls_token': hf['embeddings.cls_token'],
        'pos_embed': hf['embeddings.position_embeddings'],
        'patch_embed.proj.weight': hf['embeddings.patch_embeddings.projection.weight'],
        'patch_embed.proj.bias': hf['embeddings.patch_embeddings.projection.bias'],
        'norm.weight': hf['layernorm.weight'],
        'norm.bias': hf['layernorm.bias'],
    }
    for i in range(LAYERS):
        layer, block = f'encoder.layer.{i}', f'blocks.{i}'
        for part in ('weight', 'bias'):
            out[f'{block}.norm1.{part}'] = hf[f'{layer}.layernorm_before.{part}']
            out[f'{block}.attn.qkv.{part}'] = torch.cat(
                [hf[f'{layer}.attention.attention.{p}.{part}'] for p in ('query', 'key', 'value')]
            )
            out[f'{block}.attn.proj.{part}'] = hf[f'{layer}.attention.output.dense.{part}']
            out[f'{block}.norm2.{part}'] = hf[f'{layer}.layernorm_after.{part}']
            out[f'{block}.mlp.fc1.{part}'] = hf[f'{layer}.intermediate.dense.{part}']
            out[f'{block}.mlp.fc2.{part}'] = hf[f'{layer}.output.dense.{part}']
    out['head.weight'] = torch.randn(HEAD_CLASSES, WIDTH)
    out['head.bias'] = torch.randn(HEAD_CLASSES)
    return {k: v.contiguous() for k, v in out.items()}


def big_vision_names(hf: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """HF ViT checkpoint tensors -> a big_vision ViT's params, flattened with '/'."""
    head_dim = WIDTH // HEADS

    def dense(weight):  # PyTorch Linear [out, in] -> Flax Dense kernel [in, out]
        return weight.T

    out = {
        # Conv OIHW -> HWIO.
        'embedding/kernel': hf['embeddings.patch_embeddings.projection.weight'].permute(2, 3, 1, 0),
        'embedding/bias': hf['embeddings.patch_embeddings.projection.bias'],
        'cls': hf['embeddings.cls_token'] + hf['embeddings.position_embeddings'][:, :1],
        'pos_embedding': hf['embeddings.position_embeddings'][:, 1:],
        'Transformer/encoder_norm/scale': hf['layernorm.weight'],
        'Transformer/encoder_norm/bias': hf['layernorm.bias'],
        'head/kernel': torch.randn(WIDTH, HEAD_CLASSES),
        'head/bias': torch.randn(HEAD_CLASSES),
    }
    for i in range(LAYERS):
        layer, block = f'encoder.layer.{i}', f'Transformer/encoderblock_{i}'
        attention = f'{block}/MultiHeadDotProductAttention_0'
        for hf_norm, norm in (
            ('layernorm_before', 'LayerNorm_0'),
            ('layernorm_after', 'LayerNorm_1'),
        ):
            out[f'{block}/{norm}/scale'] = hf[f'{layer}.{hf_norm}.weight']
            out[f'{block}/{norm}/bias'] = hf[f'{layer}.{hf_norm}.bias']
        for p in ('query', 'key', 'value'):  # DenseGeneral to [heads, head_dim]
            weight = hf[f'{layer}.attention.attention.{p}.weight']
            out[f'{attention}/{p}/kernel'] = dense(weight).reshape(WIDTH, HEADS, head_dim)
            out[f'{attention}/{p}/bias'] = hf[f'{layer}.attention.attention.{p}.bias'].reshape(
                HEADS, head_dim
            )
        out[f'{attention}/out/kernel'] = dense(
            hf[f'{layer}.attention.output.dense.weight']
        ).reshape(HEADS, head_dim, WIDTH)
        out[f'{attention}/out/bias'] = hf[f'{layer}.attention.output.dense.bias']
        for hf_dense, name in (('intermediate.dense', 'Dense_0'), ('output.dense', 'Dense_1')):
            out[f'{block}/MlpBlock_0/{name}/kernel'] = dense(hf[f'{layer}.{hf_dense}.weight'])
            out[f'{block}/MlpBlock_0/{name}/bias'] = hf[f'{layer}.{hf_dense}.bias']
    return {f'params/{k}': np.ascontiguousarray(v.numpy(), np.float32) for k, v in out.items()}


def main() -> None:
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=IMAGE,
        patch_size=PATCH,
        num_channels=3,
        hidden_size=WIDTH,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=MLP,
        hidden_act='gelu',
        layer_norm_eps=1e-6,
        qkv_bias=True,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = transformers.ViTModel(config, add_pooling_layer=True, use_mask_token=True).eval()
    randomise(model)
    out_dir = GOLDEN / 'vit_tiny'
    model.save_pretrained(out_dir, safe_serialization=True)
    # The names as stored (HF keeps its checkpoint names on disk whatever its module names).
    hf = safetensors.torch.load_file(out_dir / 'model.safetensors')

    safetensors.torch.save_file(timm_names(hf), GOLDEN / 'vit_tiny_timm.safetensors')
    np.savez(GOLDEN / 'vit_tiny_big_vision.npz', **big_vision_names(hf))

    pixels = torch.randn(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        hidden = model(pixel_values=pixels).last_hidden_state
    np.savez(
        GOLDEN / 'vit_tiny_outputs.npz',
        pixels=pixels.permute(0, 2, 3, 1).numpy().astype(np.float32),
        last_hidden_state=hidden.numpy().astype(np.float32),
    )
    files = [out_dir / 'config.json', out_dir / 'model.safetensors']
    files += [GOLDEN / f'vit_tiny_{n}' for n in ('timm.safetensors', 'big_vision.npz')]
    files.append(GOLDEN / 'vit_tiny_outputs.npz')
    total = sum(f.stat().st_size for f in files)
    print(f'wrote {len(files)} files, {total / 1024:.0f} KiB: ' + ', '.join(map(str, files)))
    print('tensors in the HF file:', ', '.join(sorted(hf)[:6]), '...')


if __name__ == '__main__':
    main()
