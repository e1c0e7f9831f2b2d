r"""Command line: ask a trained run about one image.

    python -m semvlp_jax.predict --workdir /tmp/semvlp_vqa --image IMAGE.npz \
        --question "what color is the circle?" --top_k 3
    python -m semvlp_jax.predict --workdir /tmp/semvlp_demo --image features.tsv \
        --image_id 42 --text "a red circle" --text "two squares"

`--image` is a per-image region `.npz` or a bottom-up-attention TSV (then `--image_id` picks the
row, unless the file holds one image). `--question` prints the top answers with their scores;
each `--text` prints its ITM match probability, and its contrastive similarity when the model
has a contrastive head. See `semvlp_jax.inference` for the Python API.
"""

from __future__ import annotations

import argparse
import sys

from semvlp_jax.inference import InferenceError, Predictor, read_image
from semvlp_jax.models.encoder import MODES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m semvlp_jax.predict', description=__doc__.split('\n')[0]
    )
    parser.add_argument('--workdir', required=True, help='run directory, checkpoints/ or a step')
    parser.add_argument('--image', required=True, help='region features: .npz or .tsv')
    parser.add_argument('--image_id', default=None, help='the TSV row to read')
    parser.add_argument('--question', action='append', default=[], help='a question (repeatable)')
    parser.add_argument('--text', action='append', default=[], help='a text to match (repeatable)')
    parser.add_argument('--top_k', type=int, default=3, help='answers printed per question')
    parser.add_argument('--mode', choices=MODES, default=None, help="the run's mode by default")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.question and not args.text:
        _parser().error('give at least one --question or --text')
    try:
        predictor = Predictor.load(args.workdir, args.mode)
        image = read_image(args.image, args.image_id)
        print(f'image {image.image_id} ({len(image.features)} regions), {predictor.mode}-stream')
        for question in args.question:
            print(f'Q: {question}')
            for rank, answer in enumerate(predictor.answer(image, question, args.top_k), 1):
                print(f'  {rank}. {answer["answer"]}  {answer["score"]:.4f}')
        if args.text:
            scores = predictor.score_batch([image] * len(args.text), args.text)
            has_itc = predictor.run.params.get('contrastive_head') is not None
            similarities = predictor.similarity([image], args.text)[0] if has_itc else None
            for i, (text, score) in enumerate(zip(args.text, scores)):
                cosine = f'  similarity {similarities[i]:.4f}' if has_itc else ''
                print(f'T: {text}\n  match {score:.4f}{cosine}')
    except (InferenceError, FileNotFoundError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
