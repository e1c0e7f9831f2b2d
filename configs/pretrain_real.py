r"""Pre-train SemVLP on datasets built from real files: COCO captions (Karpathy splits), VQA v2
and GQA questions, with bottom-up-attention region features.

    python -m semvlp_jax.data.build --dataset region_tsv --manual_dir RAW/features --data_dir DATA
    python -m semvlp_jax.data.build --dataset karpathy --manual_dir RAW/karpathy \
        --data_dir DATA --features region_tsv
    python -m semvlp_jax.data.build --dataset vqa_v2 --manual_dir RAW/vqa --data_dir DATA \
        --features region_tsv
    python -m semvlp_jax.data.build --dataset gqa --manual_dir RAW/gqa --data_dir DATA \
        --features region_tsv     # GQA images need their own features in the region dataset
    python -m semvlp_jax.data.train_tokenizer --dataset karpathy --data_dir DATA \
        --output DATA/spm.model --vocab_size 30000
    python -m semvlp_jax.main --config configs/pretrain_real.py:data_dir=DATA \
        --workdir WORKDIR

Config argument: `data_dir=DATA` (required), `tokenizer=PATH` (default DATA/spm.model),
`kind=sentencepiece|wordpiece` (a BERT vocab.txt for wordpiece), `bert=DIR`: start the text side
from an HF BERT checkpoint (e.g. a `bert-base-uncased` download: config.json, model.safetensors,
vocab.txt), as SemVLP does; the model takes the checkpoint's sizes and the tokenizer defaults to
DIR/vocab.txt. Check a checkpoint first with
`python -m semvlp_jax.weights.convert --from hf_bert --checkpoint DIR`. `images=image_files`:
read pixels instead of regions (224 x 224, 16 x 16 patches read by the shared encoder, SemVLP
style, no masked object prediction) from an image-file dataset built in DATA with
`python -m semvlp_jax.data.build --dataset image_files --manual_dir RAW/images --data_dir DATA`
(build the text datasets with `--features image_files` then). Drop a source with e.g.
`--config.data.sources.gqa.weight=...` or by editing `sources` below; any dataset of image-text
pairs (coco_captions, caption_records, karpathy, vqa_v2, gqa) can be one.
"""

import ml_collections

from configs import args, built_data, demo
from semvlp_jax.weights import hf_bert


def parse_arg(arg: str | None) -> dict[str, str]:
    values = args.parse(
        arg,
        {'data_dir': '', 'tokenizer': '', 'kind': '', 'bert': '', 'images': ''},
        required=('data_dir',),
    )
    if values['bert'] and not values['tokenizer']:  # BERT's word embeddings index its vocab.txt
        values['tokenizer'] = f'{values["bert"]}/{hf_bert.VOCAB_FILE}'
        values['kind'] = values['kind'] or 'wordpiece'
    values['tokenizer'] = values['tokenizer'] or f'{values["data_dir"]}/spm.model'
    values['kind'] = values['kind'] or 'sentencepiece'
    return values


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    values = parse_arg(arg)
    c = demo.get_config()
    c.data = built_data.data(
        values['data_dir'],
        values['tokenizer'],
        values['kind'],
        sources=dict(
            karpathy=dict(split='train', val_split='val', weight=0.6),
            vqa_v2=dict(split='train', val_split='val', weight=0.25),
            gqa=dict(split='train', val_split='val', weight=0.15),
        ),
    )
    built_data.long_run(c, batch_size=256, total_steps=200_000)
    c.model.update(built_data.BERT_BASE, num_cross_layers=6)
    if values['images']:
        c.data.images = values['images']
        c.model.update(visual_input='patches', image_size=224, patch_size=16)
        c.objectives = {
            mode: {name: w for name, w in weights.items() if name != 'mop'}
            for mode, weights in c.objectives.to_dict().items()
        }
    if values['bert']:
        built_data.from_bert(c, values['bert'])
    c.optimizer.update(learning_rate=1e-4, warmup_steps=10_000, weight_decay=0.01)
    return ml_collections.ConfigDict(c)
