r"""SIMLA demo: the SIMLA recipe pre-trained on the embedded synthetic scenes, as pixels.

    python -m semvlp_jax.main --config configs/simla_demo.py --workdir /tmp/simla_demo

No downloads; runs on a laptop CPU (2 cores) in minutes. The recipe (README "SIMLA"): a ViT
tower over 16 x 16 patches of the 64 x 64 scenes; one text stack that reads the caption alone
and, fusing, cross-attends to the image in every layer (`schedule='fuse'`); a momentum teacher
(EMA of every parameter) with feature queues; five objectives: momentum contrastive over batch
and queue (`itc_momentum`), matching with sampled hard negatives (`itm_hard`), masked words
from the unmasked image (`xmm_text`), masked patches from the caption (`xmm_image`, targets of
the seeded random-projection quantizer, 8,192 codes), and the teacher's keywords predicted from
the image (`psl`). At the end it prints validation ITC / ITM / XMM accuracy and keyword
precision at the start and the end.

Variants: `--config.model.patch_head.tokenizer=pixels` (normalised-pixel regression instead of
codes); `--config.objectives.fuse.psl=0` (drop an objective); `--config.momentum.queue_size=0`
(contrast within the batch only).
"""

import ml_collections

from configs import demo


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = demo.get_config(arg)
    c.total_steps = 600
    c.eval_every = 300
    c.checkpoint_every = 300
    c.schedule = 'fuse'
    c.itm_negative_prob = 0.0  # itm_hard samples its own negatives
    c.best_metric = 'val/fuse/itm_accuracy'
    # SIMLA weighs its five losses alike.
    c.objectives = {
        'fuse': {
            'itc_momentum': 1.0,
            'itm_hard': 1.0,
            'xmm_text': 1.0,
            'xmm_image': 1.0,
            'psl': 1.0,
        }
    }
    # The teacher: EMA decay 0.995; distillation weight ramped to 0.4 over one epoch (20,000
    # scenes / 64 = 312 steps); queues of 1,024 teacher features (paper: 65,536 x 256).
    c.momentum = dict(decay=0.995, alpha=0.4, alpha_ramp_steps=312, queue_size=1024)
    c.model.update(
        num_cross_layers=c.model.num_layers,  # cross-attention in every layer (SIMLA's BERT)
        visual_input='patches',
        image_size=64,
        patch_size=16,
        vision_tower=dict(num_layers=2, width=128, num_heads=4, mlp_size=512, layer_norm_eps=1e-6),
        contrastive_dim=64,
        patch_head=dict(tokenizer='random_projection', codes=8192, dim=32, seed=0),
        concept_head=True,
    )
    c.data.update(
        question_fraction=0.0,  # SIMLA pre-trains on captions
        augment=dict(enabled=False, crop_scale=(0.2, 1.0), flip=True),  # captions say "left of"
        # SIMLA masks 75 of 256 patches (29%) in blocks of >= 16; here 4 of 16 in blocks of >= 2.
        patch_mask=dict(count=4, min_block=2, min_aspect=0.3),
    )
    return ml_collections.ConfigDict(c)
