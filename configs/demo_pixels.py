r"""Demo with pixels: the demo's SemVLP pre-trained on the embedded scenes as images, no detector.

    python -m semvlp_jax.main --config configs/demo_pixels.py --workdir /tmp/semvlp_demo_pixels

The synthetic scenes rendered at 64 x 64 and cut into 16 x 16 patches (16 patch tokens and an
image [CLS]) that the shared encoder reads directly, SemVLP style (no vision tower). Everything
else is `configs/demo.py`: the same model, data, schedule and budget, minus masked object
prediction (it predicts detector regions). Runs on a laptop CPU in about the demo's time (2
cores), with no downloads; see README "Pixels" for the figures it ends with.

Variants: `--config.model.vision_tower.num_layers=2` puts a ViT tower of its own under the shared
encoder (SIMLA / ALBEF style); `--config.model.patch_size=8` reads 64 patches.
"""

import ml_collections

from configs import demo


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = demo.get_config(arg)
    c.model.update(
        visual_input='patches',
        image_size=64,
        patch_size=16,
        # num_layers=0: no tower, the encoder reads the patch tokens. > 0: a pre-LN ViT stack of
        # this depth and width first (projected to model.hidden_size when the widths differ).
        vision_tower=dict(num_layers=0, width=128, num_heads=4, mlp_size=512, layer_norm_eps=1e-6),
    )
    semvlp = {'mlm': 2.0, 'itm': 2.0, 'qa': 0.25, 'itc': 1.0}  # the demo's weights, no MOP
    c.objectives = {'single': {**semvlp, 'itm': 3.0}, 'two': dict(semvlp)}
    # Training views (data/pixels.py). Off here: the captions say "left of" and "large", which a
    # flip or a crop would make false; real photos take the default crop, flip and RandAugment.
    c.data.augment = dict(enabled=False, crop_scale=(0.2, 1.0), flip=True)
    # BEiT block masking of patches for masked patch modelling (SIMLA's objective); 0: off.
    c.data.patch_mask = dict(count=0, min_block=16, min_aspect=0.3)
    return ml_collections.ConfigDict(c)
