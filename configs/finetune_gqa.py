r"""Fine-tune the demo's pre-trained SemVLP on synthetic GQA (one exact answer per question).

    python -m semvlp_jax.main --config configs/demo.py --workdir /tmp/semvlp_demo
    python -m semvlp_jax.main --config configs/finetune_gqa.py:init=/tmp/semvlp_demo,mode=two \
        --workdir /tmp/semvlp_gqa

Each evaluation writes WORKDIR/gqa/submission_val_<mode>_step<N>.json in the official
submission format ([{"questionId", "prediction"}]) and reports accuracy overall and per
structural type.
"""

from configs import finetune


def get_config(arg: str | None = None):
    c = finetune.base(arg, dict(name='gqa', answer_min_count=1), {'qa': 1.0})
    c.init_skip = ('answer_head',)  # a new answer set: see finetune_vqa.py
    return c
