"""The `config.data` block for datasets built from real files; not a config itself.

Build the datasets once (see README "Real data"), e.g.

    python -m semvlp_jax.data.build --dataset region_tsv --manual_dir RAW/features \
        --data_dir DATA
    python -m semvlp_jax.data.build --dataset karpathy --manual_dir RAW/karpathy \
        --data_dir DATA --features region_tsv

then point a config at DATA with `data(DATA, TOKENIZER)`. Sizes default to the 36-box,
2048-dimensional bottom-up-attention features with Visual Genome's 1600 object and 400
attribute classes (the LXMERT files).

A model that reads pixels (`config.model.visual_input='patches'`) takes its images from an
image-file dataset instead (`images='image_files'`):

    python -m semvlp_jax.data.build --dataset image_files --manual_dir RAW/images \
        --data_dir DATA
    python -m semvlp_jax.data.build --dataset karpathy --manual_dir RAW/karpathy \
        --data_dir DATA --features image_files

(or caption datasets built with `--images`, which keep each caption's image in its record).
"""

import ml_collections

from semvlp_jax.weights import hf_bert


def data(data_dir: str, tokenizer: str, kind: str = 'sentencepiece', **overrides) -> dict:
    """`tokenizer`: a sentencepiece `.model` (kind='sentencepiece') or a BERT `vocab.txt`
    (kind='wordpiece'). `sources` (pre-training only): {dataset: {split, val_split, weight}}."""
    block = dict(
        name='tfds',
        data_dir=data_dir,
        regions='region_tsv',  # region_tsv | region_npz
        num_regions=36,  # the first num_regions boxes of each image, zero-padded to this many
        feature_dim=2048,
        num_object_labels=1600,
        num_attribute_labels=400,
        tokenizer=dict(kind=kind, path=tokenizer),
        sources={},
        answer_min_count=9,  # pre-training QA answers: those seen this often
        max_text_len=32,
        mlm_prob=0.15,
        max_mlm_predictions=5,
        mop_prob=0.15,
        max_mop_predictions=6,
        reader_threads=16,
        # Worker processes making batches, each with reader_threads threads; 0: threads in the
        # trainer's process. Pixels at 224 px want several (data/input_workers.py).
        input_workers=0,
        # Pixels: the image-file dataset ('image_files'); empty: regions, or caption records'
        # own image bytes. Training views as ALBEF / SIMLA make them (data/pixels.py).
        images='',
        augment=dict(
            enabled=True,
            crop_scale=(0.2, 1.0),
            flip=True,
            randaugment_ops=2,
            randaugment_magnitude=7,
        ),
        patch_mask=dict(count=0, min_block=16, min_aspect=0.3),  # BEiT block masking; 0: off
    )
    block.update(overrides)
    return block


# BERT-base's sizes, as the real-data pre-training configs start (a `bert=` checkpoint's own
# sizes replace them: `from_bert`).
BERT_BASE = dict(
    num_layers=12,
    hidden_size=768,
    num_heads=12,
    mlp_size=3072,
    dropout_rate=0.1,
    dtype='bfloat16',
)


def long_run(c: ml_collections.ConfigDict, *, batch_size: int, total_steps: int) -> None:
    """`c` set for a long pre-training run on real data: its batch and steps, evaluation,
    logging and checkpoint intervals, and parameters and optimizer state sharded (FSDP)."""
    c.batch_size = batch_size
    c.total_steps = total_steps
    c.eval_every = 5000
    c.eval_batches = 8
    c.log_every = 100
    c.checkpoint_every = 2000
    c.keep_checkpoints = 3
    c.mesh = dict(data=1, fsdp=-1, tensor=1)
    c.parallel = dict(preset='fsdp', rules=())


def tokenizer_of(data_dir: str, bert: str) -> tuple[str, str]:
    """(path, kind) of the tokenizer: a `bert` checkpoint's vocab.txt (its word embeddings index
    it), else the sentencepiece model DATA/spm.model."""
    if bert:
        return f'{bert}/{hf_bert.VOCAB_FILE}', 'wordpiece'
    return f'{data_dir}/spm.model', 'sentencepiece'


def from_bert(c: ml_collections.ConfigDict, bert: str) -> None:
    """`c` initialised from the HF BERT checkpoint directory `bert`, with its sizes."""
    c.init_bert = bert
    c.model.update(hf_bert.BertConfig.read(bert).model_config())
