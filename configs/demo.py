r"""Demo: pre-train a small SemVLP on the embedded synthetic dataset, alternating modes per step.

    python -m semvlp_jax.main --config configs/demo.py --workdir /tmp/semvlp_demo

Runs on a laptop CPU in under 5 minutes (2 cores), with no downloads: the scenes are generated
and the sentencepiece tokenizer is trained on their captions at first use. At the end it prints,
per mode, validation MLM / ITM / QA accuracy at the start and at the end, and writes
WORKDIR/metrics.json. Expect both modes to end far above chance (see README).
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.task = dict(name='pretrain')  # pretrain | vqa | gqa | nlvr2 | retrieval
    c.total_steps = 1400
    c.batch_size = 64
    c.microbatches = 1  # gradient accumulation: k slices of the batch per update
    c.schedule = 'alternate'  # alternate | random | single | two | both | every:N
    c.p_two_stream = 0.5  # for schedule='random'
    c.itm_negative_prob = 0.5  # share of pairs whose image is swapped for another in the batch
    c.eval_every = 350
    c.eval_batches = 4
    c.log_every = 100

    # Checkpoints (WORKDIR/checkpoints): saved every `checkpoint_every` steps, at every eval (with
    # its metrics), at the end and on SIGTERM / preemption notice; the last `keep_checkpoints`
    # are kept, plus the best by `best_metric` ('' for none; `best_metric_goal` says whether
    # higher or lower is better). Rerunning with the same workdir resumes exactly; `init_from`
    # (a checkpoint directory) starts a fine-tune from its parameters instead of a fresh
    # initialisation.
    c.checkpoint_every = 500
    c.keep_checkpoints = 2
    c.best_metric = 'val/two/itm_accuracy'
    c.best_metric_goal = 'max'  # max | min
    c.init_from = ''
    # A step whose loss or gradient is not finite applies no update and is counted
    # (train/skipped_steps); with policy='stop' the run stops after `max_in_a_row` such steps.
    c.nonfinite = dict(policy='skip', max_in_a_row=10)

    # Parallelism: mesh axis sizes (-1 takes the remaining devices) and a sharding preset
    # (data_parallel | fsdp | fsdp_tensor), or explicit logical-axis rules, e.g.
    # rules=(('embed', 'fsdp'), ('mlp', 'tensor')).
    c.mesh = dict(data=-1, fsdp=1, tensor=1)
    c.parallel = dict(preset='data_parallel', rules=())

    # Which objectives run in each mode, with their loss weights.
    all_four = {'mlm': 1.0, 'mop': 1.0, 'itm': 1.0, 'qa': 1.0}
    c.objectives = {'single': dict(all_four), 'two': dict(all_four)}

    c.model = dict(
        num_layers=4,
        num_cross_layers=2,  # K: cross-attention in the top K layers (two-stream mode)
        share_cross_attention=True,
        hidden_size=128,
        num_heads=4,
        mlp_size=512,
        dropout_rate=0.0,  # fresh synthetic data every step: dropout would only slow the demo
        visual_input='regions',
        dtype='float32',  # compute dtype of embeddings and encoder: float32 | bfloat16
        remat='none',  # per-layer rematerialisation: none | full | dots
        scan_layers=False,  # True: bottom L-K and top K layers as two scanned stacks
        contrastive_dim=0,  # > 0: a contrastive (ITC) head with embeddings of this size
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
        max_text_len=24,
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
    )
    return ml_collections.ConfigDict(c)
