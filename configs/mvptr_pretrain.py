r"""Pre-train MVPTR on real captions with region features, at the paper's settings.

    python -m semvlp_jax.data.build --dataset region_tsv --manual_dir RAW/regions \
        --data_dir DATA
    python -m semvlp_jax.data.build --dataset caption_records --manual_dir RAW/captions \
        --data_dir DATA --features region_tsv
    python -m semvlp_jax.main \
        --config configs/mvptr_pretrain.py:data_dir=DATA,bert=BERT_DIR,objects_vocab=VOCAB \
        --workdir WORKDIR

Config arguments: `data_dir=DATA` (required): the built region features (`region_tsv`, the
detector's 2048-d features, 50 boxes per image) and MVPTR-format caption records (`train.json`,
`val.json`: `[{"image_id", "text", "phrases": [[obj], [obj, attr], [subj, rel, obj]]}]`, the
phrases from MVPTR's `tools/phrase_parse.sh`); `bert=DIR`, an HF BERT-base checkpoint
(`bert-base-uncased`), whose vocab.txt becomes the tokenizer and whose layers seed the text
layers, the visual layers (BERT's bottom six, as the text's) and the joint layers (BERT's top
six); `objects_vocab=PATH`, the detector's Visual Genome objects vocabulary (default
DATA/objects_vocab.txt: line i names object id i); `steps=N` (default 300,000: the paper's
count is not known, its code's default is 2M iterations). Without `bert` the sentencepiece model
DATA/spm.model is the tokenizer and the layers start from scratch (BERT-base sizes).

Paper settings (../shared/PAPERS.md §2): 6 uni-modal layers per modality (the visual ones of
their own) and 6 joint layers, BERT-base width; 50 regions, 20 tag pieces, 35 word pieces and 5
phrase slots; phrases kept when seen in 50 captions; batch 1024; AdamW at 5e-5 with weight
decay 0.01, linear decay; gradient clipping 10; dropout 0.1; the five losses summed unweighted.
The batch of 1024 is sharded over the devices (FSDP); on a slice that cannot hold it, add
`--config.microbatches=k` (contrast and hard negatives are then per microbatch, as the
reference's are per GPU micro-batch). What differs (README "MVPTR"): boxes enter through the
region embeddings' box projection rather than as 6 extra feature dimensions.
"""

import ml_collections

from configs import args, built_data, mvptr_demo

BATCH = 1024
DEFAULT_STEPS = 300_000


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    values = args.parse(
        arg,
        {'data_dir': '', 'bert': '', 'objects_vocab': '', 'steps': str(DEFAULT_STEPS)},
        required=('data_dir',),
    )
    if not values['steps'].isdigit() or int(values['steps']) < 1:
        raise ValueError(f'config argument steps={values["steps"]!r}: a positive integer')
    tokenizer, kind = built_data.tokenizer_of(values['data_dir'], values['bert'])
    c = mvptr_demo.get_config()
    c.data = built_data.data(
        values['data_dir'],
        tokenizer,
        kind,
        sources=dict(caption_records=dict(split='train', val_split='val', weight=1.0)),
        num_regions=50,
        max_text_len=35,  # word pieces with [CLS] and [SEP]; the phrase slots come on top
        concepts=dict(
            max_tags=20,
            max_phrases=5,
            phrase_min_count=50,
            mcr_prob=0.15,
            max_mcr_predictions=3,
            phrase_mask_prob=0.15,
            objects_vocab=values['objects_vocab'] or f'{values["data_dir"]}/objects_vocab.txt',
        ),
        input_workers=4,
    )
    built_data.long_run(c, batch_size=BATCH, total_steps=int(values['steps']))
    # MVPTR's projections keep the width.
    c.model.update(built_data.BERT_BASE, num_cross_layers=6, contrastive_dim=768)
    if values['bert']:
        built_data.from_bert(c, values['bert'])
        c.model.num_cross_layers = c.model.num_layers // 2
    c.optimizer.update(
        learning_rate=5e-5, warmup_steps=0, decay='linear', weight_decay=0.01, grad_clip_norm=10.0
    )
    return ml_collections.ConfigDict(c)
