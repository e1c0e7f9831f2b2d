r"""Fine-tune the demo's pre-trained SemVLP on synthetic NLVR2 (one sentence, two images).

    python -m semvlp_jax.main --config configs/demo.py --workdir /tmp/semvlp_demo
    python -m semvlp_jax.main --config configs/finetune_nlvr2.py:init=/tmp/semvlp_demo,mode=two \
        --workdir /tmp/semvlp_nlvr2

The sentence is encoded with each image and the two pooled outputs are concatenated into the
pair head. Each evaluation writes WORKDIR/nlvr2/predictions_val_<mode>_step<N>.csv
(identifier,True|False) and reports accuracy and consistency.
"""

from configs import finetune


def get_config(arg: str | None = None):
    c = finetune.base(arg, dict(name='nlvr2'), {'nlvr2': 1.0})
    c.data.num_train = 8000  # two scenes per example
    return c
