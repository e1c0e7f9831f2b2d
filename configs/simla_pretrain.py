r"""Pre-train SIMLA on real caption data with images, at the paper's settings.

    python -m semvlp_jax.data.build --dataset image_files --manual_dir RAW/images \
        --data_dir DATA
    python -m semvlp_jax.data.build --dataset karpathy --manual_dir RAW/karpathy \
        --data_dir DATA --features image_files
    python -m semvlp_jax.main \
        --config configs/simla_pretrain.py:data_dir=DATA,bert=BERT_DIR,vit=DEIT.safetensors \
        --workdir WORKDIR

Config arguments: `data_dir=DATA` (required); `bert=DIR`, an HF BERT-base checkpoint
(`bert-base-uncased`: config.json, model.safetensors, vocab.txt), whose vocab.txt becomes the
tokenizer; `vit=PATH`, the ViT-B/16 weights SIMLA starts from (DeiT-base: a timm
`.safetensors` file; or an HF ViT directory, a big_vision `.npz`), positions resampled from
14 x 14 to the 16 x 16 patches of 256 px; `examples=N`, the pairs in one epoch of the training
set (default 5,100,000: ALBEF's and SIMLA's "4M" set), which sets 30 epochs of steps and the
one-epoch ramp of the distillation weight. Without `bert` the sentencepiece model DATA/spm.model
is the tokenizer and the text stack starts from scratch (BERT-base sizes); without `vit` the
tower does. Check the weights first with `python -m semvlp_jax.weights.convert --from vit
--checkpoint PATH` (and `--from hf_bert`).

Paper settings (../shared/PAPERS.md §3): ViT-B/16 at 256 px; BERT-base with cross-attention in
all 12 layers; batch 512; AdamW at 1e-4, cosine decay, weight decay 0.02; EMA teacher m = 0.995;
queues of 65,536 x 256; distillation alpha 0.4 after one epoch; 75 of 256 patches masked in
blocks; all five losses weighted 1. What differs (README "SIMLA"): the masked patches' targets
come from a seeded random-projection quantizer (8,192 codes) of the same view, not from DALL-E's
dVAE on a second crop. Add caption sources (Visual Genome, CC3M, SBU as ALBEF-style
`caption_records` JSON) under `config.data.sources`.
"""

import ml_collections

from configs import args, built_data, simla_demo

BATCH = 512
EPOCHS = 30
PAPER_EXAMPLES = 5_100_000


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    values = args.parse(
        arg,
        {'data_dir': '', 'bert': '', 'vit': '', 'examples': str(PAPER_EXAMPLES)},
        required=('data_dir',),
    )
    tokenizer, kind = built_data.tokenizer_of(values['data_dir'], values['bert'])
    if not values['examples'].isdigit() or int(values['examples']) < 1:
        raise ValueError(f'config argument examples={values["examples"]!r}: a positive integer')
    epoch = max(int(values['examples']) // BATCH, 1)
    c = simla_demo.get_config()
    c.data = built_data.data(
        values['data_dir'],
        tokenizer,
        kind,
        sources=dict(karpathy=dict(split='train', val_split='val', weight=1.0)),
        images='image_files',
        max_text_len=30,  # ALBEF / SIMLA: 30 tokens
        max_mlm_predictions=5,
        patch_mask=dict(count=75, min_block=16, min_aspect=0.3),
        input_workers=8,  # decoding and augmenting 256 px images takes processes
    )
    built_data.long_run(c, batch_size=BATCH, total_steps=EPOCHS * epoch)
    c.momentum = dict(decay=0.995, alpha=0.4, alpha_ramp_steps=epoch, queue_size=65_536)
    c.model.update(
        built_data.BERT_BASE,
        num_cross_layers=12,
        image_size=256,
        patch_size=16,
        vision_tower=dict(
            num_layers=12, width=768, num_heads=12, mlp_size=3072, layer_norm_eps=1e-6
        ),
        contrastive_dim=256,
        patch_head=dict(tokenizer='random_projection', codes=8192, dim=32, seed=0),
        concept_head=True,
    )
    if values['bert']:
        built_data.from_bert(c, values['bert'])
        c.model.num_cross_layers = c.model.num_layers
    c.init_vit = values['vit']
    c.optimizer.update(learning_rate=1e-4, warmup_steps=1000, decay='cosine', weight_decay=0.02)
    return ml_collections.ConfigDict(c)
