r"""Fine-tune the demo's pre-trained SemVLP on synthetic VQA v2, and score it like the official tool.

    python -m semvlp_jax.main --config configs/demo.py --workdir /tmp/semvlp_demo
    python -m semvlp_jax.main --config configs/finetune_vqa.py:init=/tmp/semvlp_demo,mode=two \
        --workdir /tmp/semvlp_vqa

`mode=single` fine-tunes and evaluates single-stream; `init=` trains from scratch. Each evaluation
writes WORKDIR/vqa/results_val_<mode>_step<N>.json in the official results format next to the
split's questions and annotations, so
    python -m semvlp_jax.evaluators.vqa_eval --questions /tmp/semvlp_vqa/vqa/val_questions.json \
        --annotations /tmp/semvlp_vqa/vqa/val_annotations.json \
        --results /tmp/semvlp_vqa/vqa/results_val_two_step600.json
prints the same accuracy (overall, per answer type, per question type).

From an MVPTR run (`configs/mvptr_demo.py`, workdir /tmp/mvptr_demo): `mode=staged`, the answer
head on the joint stage's text [CLS], each image with its object tags (questions have no
phrases).
"""

from configs import finetune


def get_config(arg: str | None = None):
    c = finetune.base(arg, dict(name='vqa', answer_min_count=9), {'qa': 1.0})
    # The answer vocabulary is built anew from the training answers: the pre-trained answer
    # classifier's rows would belong to other answers.
    c.init_skip = ('answer_head',)
    return c
