"""Build a dataset from raw files: `python -m semvlp_jax.data.build --dataset NAME
--manual_dir RAW --data_dir OUT [--skip_bad] [--features REGION_NAME] [--feature_dim D]
[--images] [--overwrite]`.

Datasets: region_tsv, region_npz (region features), image_files (encoded images, for models
that read pixels), coco_captions, caption_records, karpathy (captions), vqa_v2, gqa, nlvr2.
`--features` names a region or image-file dataset already built in the same `--data_dir`: every
record of a text dataset must then have its image there. `--images` stores each caption's image
file in its record (caption datasets only).
Prints per split the records written and skipped (by reason, with the first of each). Exit
status 0 on success, 2 on bad input or bad arguments (the message says which file and record).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence

from semvlp_jax.data import build_report, builders, formats
from semvlp_jax.data.image_index import ImageIndex

# Which options apply to which builder kind (`_Builder.KIND`).
_OPTION_KINDS = {
    'feature_dim': ('regions',),
    'images': ('captions',),
    'features': ('captions', 'text'),
}


# Builder kinds whose image index text datasets can be checked against (--features).
VISUAL_KINDS = ('regions', 'images')


class UsageError(Exception):
    """An argument that names no dataset or does not apply to this one."""


def _builder_class(name: str, flag: str) -> type:
    if name not in builders.BUILDERS:
        raise UsageError(
            f'{flag} {name!r} is not a dataset; expected one of {", ".join(builders.BUILDERS)}'
        )
    return builders.BUILDERS[name]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m semvlp_jax.data.build',
        description='Build a tfds ArrayRecord dataset from raw vision-language files.',
    )
    parser.add_argument('--dataset', required=True, help=', '.join(builders.BUILDERS))
    parser.add_argument('--manual_dir', required=True, help='directory of the raw files')
    parser.add_argument('--data_dir', required=True, help='where built datasets live')
    parser.add_argument(
        '--skip_bad', action='store_true', help='skip and count bad records instead of stopping'
    )
    parser.add_argument(
        '--features',
        metavar='REGION_NAME',
        help='region or image-file dataset built in --data_dir that must hold every image',
    )
    parser.add_argument(
        '--feature_dim', type=int, help='region feature size (default: the first record)'
    )
    parser.add_argument(
        '--images', action='store_true', help='store each caption image file (captions only)'
    )
    parser.add_argument('--overwrite', action='store_true', help='rebuild if already built')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # argparse has printed why
        return int(exit_.code or 0)
    try:
        return _build(args)
    except (formats.BadInput, formats.InputError, FileNotFoundError, UsageError) as error:
        # Bad input is the user's to fix, and the message says where: no traceback.
        print(f'error: {error}', file=sys.stderr)
        return 2


def _build(args: argparse.Namespace) -> int:
    cls = _builder_class(args.dataset, '--dataset')
    options = {'feature_dim': args.feature_dim, 'images': args.images, 'features': args.features}
    for option, value in options.items():
        if value is not None and value is not False and cls.KIND not in _OPTION_KINDS[option]:
            raise UsageError(f'--{option} does not apply to dataset {args.dataset}')
    if args.feature_dim is not None and args.feature_dim <= 0:
        raise UsageError(f'--feature_dim must be positive, got {args.feature_dim}')
    kwargs = {'data_dir': args.data_dir, 'skip_bad': args.skip_bad}
    if cls.KIND == 'regions':
        kwargs['feature_dim'] = args.feature_dim
    if cls.KIND == 'captions':
        kwargs['images'] = args.images
    if args.features:
        if _builder_class(args.features, '--features').KIND not in VISUAL_KINDS:
            raise UsageError(
                f'--features {args.features} is not a region-feature or image-file dataset'
            )
        visual = builders.open_dataset(args.features, args.data_dir)
        holds = 'image file' if visual.KIND == 'images' else 'region features'
        kwargs['image_index'] = ImageIndex.read(visual.data_dir, holds)

    builder = cls(**kwargs)
    if builders.is_built(builder):
        if not args.overwrite:
            print(f'{args.dataset} is already built (pass --overwrite to rebuild it):')
            print(build_report.load_report(builder).format())
            return 0
        shutil.rmtree(builder.data_dir)
        builder = cls(**kwargs)  # tfds read the old dataset's info when it was made
    report = builder.build(args.manual_dir)
    print(report.format())
    return 0


if __name__ == '__main__':
    sys.exit(main())
