"""What a catalogue entry is made of: where each file comes from, where it lands (a config key), what to check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union


@dataclass(frozen=True)
class Dest:
    """Where a fetched file lands, named by a key of the composed run config (never a second copy of the layout).

    kind "file":   the file is written at the path `cfg[key]` names.
    kind "tree":   `key` names a folder; the file goes to `<folder>/<subpath>` (default: its path in the repo).
    kind "unpack": the file is an archive (zip or tar) unpacked into the folder `cfg[key]`; `strip` is a leading
                   folder the archive puts every member in (dropped when all members have it), `include` keeps
                   only members matching these globs (after `strip`; empty = everything).
    """

    key: str
    kind: str = "file"
    subpath: str = ""
    strip: str = ""
    include: tuple[str, ...] = ()


@dataclass(frozen=True)
class HubFile:
    """A file (or glob of files) of a Hugging Face Hub repo and where it goes."""

    pattern: str
    dest: Dest


@dataclass(frozen=True)
class HubSource:
    """Files of one Hub repo, fetched with `snapshot_download(allow_patterns=...)`; sizes and checksums come from
    the Hub's own file listing (LFS sha256, git blob ids)."""

    repo_id: str
    files: tuple[HubFile, ...]
    repo_type: str = "dataset"
    revision: str = "main"

    @property
    def label(self) -> str:
        return f"hf://{'datasets/' if self.repo_type == 'dataset' else ''}{self.repo_id}@{self.revision}"


@dataclass(frozen=True)
class UrlSource:
    """A file at an official URL (not on the Hub): resumable download with HTTP Range into a `.part` file, renamed
    only when complete with the size (and the checksum, where known) checked.

    `python_string`: the URL is a Python source file and what is written is the string literal assigned to this
    module-level name (e.g. MM-Vet's grader prompt, which is published only inside its evaluator script).
    """

    url: str
    dest: Dest
    size: Optional[int] = None
    sha256: Optional[str] = None
    md5: Optional[str] = None
    python_string: Optional[str] = None

    @property
    def label(self) -> str:
        return self.url

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class UrlListSource:
    """One URL per distinct value of `field` in a JSON-lines file fetched before (`listing_key`/`listing_file`):
    e.g. the 30 COCO val2014 images LLaVA-Bench (COCO) asks about, rather than the 6 GB val2014 archive.
    `{value}` in `url` and `dest.subpath` is replaced by each value."""

    listing_key: str
    listing_file: str
    field: str
    url: str
    dest: Dest

    @property
    def label(self) -> str:
        return self.url.replace("{value}", "*")


Source = Union[HubSource, UrlSource, UrlListSource]


@dataclass(frozen=True)
class Records:
    """A count check (and, with `images`, an image check) on one prepared file.

    `key`/`file`: the file is `cfg[key]`, or `<cfg[key]>/<file>` when `file` is set (a glob sums the rows of every
    matching CSV file, e.g. MMLU's `test/*_test.csv`; `expected_files` is then how many files must match).
    Records are JSON list items, JSON object entries (MM-Vet), JSON-lines lines, TSV rows or CSV rows.
    `images`: config key of the image folder (`images_sub` below it) the records' `image_field` names;
    `image_prefixes`: name prefixes tried in turn (COCO files are named `COCO_val2014_<number>.jpg`).
    """

    key: str
    file: str = ""
    expected: Optional[int] = None
    what: str = "records"
    expected_files: Optional[int] = None
    images: Optional[str] = None
    images_sub: str = ""
    image_field: str = "image"
    image_prefixes: tuple[str, ...] = ("",)
    expected_images: Optional[int] = None
    required_keys: tuple[str, ...] = ()  # a JSON object must have these keys (LLaVA's rule.json)
    source: str = ""  # where the published count comes from


@dataclass(frozen=True)
class Entry:
    """One data set or benchmark: its sources, the config it is composed with, and its checks."""

    name: str
    title: str
    kind: str  # "train" | "eval"
    # Config overrides that select this data set (`data=llava_80k`), so that its destination keys resolve.
    overrides: tuple[str, ...]
    sources: tuple[Source, ...]
    checks: tuple[Records, ...] = ()
    note: str = ""
    # Extra bytes needed on disk beyond the downloads (unpacked archives), for the free-space check.
    unpacked_bytes: Optional[int] = None

    def dest_keys(self) -> list[str]:
        keys = []
        for source in self.sources:
            dests = [f.dest for f in source.files] if isinstance(source, HubSource) else [source.dest]
            for dest in dests:
                if dest.key not in keys:
                    keys.append(dest.key)
        return keys
