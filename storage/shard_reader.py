"""Reading WebDataset shard datasets: layout, manifest, index, sample streams, shard splitting.

A dataset directory (see ARCHITECTURE.md, "Shards") looks like::

    DIR/<dataset>-000000.tar ...   WebDataset shards, one sample per clip (__key__ = clip_id)
    DIR/index.parquet              one row per sample, in write order
    DIR/manifest.json              written last: a dataset without it is incomplete

This module is the read side; :mod:`storage.shards` holds the writer and re-exports everything
public here; :mod:`storage.shard_format` defines the sample format both use. Paths may be
local or any fsspec URL (``s3://bucket/prefix``); an explicit fsspec filesystem can be passed
as ``fs``.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from storage.shard_format import INDEX_NAME, MANIFEST_NAME, decode_sample

PathLike = str | os.PathLike
ErrorHandler = Callable[[Exception], bool]


class IncompleteDatasetError(RuntimeError):
    """A shard directory has no manifest.json: its writer never finished (or is still running)."""


def resolve_fs(path: PathLike, fs: fsspec.AbstractFileSystem | None = None):
    """Return ``(fs, path)``: the given filesystem, or the one the path's URL names (local if none)."""
    if fs is not None:
        return fs, str(path)
    return fsspec.core.url_to_fs(str(path))


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """True when ``fs`` is the local filesystem, so plain ``os`` calls apply."""
    return isinstance(fs, LocalFileSystem)


def _join(fs: fsspec.AbstractFileSystem, directory: str, name: str) -> str:
    return os.path.join(directory, name) if is_local(fs) else f"{directory.rstrip('/')}/{name}"


