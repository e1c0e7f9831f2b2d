r"""Demo: pre-train a small SemVLP on the embedded synthetic dataset, alternating modes per step.

    python -m semvlp_jax.main --config configs/demo.py --workdir /tmp/semvlp_demo

Runs on a laptop CPU in about 3 to 5 minutes (2 cores), with no downloads: the scenes are generated
and the sentencepiece tokenizer is trained on their captions at first use. At the end it prints,
per mode, validation MLM / ITM / QA accuracy at the start and at the end, and writes
WORKDIR/metrics.json. Expect ITM above 0.8 and MLM above 0.6 in both modes, and the masked object's shape above
its start (see README).
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.task = dict(name='pretrain')  # pretrain | vqa | gqa | nlvr2 | retrieval
    c.total_steps = 800
    c.batch_size = 64
    c.microbatches = 1  # gradient accumulation: k slices of the batch per update
    c.schedule = 'alternate'  # alternate | random | single | two | both | every:N
    c.p_two_stream = 0.5  # for schedule='random'
    c.itm_negative_prob = 0.5  # share of pairs whose image is swapped for another in the batch
    # Which other image: 'random' (uniform over the batch) or 'hard' (sampled from the
    # contrastive similarities of the uni-modal pass; needs model.contrastive_dim > 0).
    c.itm_negatives = 'random'
    c.eval_every = 400
    c.eval_batches = 4
    c.log_every = 100
    # Alignment diagnostics at every evaluation (val/<mode>/diag_*: attention mass text->image,
    # ITM logit change when the image is swapped, region vs text embedding scale; see
    # semvlp_jax/diagnostics.py). Gradient norms per parameter group are always logged.
    c.diagnostics = False
    # TensorBoard images at every evaluation (written by process 0): `figures/curves`, the
    # curves so far, and `figures/attention`, text->region attention on validation example 0
    # (synthetic data only); see semvlp_jax/plots/eval_figures.py.
    c.eval_figures = False

    # Checkpoints (WORKDIR/checkpoints): saved every `checkpoint_every` steps, at every eval (with
    # its metrics), at the end and on SIGTERM / preemption notice; the last `keep_checkpoints`
    # are kept, plus the best by `best_metric` ('' for none; `best_metric_goal` says whether
    # higher or lower is better). Rerunning with the same workdir resumes exactly; `init_from`
    # (a checkpoint directory) starts a fine-tune from its parameters instead of a fresh
    # initialisation.
    c.checkpoint_every = 400
    c.keep_checkpoints = 2
    c.best_metric = 'val/two/itm_accuracy'
    c.best_metric_goal = 'max'  # max | min
    c.init_from = ''
    # An HF BERT checkpoint directory (config.json, model.safetensors, vocab.txt) for the text
    # embeddings, the encoder's self-attention and FFN, the pooler and the MLM head; the model's
    # sizes and numerics must be the checkpoint's, and its vocab.txt becomes the tokenizer.
    c.init_bert = ''
    # A ViT checkpoint for the vision tower (config.model.visual_input='patches' with a
    # vision_tower of the checkpoint's sizes): an HF ViT directory, a timm .safetensors file or a
    # big_vision .npz; positions are resampled to the model's patch grid. Goes with init_bert.
    c.init_vit = ''
    # A step whose loss or gradient is not finite applies no update and is counted
    # (train/skipped_steps); with policy='stop' the run stops after `max_in_a_row` such steps.
    c.nonfinite = dict(policy='skip', max_in_a_row=10)

    # Parallelism: mesh axis sizes (-1 takes the remaining devices) and a sharding preset
    # (data_parallel | fsdp | fsdp_tensor), or explicit logical-axis rules, e.g.
    # rules=(('embed', 'fsdp'), ('mlp', 'tensor')).
    c.mesh = dict(data=-1, fsdp=1, tensor=1)
    c.parallel = dict(preset='data_parallel', rules=())

    # Which objectives run in each mode, with their loss weights.
    # Weights from benchmarks/alignment.py (README "Alignment"): each objective's gradient on
    # the shared encoder differs by up to 60x (QA and MOP loudest, ITM and MLM quietest), and
    # with equal weights MLM and ITM learn slowly; ITC aligns the uni-modal layers before fusion
    # (ALBEF's "align before fuse"), which takes ITM off chance within a few hundred steps.
    # Single-stream ITM weighs 3, not 2: measured ITM 0.83 -> 0.85 single and 0.88 -> 0.89
    # two-stream, MLM no lower (one seed; README "Alignment").
    semvlp = {'mlm': 2.0, 'mop': 0.25, 'itm': 2.0, 'qa': 0.25, 'itc': 1.0}
    c.objectives = {'single': {**semvlp, 'itm': 3.0}, 'two': dict(semvlp)}

    c.model = dict(
        num_layers=4,
        num_cross_layers=2,  # K: cross-attention in the top K layers (two-stream mode)
        share_cross_attention=True,
        hidden_size=128,
        num_heads=4,
        mlp_size=512,
        dropout_rate=0.0,  # fresh synthetic data every step: dropout would only slow the demo
        visual_input='regions',
        region_norm='average',  # average (LXMERT) | layer_norm (region tokens at the text scale)
        dtype='float32',  # compute dtype of embeddings and encoder: float32 | bfloat16
        remat='none',  # per-layer rematerialisation: none | full | dots
        scan_layers=False,  # True: bottom L-K and top K layers as two scanned stacks
        # QA head output bias at start: zero, or the logit of 1/num_answers (prior).
        answer_bias='zero',
        contrastive_dim=64,  # > 0: a contrastive (ITC) head with embeddings of this size
        # BERT's numerics (a checkpoint from config.init_bert must use the same; config_checks
        # compares them with its config.json): exact | tanh GELU, and the LayerNorm epsilon.
        gelu='exact',
        layer_norm_eps=1e-12,
    )

    c.optimizer = dict(
        learning_rate=1e-3,
        warmup_steps=100,
        decay='linear',
        weight_decay=0.01,
        mu_dtype='float32',  # Adam first moment: float32 | bfloat16 (second moment stays f32)
        b1=0.9,
        b2=0.999,
        eps=1e-6,
        grad_clip_norm=1.0,
    )

    c.data = dict(
        name='synthetic',
        seed=0,
        num_train=20_000,  # scenes are generated on first use and then kept in memory
        num_val=512,
        vocab_size=128,  # sentencepiece vocabulary trained on the synthetic captions
        # 99% of the synthetic texts take <= 18 tokens with [CLS] and [SEP], 0.08% more than 20;
        # padding to 24 cost the demo a quarter of its time (README "Set-up").
        max_text_len=20,
        question_fraction=0.2,  # share of pre-training texts that are questions (QA objective)
        mlm_prob=0.15,
        max_mlm_predictions=6,
        mop_prob=0.15,
        max_mop_predictions=3,
        num_regions=8,
        feature_dim=64,
        min_objects=2,
        max_objects=5,
        feature_noise=0.3,
        reader_threads=2,
        input_workers=0,  # worker processes making batches (0: reader_threads threads here)
    )
    return ml_collections.ConfigDict(c)
