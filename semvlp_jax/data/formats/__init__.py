"""Readers and validators of the raw files vision-language users already have (no tfds here).

Each reader is a generator of `(key, record)`: `record` is the dataset's record type from
`semvlp_jax.data.records` (ids as strings). A problem with one record becomes a `BadInput`
handed to `on_bad`, which either raises it (the default, `stop`: the build ends at the first bad
record) or counts it and returns (the record is skipped). A file that cannot be read at all (not
JSON, wrong top-level type) raises `BadInput` directly: none of its records can be trusted, so
there is nothing to skip to. Which files form which split is decided by the
`*_files(manual_dir)` functions, which raise `InputError` when the files a dataset needs are not
there.

- `checks`: the kinds of bad input (`REASONS`), `BadInput`, `InputError`, `on_bad` policies,
  and the field, text and split-file helpers every reader uses
- `regions`: region-feature TSV and .npz files -> `RegionRecord`
- `captions`: COCO captions, ALBEF caption records, Karpathy -> `CaptionRecord`
- `images`: folders of image files -> `ImageRecord`; a caption's image file (`ImageReader`)
- `questions`: VQA v2, GQA, NLVR2 -> `VqaRecord`, `GqaRecord`, `Nlvr2Record`
"""

from semvlp_jax.data.formats.captions import (
    KARPATHY_SPLITS,
    caption_record_files,
    coco_caption_files,
    karpathy_file,
    read_caption_records,
    read_coco_captions,
    read_karpathy,
)
from semvlp_jax.data.formats.checks import (
    BAD_LABEL,
    BOX_OUTSIDE_IMAGE,
    DUPLICATE_ID,
    EMPTY_CAPTION,
    EMPTY_QUESTION,
    EMPTY_SENTENCE,
    MALFORMED_JSON,
    MALFORMED_RECORD,
    MALFORMED_TSV,
    MISSING_IMAGE,
    MISSING_IMAGE_SIZE,
    NO_FEATURES,
    NON_FINITE,
    REASONS,
    UNDECODABLE_IMAGE,
    WRONG_DIMENSION,
    BadInput,
    InputError,
    OnBad,
    load_json,
    split_name,
    stop,
)
from semvlp_jax.data.formats.images import (
    IMAGE_SUFFIXES,
    ImageReader,
    image_files,
    read_image_files,
)
from semvlp_jax.data.formats.questions import (
    NLVR2_LABELS,
    VQA_SPLITS,
    gqa_files,
    nlvr2_files,
    read_gqa,
    read_nlvr2,
    read_vqa,
    vqa_files,
)
from semvlp_jax.data.formats.regions import (
    BOX_TOLERANCE_PX,
    TSV_COLUMNS,
    RegionChecks,
    read_region_npz,
    read_region_tsv,
    region_npz_files,
    region_record,
    region_tsv_files,
)

__all__ = [
    'BAD_LABEL',
    'BOX_OUTSIDE_IMAGE',
    'BOX_TOLERANCE_PX',
    'DUPLICATE_ID',
    'EMPTY_CAPTION',
    'EMPTY_QUESTION',
    'EMPTY_SENTENCE',
    'IMAGE_SUFFIXES',
    'KARPATHY_SPLITS',
    'MALFORMED_JSON',
    'MALFORMED_RECORD',
    'MALFORMED_TSV',
    'MISSING_IMAGE',
    'MISSING_IMAGE_SIZE',
    'NLVR2_LABELS',
    'NON_FINITE',
    'NO_FEATURES',
    'REASONS',
    'TSV_COLUMNS',
    'UNDECODABLE_IMAGE',
    'VQA_SPLITS',
    'WRONG_DIMENSION',
    'BadInput',
    'ImageReader',
    'InputError',
    'OnBad',
    'RegionChecks',
    'caption_record_files',
    'coco_caption_files',
    'gqa_files',
    'image_files',
    'karpathy_file',
    'load_json',
    'nlvr2_files',
    'read_caption_records',
    'read_coco_captions',
    'read_gqa',
    'read_image_files',
    'read_karpathy',
    'read_nlvr2',
    'read_region_npz',
    'read_region_tsv',
    'read_vqa',
    'region_npz_files',
    'region_record',
    'region_tsv_files',
    'split_name',
    'stop',
    'vqa_files',
]