def _to_url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A string that :func:`resolve_fs` maps back to ``path`` (plain path when local)."""
    return path if is_local(fs) else fs.unstrip_protocol(path)


def load_manifest(dataset_dir: PathLike, *, fs: fsspec.AbstractFileSystem | None = None) -> dict:
    """Load ``manifest.json``; raise :class:`IncompleteDatasetError` when the dataset has none."""
    fs, directory = resolve_fs(dataset_dir, fs)
    path = _join(fs, directory, MANIFEST_NAME)
    if not fs.exists(path):
        if not fs.exists(directory):
            raise FileNotFoundError(f"no shard dataset at {dataset_dir!s}")
        raise IncompleteDatasetError(
            f"incomplete dataset at {dataset_dir!s}: no {MANIFEST_NAME}, so its writer did not "
            "finish (killed or still running); re-run the shard job to complete it"
        )
    with fs.open(path, "rb") as f:
        return json.load(f)


def list_shards(dataset_dir: PathLike, *, fs: fsspec.AbstractFileSystem | None = None) -> list[str]:
    """Shard paths/URLs of a complete dataset, in manifest (= write) order."""
    manifest = load_manifest(dataset_dir, fs=fs)
    fs, directory = resolve_fs(dataset_dir, fs)
    return [_to_url(fs, _join(fs, directory, shard["name"])) for shard in manifest["shards"]]


def load_index(dataset_dir: PathLike, *, fs: fsspec.AbstractFileSystem | None = None) -> pa.Table:
    """The dataset's ``index.parquet`` as a table (one row per sample, write order).

    Refuses an incomplete dataset, whose index may belong to an earlier write.
    """
    load_manifest(dataset_dir, fs=fs)
    fs, directory = resolve_fs(dataset_dir, fs)
    with fs.open(_join(fs, directory, INDEX_NAME), "rb") as f:
        return pq.read_table(f)


def split_shards(
    shards: Sequence[str], rank: int, world_size: int, worker_id: int, num_workers: int
) -> list[str]:
    """The shards one data-loader worker of one data-parallel rank should read.

    Workers are numbered globally as ``g = rank * num_workers + worker_id`` out of
    ``world_size * num_workers``; worker ``g`` gets ``shards[g::world_size * num_workers]``.
    The assignment is deterministic and every shard goes to exactly one (rank, worker), so an
    epoch over all workers reads each shard once. With fewer shards than workers some workers
    get none: write more (smaller) shards, or read with ``resampled=True`` instead.

    Typical use in a torch ``DataLoader`` worker::

        info = torch.utils.data.get_worker_info()
        mine = split_shards(list_shards(d), rank, world, info.id, info.num_workers)
        samples = read_shards(mine)
    """
    if world_size < 1 or num_workers < 1:
        raise ValueError(f"world_size and num_workers must be >= 1, got {world_size}, {num_workers}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if not 0 <= worker_id < num_workers:
        raise ValueError(f"worker_id must be in [0, {num_workers}), got {worker_id}")
    n_global = world_size * num_workers
    return list(shards[rank * num_workers + worker_id :: n_global])


def _shard_urls(urls_or_dir: PathLike | Iterable[PathLike], fs) -> list[str]:
    """Expand a dataset dir (via its manifest), a shard path / brace pattern, or a list of them."""
    import webdataset as wds  # imports torch: keep it out of module import time

    if isinstance(urls_or_dir, (str, os.PathLike)):
        spec = str(urls_or_dir)
        if spec.endswith(".tar") or "{" in spec:
            return list(wds.shardlists.expand_urls(spec))
        return list_shards(spec, fs=fs)
    return [str(url) for url in urls_or_dir]


def _no_shards() -> Iterator[dict]:
    """Shard source of an empty dataset (``SimpleShardList`` refuses an empty list)."""
    return iter(())


def _open_tar_members(shards: Iterable[dict], fs, handler: ErrorHandler) -> Iterator[dict]:
    """Open each shard through fsspec and yield its tar members (webdataset's file records)."""
    import webdataset as wds

    for shard in shards:
        url = shard["url"]
        shard_fs, path = resolve_fs(url, fs)
        with shard_fs.open(path, "rb") as stream:
            source = [dict(url=url, stream=stream)]
            yield from wds.tariterators.tar_file_expander(source, handler=handler)


def read_shards(
    urls_or_dir: PathLike | Iterable[PathLike],
    *,
    decode: bool = True,
    shuffle: int = 0,
    resampled: bool = False,
    seed: int | None = None,
    fs: fsspec.AbstractFileSystem | None = None,
    handler: ErrorHandler | None = None,
) -> Iterable[dict[str, Any]]:
    """Stream samples from WebDataset shards with the webdataset library.

    ``urls_or_dir`` is a dataset directory (shards listed by its manifest.json; an incomplete
    dataset raises :class:`IncompleteDatasetError`), a shard path or brace pattern
    (``ds-{000000..000009}.tar``), or a list of shard paths/URLs (e.g. from
    :func:`split_shards`, which this function does not apply on its own).

    Samples are dicts with ``__key__``, ``__url__`` and one entry per member; with ``decode``
    they are ``mp4`` bytes, ``json`` dict, ``txt`` str, ``captions.json`` list and numpy arrays
    for ``*.npy``. ``shuffle > 0`` shuffles shard order and samples in a buffer of that size;
    ``resampled`` draws shards with replacement forever. ``seed`` makes both reproducible.
    ``handler`` decides per error whether to skip (return True) or re-raise (the default).
    The result is a ``wds.DataPipeline`` (a torch ``IterableDataset``), iterable many times.
    """
    import webdataset as wds

    handler = handler or wds.reraise_exception
    urls = _shard_urls(urls_or_dir, fs)
    if resampled:
        if not urls:
            raise ValueError(f"no shards to resample in {urls_or_dir!s}")
        source = wds.ResampledShards(urls, seed=seed or 0, deterministic=seed is not None)
    else:
        source = wds.SimpleShardList(urls) if urls else _no_shards  # empty dataset: no samples
    stages: list[Any] = [source]
    if shuffle > 0 and not resampled:
        stages.append(wds.shuffle(len(urls), initial=len(urls), seed=seed))
    stages.append(functools.partial(_open_tar_members, fs=fs, handler=handler))
    stages.append(functools.partial(wds.tariterators.group_by_keys, handler=handler))
    if shuffle > 0:
        stages.append(wds.shuffle(shuffle, initial=shuffle, seed=seed))
    if decode:
        stages.append(wds.map(decode_sample, handler=handler))
    return wds.DataPipeline(*stages)
