"""Finding, checking, downloading and unpacking source files, with errors a user can act on.

The rule throughout: the network is reached only from :func:`download_file`, which is only
called when ``data.download`` is true; everything else works on files already on disk.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

from r2kd.errors import DataError


def digests(path: Path, chunk: int = 1 << 20) -> tuple[str, str]:
    """(md5, sha256) of a file in one pass: MD5 to compare with published sums, SHA-256 for meta."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(chunk), b""):
                md5.update(block)
                sha.update(block)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return md5.hexdigest(), sha.hexdigest()


def check_file(path: Path, rel: str, checksums: Mapping[str, str]) -> str:
    """Verify ``path`` against the MD5 published for ``rel`` (if any); return its sha256."""
    md5, sha = digests(path)
    expected = checksums.get(rel)
    if expected is not None and md5 != expected.lower():
        raise DataError(
            f"{path} is corrupt or not the official file: MD5 {md5}, expected {expected}. "
            f"{offline_fix(path, expected)}"
        )
    return sha


def shown(path: Path) -> Path:
    """``path`` as the user configured it, made absolute WITHOUT following symbolic links.

    Advice names this path, never ``path.resolve()``: a dataset file may be a link to anything (a
    shared copy, or /etc/shadow), and telling the user to overwrite or delete the link's target
    would have them destroy a file that is not theirs to touch.
    """
    return Path(os.path.abspath(path))


def link_note(path: Path) -> str:
    """For a symbolic link: how to replace the link itself (empty for anything else)."""
    if not path.is_symlink():
        return ""
    return (f" {shown(path)} is a symbolic link: remove the link itself (`rm {shown(path)}` removes only the link) "
            "before putting anything there; do not overwrite or delete what it points to.")


def offline_fix(path: Path, md5: str) -> str:
    """The way out of a bad source file that needs no network here: which file, where, which sum."""
    if path.is_symlink():
        return (
            f"{shown(path)} is a symbolic link: remove the link itself (`rm {shown(path)}` removes only the link; "
            f"do not overwrite or delete the file it points to) and place the official file (MD5 {md5}) there, "
            f"e.g. copied from a machine that has it; with data.download: true a *missing* file is fetched, so "
            f"removing the link also works online."
        )
    return (
        f"Place the official file (MD5 {md5}) at {shown(path)}, e.g. copied from a machine that has "
        f"it; with data.download: true a *missing* file is fetched, so deleting this one also works online."
    )


def missing_file_error(dataset: str, filename: str, directory: Path, url: str | None) -> DataError:
    where = f" from {url}" if url else ""
    fetch = " or set data.download: true to fetch it" if url else ""
    return DataError(
        f"{dataset}: {filename} not found. Put the official file{where} in {shown(directory)}/"
        f"{fetch} (nothing is downloaded unless data.download is true)."
    )


def download_file(url: str, directory: Path, filename: str, md5: str | None) -> None:
    """Fetch ``url`` to ``directory/filename`` with torchvision's downloader (it checks the MD5)."""
    from torchvision.datasets.utils import download_url

    try:
        download_url(url, str(directory), filename=filename, md5=md5)
    except Exception as exc:  # URLError, HTTPError, RuntimeError("File not found or corrupted.")
        partial = directory / filename
        if partial.exists() and md5 is not None:
            partial.unlink()  # a failed or corrupt download must not look like a good archive
        raise DataError(
            f"could not download {url} to {shown(directory)}/{filename}: {exc}. "
            f"Download it by hand and put it there, with data.download: false."
        ) from exc


def fetch(
    dataset: str, root: Path, rel: str, urls: list[str], download: bool, md5: str | None
) -> Path:
    """Return ``root/rel``; if absent, download it (trying each mirror) or explain where to put it."""
    path = root / rel
    if path.is_file():
        return path
    if not download:
        raise missing_file_error(dataset, path.name, path.parent, urls[0] if urls else None)
    if not urls:
        raise missing_file_error(dataset, path.name, path.parent, None)
    errors = []
    for url in urls:
        try:
            download_file(url, path.parent, path.name, md5)
            return path
        except DataError as exc:
            errors.append(str(exc))
    raise DataError("; ".join(errors))


def install_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Rename a fully written temporary directory into place; tolerate a concurrent twin."""
    try:
        os.replace(tmp_dir, final_dir)
    except OSError:
        # Another prepare (e.g. a parallel Snakemake job) installed it first; theirs is checked
        # like any existing directory, ours is discarded.
        if not final_dir.is_dir():
            raise
        shutil.rmtree(tmp_dir, ignore_errors=True)


def make_tmp_dir(parent: Path, name: str) -> Path:
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise DataError(f"cannot create a temporary directory in {parent}: {exc.strerror or exc}") from exc
