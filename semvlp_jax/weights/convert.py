r"""Command line: check a BERT or ViT checkpoint against our model, or export a run's text side.

    python -m semvlp_jax.weights.convert --from hf_bert --checkpoint DIR [--check REF.npz]
    python -m semvlp_jax.weights.convert --from vit --checkpoint PATH [--check REF.npz]
    python -m semvlp_jax.weights.convert --to hf_bert --workdir W --output DIR

`--from hf_bert` imports DIR (config.json, model.safetensors) through the name table and prints
what loaded, what is new and what was skipped; any tensor that does not map is an error listing
the names. With `--check REF.npz` (`input_ids`, `attention_mask`, `token_type_ids` int arrays
[batch, len]; the reference `last_hidden_state` [batch, len, hidden] and `pooler_output`
[batch, hidden]; optionally the MLM `prediction_logits` [batch, len, vocab]) it runs our
text-only path on those inputs and prints the maximum absolute difference of each output,
exiting 1 above `--tolerance` (1e-4). `--to hf_bert` writes the text encoder, pooler and MLM
head of a trained run (and its WordPiece vocab.txt, if it reads one) as an HF BERT checkpoint.

`--from vit` imports PATH (an HF ViT directory, a timm `.safetensors` file or a big_vision
`.npz`, see `weights/vit.py`) into a vision tower of the checkpoint's sizes (a timm file does
not say its number of heads: give `--num_heads`) and prints the report. With `--check REF.npz`
(`pixels` [batch, H, W, 3] float32, NHWC, and the reference `last_hidden_state` [batch,
1 + grid**2, width]) it compares the tower's output (`vision_states`) on those pixels; pixels of
another size than the checkpoint's images give a tower at their size, positions resampled.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from configs import demo
from semvlp_jax.data.dims import DataDims
from semvlp_jax.data.tokenizers import WordPieceTokenizer
from semvlp_jax.errors import ConfigError
from semvlp_jax.models.semvlp import SemVLP
from semvlp_jax.models.vision import PatchEmbeddings
from semvlp_jax.weights import hf_bert, vit

IMPORTS = ('hf_bert', 'vit')
EXPORTS = ('hf_bert',)
REFERENCE_INPUTS = ('input_ids', 'attention_mask', 'token_type_ids')
REFERENCE_OUTPUTS = ('last_hidden_state', 'pooler_output')
VIT_REFERENCE = ('pixels', 'last_hidden_state')


def bert_text_model(directory: str | Path) -> tuple[SemVLP, hf_bert.LoadReport]:
    """A SemVLP of the checkpoint's sizes with the checkpoint loaded, for its text path: the
    whole position table, one cross-attention layer and minimal visual parts (left new)."""
    bert = hf_bert.BertConfig.read(directory)
    model_config = demo.get_config().model
    model_config.update(bert.model_config(), num_cross_layers=1, contrastive_dim=0)
    dims = DataDims(
        vocab_size=bert.vocab_size,
        max_text_len=bert.max_positions,
        visual_feature_dim=1,
        num_object_labels=1,
        num_attribute_labels=0,
        num_answers=1,
    )
    model = SemVLP(model_config, dims, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model, nnx.Param)
    params, report = hf_bert.load_bert(
        directory, nnx.to_pure_dict(state), model_config, key='checkpoint'
    )
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state), report


def check_against(model: SemVLP, reference: Path) -> dict[str, float]:
    """Maximum absolute difference of each output in `reference` (an .npz, see the module
    docstring) from ours on its inputs."""
    with np.load(reference) as npz:
        arrays = {key: npz[key] for key in npz.files}
    missing = [k for k in (*REFERENCE_INPUTS, *REFERENCE_OUTPUTS) if k not in arrays]
    if missing:
        raise ConfigError(f'{reference}: missing {", ".join(missing)} (it has {sorted(arrays)})')
    inputs = [jnp.asarray(arrays[key], jnp.int32) for key in REFERENCE_INPUTS]
    positions = model.text_embeddings.position.embedding.shape[0]
    if inputs[0].shape[1] > positions:
        raise ConfigError(
            f'{reference}: inputs of length {inputs[0].shape[1]} but the checkpoint has '
            f'{positions} positions'
        )
    hidden, pooled = jax.jit(lambda *x: model.encode_text(*x))(*inputs)
    ours = {'last_hidden_state': hidden, 'pooler_output': pooled}
    if 'prediction_logits' in arrays:
        ours['prediction_logits'] = model.mlm_head(hidden, model.text_embeddings.word)
    return {key: float(np.abs(np.asarray(ours[key]) - arrays[key]).max()) for key in ours}


def vit_tower_model(
    path: str | Path, *, num_heads: int | None = None, image_size: int | None = None
) -> tuple[PatchEmbeddings, vit.VitLoadReport]:
    """The vision side alone (patch embedding and a tower of the checkpoint's sizes, the
    encoder's width the tower's) with the ViT checkpoint at `path` loaded; `num_heads` where
    the checkpoint does not say (timm), `image_size` (default: the checkpoint's) for another
    grid."""
    sizes = vit.checkpoint_sizes(path, key='checkpoint')
    if sizes.num_heads is None and num_heads is None:
        raise ConfigError(
            f'{path}: a timm file does not say its number of heads (its qkv is fused); give '
            '--num_heads'
        )
    unread = [f for f in ('width', 'patch_size', 'mlp_size', 'grid') if getattr(sizes, f) is None]
    if unread:
        raise ConfigError(
            f'{path}: cannot read its {", ".join(unread)}: the tensors that give them are '
            f'missing or not ViT-shaped ({"; ".join(sizes.said.values())})'
        )
    model_config = _vit_config(sizes, num_heads, image_size)
    model = PatchEmbeddings(model_config, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model, nnx.Param)
    params, report = vit.load_vit(
        path, {vit.OURS: nnx.to_pure_dict(state)}, model_config, key='checkpoint'
    )
    nnx.replace_by_pure_dict(state, params[vit.OURS])
    return nnx.merge(graphdef, state), report


def _vit_config(sizes: vit.VitSizes, num_heads, image_size) -> ml_collections.ConfigDict:
    model_config = demo.get_config().model
    values = sizes.model_config(num_heads)
    if image_size:
        values['image_size'] = image_size
    model_config.update(values, dtype='float32')
    return model_config


@nnx.jit
def _vision_states(model: PatchEmbeddings, pixels: jax.Array) -> jax.Array:
    return model.vision_states(pixels)


def check_vit_against(model: PatchEmbeddings, reference: Path) -> dict[str, float]:
    """Maximum absolute difference of the tower's output on the reference's pixels from its
    `last_hidden_state` (an .npz, see the module docstring)."""
    with np.load(reference) as npz:
        arrays = {key: npz[key] for key in npz.files}
    missing = [k for k in VIT_REFERENCE if k not in arrays]
    if missing:
        raise ConfigError(f'{reference}: missing {", ".join(missing)} (it has {sorted(arrays)})')
    pixels = jnp.asarray(arrays['pixels'], jnp.float32)
    ours = np.asarray(_vision_states(model, pixels))
    if ours.shape != arrays['last_hidden_state'].shape:
        raise ConfigError(
            f'{reference}: last_hidden_state {list(arrays["last_hidden_state"].shape)} but the '
            f'tower gives {list(ours.shape)} on its pixels'
        )
    return {'last_hidden_state': float(np.abs(ours - arrays['last_hidden_state']).max())}


def _reference_image_size(reference: str | None) -> int | None:
    if not reference:
        return None
    with np.load(reference) as npz:
        if 'pixels' not in npz.files or npz['pixels'].ndim != 4:
            return None  # check_vit_against says what is wrong
        return int(npz['pixels'].shape[1])


def _import(args) -> int:
    if args.source == 'vit':
        model, report = vit_tower_model(
            args.checkpoint,
            num_heads=args.num_heads,
            image_size=_reference_image_size(args.check),
        )
        compare = check_vit_against
    else:
        model, report = bert_text_model(args.checkpoint)
        compare = check_against
    print(f'{args.checkpoint}: {report.summary()}')
    if not args.check:
        return 0
    differences = compare(model, Path(args.check))
    worst = max(differences.values())
    for key, difference in differences.items():
        print(f'  {key}: max |ours - reference| = {difference:.3g}')
    verdict = 'match' if worst <= args.tolerance else 'DIFFER'
    print(f'{verdict}: largest difference {worst:.3g} (tolerance {args.tolerance:g})')
    return 0 if worst <= args.tolerance else 1


def _export(args) -> int:
    from semvlp_jax.inference import TrainedRun  # imports orbax; only export needs it

    run = TrainedRun.load(args.workdir)
    model: ml_collections.ConfigDict = run.config.model
    vocab = run.tokenizer.vocab_path if isinstance(run.tokenizer, WordPieceTokenizer) else None
    out = hf_bert.export_bert(
        run.params, model, args.output, vocab=vocab, pad_id=run.tokenizer.pad_id
    )
    note = '' if vocab else ' (the run reads a sentencepiece model: no vocab.txt written)'
    print(f'wrote the text side of {run.directory} (step {run.step}) to {out}{note}')
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='python -m semvlp_jax.weights.convert', description=__doc__.split('\n')[0]
    )
    parser.add_argument('--from', dest='source', choices=IMPORTS, help='import and check')
    parser.add_argument('--to', dest='target', choices=EXPORTS, help='export a run')
    parser.add_argument('--checkpoint', help='the checkpoint (directory or file) to import')
    parser.add_argument('--check', help='reference inputs and outputs (.npz) to compare with')
    parser.add_argument('--tolerance', type=float, default=1e-4)
    parser.add_argument('--num_heads', type=int, help='--from vit: heads of a timm checkpoint')
    parser.add_argument('--workdir', help='the run to export (run directory or checkpoint)')
    parser.add_argument('--output', help='the directory to write the exported checkpoint to')
    args = parser.parse_args(argv)
    if bool(args.source) == bool(args.target):
        parser.error('give exactly one of --from and --to')
    if args.source and not args.checkpoint:
        parser.error('--from needs --checkpoint PATH')
    if args.target and not (args.workdir and args.output):
        parser.error('--to needs --workdir W and --output DIR')
    try:
        return _import(args) if args.source else _export(args)
    except (ConfigError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
