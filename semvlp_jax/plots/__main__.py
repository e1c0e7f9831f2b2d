"""Command line of `semvlp_jax.plots` (see the package docstring)."""

from __future__ import annotations

import argparse
import sys

from semvlp_jax.models.encoder import MODES
from semvlp_jax.plots import attention, curves


def _words(value: str) -> list[str]:
    return [word for word in value.split(',') if word.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m semvlp_jax.plots', description='Pictures of a run: curves, attention.'
    )
    commands = parser.add_subparsers(dest='command', required=True)
    curve = commands.add_parser('curves', help='one PNG per metric from the histories')
    curve.add_argument('--workdir', required=True, help='the run directory')
    curve.add_argument('--out', default=None, help='output directory (default WORKDIR/plots)')
    curve.add_argument('--metrics', type=_words, default=None, help='only these, comma-separated')
    attend = commands.add_parser('attention', help='text->region attention on a val scene')
    attend.add_argument('--workdir', required=True, help='run directory, checkpoints/ or a step')
    attend.add_argument('--example', type=int, required=True, help='validation example index')
    attend.add_argument(
        '--tokens', type=_words, default=None, help='query words, comma-separated (default: all)'
    )
    attend.add_argument(
        '--modes', type=_words, default=None, help=f"of {','.join(MODES)} (default: the run's)"
    )
    attend.add_argument('--out', default=None, help='output directory (default WORKDIR/plots)')
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == 'curves':
            paths = curves.write_curves(args.workdir, args.out, args.metrics)
        else:
            unknown = sorted(set(args.modes or ()) - set(MODES))
            if unknown:
                raise ValueError(f'unknown mode(s) {", ".join(unknown)}; expected {MODES}')
            paths = [
                attention.write_attention(
                    args.workdir, args.example, args.tokens, args.out, args.modes
                )
            ]
    except (FileNotFoundError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
