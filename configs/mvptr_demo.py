r"""MVPTR demo: the MVPTR recipe pre-trained on the embedded synthetic scenes' regions.

    python -m semvlp_jax.main --config configs/mvptr_demo.py --workdir /tmp/mvptr_demo

No downloads; runs on a laptop CPU (2 cores) in minutes. The recipe (README "MVPTR"): concepts
on both sides, the scene's object tags (shape names) as a `[CLS] tags [SEP]` segment ahead of
its regions and the caption's phrases (objects, attribute-object pairs, relation triples, one
vocabulary entry each) after its words; the staged mode (`schedule='staged'`): the bottom two
layers run the text and the visual sequence apart (the visual side through layers of its own),
the top two run joint self-attention over the text and the regions; five objectives: visual-
semantic contrast of the two uni-modal [CLS] (`vsc`), masked tags recovered from the visual
stage (`mcr`), MLM with phrases masked alongside their words (`mlm`), matching against the
hardest in-batch negatives (`itm_hardest`) and weakly supervised phrase grounding (`wpg`). At
the end it prints validation VSC / MCR / MLM / ITM / grounding accuracy at the start and the
end.

Variants: `--config.model.separate_visual_layers=False` (one set of uni-modal layers for both
modalities); `--config.model.concepts.keep_tags=True` (the tags enter the joint stage too);
`--config.objectives.staged.wpg=0` (drop an objective).
"""

import ml_collections

from configs import demo


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = demo.get_config(arg)
    c.total_steps = 600
    c.eval_every = 300
    c.checkpoint_every = 300
    c.schedule = 'staged'
    c.itm_negative_prob = 0.0  # itm_hardest pairs its own negatives
    c.best_metric = 'val/staged/itm_accuracy'
    # MVPTR sums its losses unweighted.
    c.objectives = {'staged': {'vsc': 1.0, 'mcr': 1.0, 'mlm': 1.0, 'itm_hardest': 1.0, 'wpg': 1.0}}
    c.model.update(
        num_layers=4,
        num_cross_layers=2,  # K joint layers over L-K uni-modal ones (paper: 6 + 6)
        cross_attention=False,  # the joint layers attend jointly: no cross-attention blocks
        separate_visual_layers=True,  # a visual encoder of its own, as the paper's
        contrastive_dim=64,
        concepts=dict(
            keep_tags=False,
            hard_negatives='hardest',
            grounding_layer=-1,
            grounding_margin=0.2,
            grounding_top_k=3,
        ),
    )
    c.data.update(
        question_fraction=0.0,  # captions only: questions have no phrases
        # Up to five shapes: [CLS] five tags [SEP] fit in 8; five phrase slots (the paper's 5).
        concepts=dict(
            max_tags=8,
            max_phrases=5,
            phrase_min_count=5,
            mcr_prob=0.15,
            max_mcr_predictions=2,
            phrase_mask_prob=0.15,
        ),
    )
    return ml_collections.ConfigDict(c)
