r"""Fine-tune the demo's pre-trained SemVLP for image-text retrieval (5 captions per image).

    python -m semvlp_jax.main --config configs/demo.py --workdir /tmp/semvlp_demo
    python -m semvlp_jax.main \
        --config configs/finetune_retrieval.py:init=/tmp/semvlp_demo,mode=two \
        --workdir /tmp/semvlp_retrieval

Trains ITM (negatives from the global batch) and ITC (a new contrastive head on the uni-modal
bottom layers). Evaluation ranks the 5 * eval_images captions of eval_images validation images:
the contrastive embeddings shortlist the top shortlist_k candidates per query and ITM re-ranks
them (shortlist_k=0 scores every pair by ITM). Reports R@1/5/10 both ways and their sum (as
fractions; WORKDIR/retrieval/ keeps the percentages per evaluation), and R@1 both ways and rsum
of the contrastive embeddings' own order (`retrieval_shortlist_*`).

From an MVPTR run (`configs/mvptr_demo.py`, workdir /tmp/mvptr_demo):
    python -m semvlp_jax.main --config configs/finetune_retrieval.py:mode=staged \
        --workdir /tmp/mvptr_retrieval
trains MVPTR's pair, VSC and hardest-negative ITM, and shortlists by the VSC embeddings.
"""

from configs import finetune


def get_config(arg: str | None = None):
    c = finetune.base(
        arg, dict(name='retrieval', eval_images=100, shortlist_k=16), {'itm': 1.0, 'itc': 1.0}
    )
    if c.schedule == 'staged':
        # MVPTR's retrieval fine-tuning: VSC and ITM against the hardest in-batch negatives
        # (its own pairs: nothing swapped); the shortlist reads the run's VSC head.
        c.objectives = {'staged': {'vsc': 1.0, 'itm_hardest': 1.0}}
        return c
    c.itm_negative_prob = 0.5
    c.model.contrastive_dim = 64
    return c
