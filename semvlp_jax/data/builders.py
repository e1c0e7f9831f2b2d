"""tfds builders that turn raw vision-language files (read by `formats`) into datasets.

Each dataset stores one record type of `records.py` (`records.RECORD_TYPES[name]`); its tfds
schema is derived from the dataclass fields (`features_of`). Datasets are ArrayRecord files read
back without TensorFlow: `datasets.records(data_dir, name, split)` gives the records themselves
(`open_dataset(name, data_dir).as_data_source(split)` the stored numpy dicts, text as bytes).
Build them with `python -m semvlp_jax.data.build` or
`BUILDERS[name](data_dir=...).build(manual_dir)`.

- Visual datasets, region features (`region_tsv`, `region_npz`) or encoded image files
  (`image_files`, for models that read pixels), have one split, `images`, in input-file order,
  and an `image_ids.txt` (`ImageIndex`) beside the records: record i is the i-th id.
- Text datasets (captions, `vqa_v2`, `gqa`, `nlvr2`) carry image ids; given an `ImageIndex` of a
  visual dataset, a record whose image is not in it is bad input.

A bad record stops the build with a `formats.BadInput` naming file, record and reason; with
`skip_bad=True` it is skipped and counted in the `BuildReport` (`build_report.py`, saved as
`build_report.json` beside the records). What a build writes appears at once or not at all: tfds
builds into a temporary directory and renames it, and the index and report are written inside.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from semvlp_jax.data import formats, records
from semvlp_jax.data.build_report import BuildReport, load_report
from semvlp_jax.data.image_index import ImageIndex

DATASET_VERSION = '1.1.0'
# Caption datasets (their records gained MVPTR's `phrases`): a dataset built before reads as not
# built, with the command that rebuilds it, rather than failing to decode. The others keep
# DATASET_VERSION, so region features need no rebuild.
CAPTION_DATASET_VERSION = '1.2.0'
VISUAL_SPLIT = 'images'  # the one split of a visual (region or image-file) dataset

# How a split's records are read: on_bad -> (key, record) pairs.
Reader = Callable[..., Iterator[tuple[str, records.Record]]]


# ---------------------------------------------------------------- schemas


def features_of(record_type: type) -> tfds.features.FeaturesDict:
    """The stored schema of a record type, one feature per dataclass field."""
    return tfds.features.FeaturesDict(
        {field.name: _feature(record_type, field) for field in dataclasses.fields(record_type)}
    )


def _feature(record_type: type, field: dataclasses.Field):
    kind = field.type  # a string: records.py postpones its annotations
    if kind == 'str':
        return tfds.features.Text()
    if kind == 'int':
        return np.int32
    if kind == 'bytes':
        return _tensor((None,), np.uint8)
    if kind == 'tuple[str, ...]':
        return tfds.features.Sequence(tfds.features.Text())
    if kind == 'np.ndarray':
        shape, dtype = field.metadata[records.ARRAY]
        return _tensor(shape, dtype)
    raise TypeError(f'{record_type.__name__}.{field.name}: no stored form for type {kind!r}')


def _tensor(shape: tuple, dtype) -> tfds.features.Tensor:
    # Raw bytes plus shape: the compact encoding, and the only one for two unknown dimensions.
    return tfds.features.Tensor(shape=shape, dtype=dtype, encoding='bytes')


# ---------------------------------------------------------------- builders


class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """What every dataset here shares: manual files in, bad-record policy, report out."""

    VERSION = tfds.core.Version(DATASET_VERSION)
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        '1.0.0': 'First release.',
        '1.1.0': 'Schemas derived from the record types: ids as text, VQA answer confidences.',
        '1.2.0': 'Caption records carry MVPTR phrases (caption datasets only).',
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = 'Put the raw files in the manual directory (see the builder).'
    # 'regions', 'images', 'captions' or 'text': which builder options apply (the CLI checks
    # them).
    KIND: ClassVar[str] = ''
    # Region records are looked up by position, so they keep file order; tfds shuffles others.
    ORDERED: ClassVar[bool] = False
    # tfds looks for a download-checksums file beside the builder's source; nothing is
    # downloaded here, and finding that path needs importlib_resources, which a TF-free
    # install may lack.
    code_path = None

    def __init__(self, *, data_dir: str | Path | None = None, skip_bad: bool = False, **kwargs):
        self.skip_bad = skip_bad
        self.report = BuildReport(self.name, version=str(self.VERSION))
        kwargs.setdefault('file_format', 'array_record')
        super().__init__(data_dir=None if data_dir is None else str(data_dir), **kwargs)

    def build(self, manual_dir: str | Path) -> BuildReport:
        """Builds from the raw files in `manual_dir`; when built already, the saved report."""
        if is_built(self):
            return load_report(self)
        manual_dir = Path(manual_dir)
        if not manual_dir.is_dir():
            raise FileNotFoundError(f'manual directory {manual_dir} does not exist')
        if not any(manual_dir.iterdir()):
            raise FileNotFoundError(f'manual directory {manual_dir} is empty')
        # tfds wants a download directory even with nothing to download; keep it out of data_dir.
        with tempfile.TemporaryDirectory(prefix='semvlp_downloads_') as downloads:
            self.download_and_prepare(
                download_dir=downloads,
                download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)),
            )
        self.report.data_dir = str(self.data_dir)
        return self.report

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=features_of(records.RECORD_TYPES[self.name]),
            disable_shuffling=self.ORDERED,
        )

    def _readers(self, manual_dir: Path) -> dict[str, Reader]:
        """{split: reader}; each reader takes `on_bad=` and yields (key, record)."""
        raise NotImplementedError

    def _finish(self, directory: Path) -> None:
        """Writes what belongs beside the records, into the not yet renamed directory."""

    def _download_and_prepare(self, dl_manager, download_config=None) -> None:
        self.report = BuildReport(self.name, version=str(self.VERSION))
        super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)
        # self.data_dir is tfds's temporary directory until this returns: files written now
        # appear together with the records.
        self._finish(Path(self.data_dir))
        self.report.save(self.data_dir)

    def _split_generators(self, dl_manager):
        readers = self._readers(Path(dl_manager.manual_dir))
        return {split: self._generate_examples(split, read) for split, read in readers.items()}

    def _generate_examples(self, split: str, read: Reader):
        written = 0
        for key, record in read(on_bad=functools.partial(self._on_bad, split)):
            written += 1
            yield key, records.to_stored(record)
        if not written:
            firsts = self.report.first_skipped.get(split, {}).values()
            why = f'every record was bad; first: {next(iter(firsts))}' if firsts else 'no records'
            raise formats.InputError(f'{self.name} split {split!r} has nothing to write: {why}')
        self.report.written[split] = written

    def _on_bad(self, split: str, error: formats.BadInput) -> None:
        if not self.skip_bad:
            raise error
        self.report.skip(split, error)


class _RegionBuilder(_Builder, skip_registration=True):
    KIND = 'regions'
    ORDERED = True

    def __init__(self, *, feature_dim: int | None = None, **kwargs):
        self.feature_dim = feature_dim
        self._image_ids: list[str] = []
        self._checks = formats.RegionChecks(feature_dim)
        super().__init__(**kwargs)

    # The format's reader functions: manual_dir -> files; (file, checks=, on_bad=) -> records.
    find_files: ClassVar[Callable[[Path], list[Path]]]
    read_file: ClassVar[Callable[..., Iterator[tuple[str, records.RegionRecord]]]]

    def _readers(self, manual_dir):
        files = self.find_files(manual_dir)
        self._image_ids = []
        self._checks = formats.RegionChecks(self.feature_dim)  # one dimension over all files

        def read(on_bad):
            for path in files:
                for key, record in self.read_file(path, checks=self._checks, on_bad=on_bad):
                    # Records are written in the order they are yielded (ORDERED).
                    self._image_ids.append(record.image_id)
                    yield key, record

        return {VISUAL_SPLIT: read}

    def _finish(self, directory):
        self.report.feature_dim = self._checks.feature_dim
        write_image_index(self, self._image_ids, directory)


class RegionTsv(_RegionBuilder, skip_registration=True):
    """Region features from LXMERT-style 10-column TSV files (every *.tsv, sorted by name)."""

    name = 'region_tsv'
    MANUAL_DOWNLOAD_INSTRUCTIONS = 'Put the *.tsv region-feature files in the manual directory.'
    find_files = staticmethod(formats.region_tsv_files)
    read_file = staticmethod(formats.read_region_tsv)


class RegionNpz(_RegionBuilder, skip_registration=True):
    """Region features from per-image .npz files (recursive, sorted; image id = file stem)."""

    name = 'region_npz'
    MANUAL_DOWNLOAD_INSTRUCTIONS = 'Put the per-image *.npz files under the manual directory.'
    find_files = staticmethod(formats.region_npz_files)
    read_file = staticmethod(formats.read_region_npz)


class ImageFiles(_Builder, skip_registration=True):
    """Encoded image files (every *.jpg, *.jpeg, *.png, *.webp, *.bmp under the manual
    directory, recursive, sorted; image id = file stem), each decoded once at build time."""

    name = 'image_files'
    KIND = 'images'
    ORDERED = True
    MANUAL_DOWNLOAD_INSTRUCTIONS = 'Put the image files (any folders) under the manual directory.'

    def __init__(self, **kwargs):
        self._image_ids: list[str] = []
        super().__init__(**kwargs)

    def _readers(self, manual_dir):
        files = formats.image_files(manual_dir)
        self._image_ids = []

        def read(on_bad):
            for key, record in formats.read_image_files(manual_dir, files, on_bad=on_bad):
                self._image_ids.append(record.image_id)  # written in this order (ORDERED)
                yield key, record

        return {VISUAL_SPLIT: read}

    def _finish(self, directory):
        write_image_index(self, self._image_ids, directory)


def write_image_index(
    builder: tfds.core.DatasetBuilder,
    image_ids: list[str] | None = None,
    directory: str | Path | None = None,
) -> Path:
    """Writes `image_ids.txt` of a visual dataset into `directory` (default its data_dir).

    Builds write it themselves; without `image_ids` they are read back from the records, which
    decodes every record (use it to repair a dataset built some other way)."""
    if image_ids is None:
        source = builder.as_data_source(VISUAL_SPLIT)
        image_ids = [source[i]['image_id'].decode('utf-8') for i in range(len(source))]
    return ImageIndex(image_ids).write(directory or builder.data_dir)


class _TextBuilder(_Builder, skip_registration=True):
    KIND = 'text'

    def __init__(self, *, image_index: ImageIndex | None = None, **kwargs):
        self.image_index = image_index
        super().__init__(**kwargs)


class _CaptionBuilder(_TextBuilder, skip_registration=True):
    KIND = 'captions'
    VERSION = tfds.core.Version(CAPTION_DATASET_VERSION)

    def __init__(self, *, images: bool = False, **kwargs):
        self.images = images
        super().__init__(**kwargs)

    def _options(self, manual_dir: Path) -> dict[str, Any]:
        images = formats.ImageReader(manual_dir) if self.images else None
        return {'image_index': self.image_index, 'images': images}


class CocoCaptions(_CaptionBuilder, skip_registration=True):
    """COCO captions: every captions_<split>.json under the manual directory is split <split>;
    images are <manual_dir>/<split>/<file_name>."""

    name = 'coco_captions'
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        'Put annotations/captions_<split>.json (and, for --images, the <split>/ image folders) '
        'in the manual directory.'
    )

    def _readers(self, manual_dir):
        options = self._options(manual_dir)
        return {
            split: functools.partial(
                formats.read_coco_captions,
                path,
                image_dir=path.stem.removeprefix('captions_'),
                **options,
            )
            for split, path in formats.coco_caption_files(manual_dir).items()
        }


class CaptionRecords(_CaptionBuilder, skip_registration=True):
    """ALBEF/SIMLA caption records: every *.json in the manual directory is a split (its stem);
    image paths are relative to the manual directory."""

    name = 'caption_records'
    MANUAL_DOWNLOAD_INSTRUCTIONS = 'Put the [{"image", "caption"}] *.json files in the manual dir.'

    def _readers(self, manual_dir):
        options = self._options(manual_dir)
        return {
            split: functools.partial(formats.read_caption_records, path, **options)
            for split, path in formats.caption_record_files(manual_dir).items()
        }


class Karpathy(_CaptionBuilder, skip_registration=True):
    """Karpathy split file (dataset_coco.json / dataset_flickr30k.json): splits train (train +
    restval), val and test; image paths are [filepath/]filename under the manual directory."""

    name = 'karpathy'
    MANUAL_DOWNLOAD_INSTRUCTIONS = 'Put the one dataset_*.json Karpathy file in the manual dir.'

    def _readers(self, manual_dir):
        path = formats.karpathy_file(manual_dir)
        options = self._options(manual_dir)
        return {
            split: functools.partial(formats.read_karpathy, path, split=split, **options)
            for split in ('train', 'val', 'test')
        }


class VqaV2(_TextBuilder, skip_registration=True):
    """VQA v2 official questions (+ annotations): train2014 -> train, val2014 -> val,
    test2015 -> test, test-dev2015 -> test_dev."""

    name = 'vqa_v2'
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        'Put v2_OpenEnded_mscoco_<split>_questions.json and v2_mscoco_<split>_annotations.json '
        'in the manual directory.'
    )

    def _readers(self, manual_dir):
        return {
            split: functools.partial(
                formats.read_vqa, questions, annotations, image_index=self.image_index
            )
            for split, (questions, annotations) in formats.vqa_files(manual_dir).items()
        }


class Gqa(_TextBuilder, skip_registration=True):
    """GQA balanced questions: <split>_balanced_questions.json -> split <split>."""

    name = 'gqa'
    MANUAL_DOWNLOAD_INSTRUCTIONS = 'Put <split>_balanced_questions.json in the manual directory.'

    def _readers(self, manual_dir):
        return {
            split: functools.partial(formats.read_gqa, path, image_index=self.image_index)
            for split, path in formats.gqa_files(manual_dir).items()
        }


class Nlvr2(_TextBuilder, skip_registration=True):
    """NLVR2 statements: every *.json / *.jsonl (one object per line) is a split (its stem)."""

    name = 'nlvr2'
    MANUAL_DOWNLOAD_INSTRUCTIONS = 'Put train.json, dev.json, test1.json in the manual directory.'

    def _readers(self, manual_dir):
        return {
            split: functools.partial(formats.read_nlvr2, path, image_index=self.image_index)
            for split, path in formats.nlvr2_files(manual_dir).items()
        }


BUILDERS: dict[str, type[_Builder]] = {
    cls.name: cls
    for cls in (
        RegionTsv,
        RegionNpz,
        ImageFiles,
        CocoCaptions,
        CaptionRecords,
        Karpathy,
        VqaV2,
        Gqa,
        Nlvr2,
    )
}


def builder_class(name: str) -> type[_Builder]:
    if name not in BUILDERS:
        raise ValueError(f'unknown dataset {name!r}; expected one of {", ".join(BUILDERS)}')
    return BUILDERS[name]


def build_command(name: str, data_dir: str | Path, manual_dir: str = 'RAW_DIR') -> str:
    return (
        f'python -m semvlp_jax.data.build --dataset {name} --manual_dir {manual_dir} '
        f'--data_dir {data_dir}'
    )


def is_built(builder: tfds.core.DatasetBuilder) -> bool:
    """Whether the builder's version directory holds a finished dataset (tfds writes these
    files last; `is_prepared` says the same but logs a warning when the answer is no)."""
    directory = epath.Path(builder.data_dir)
    return all((directory / name).is_file() for name in ('dataset_info.json', 'features.json'))


def open_dataset(name: str, data_dir: str | Path) -> tfds.core.DatasetBuilder:
    """The built dataset `name` in `data_dir`; FileNotFoundError (saying how to build it) when
    it is not there."""
    builder = builder_class(name)(data_dir=data_dir)
    if not is_built(builder):
        raise FileNotFoundError(
            f'dataset {name} {builder.version} is not built in {data_dir}; build it with: '
            f'{build_command(name, data_dir)}'
        )
    return builder
