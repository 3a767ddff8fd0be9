"""Finding, checking, downloading and unpacking source files, with errors a user can act on.

The rule throughout: the network is reached only from :func:`download_file`, which is only
called when ``data.download`` is true; everything else works on files already on disk.
"""

from __future__ import annotations

import hashlib
import os
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


# --- who verified a source file: the published sums ("official") or the user's data.checksums pin ---
def official(how: str) -> dict[str, str]:
    """A verification record for meta.json's ``verified.files``: matched a published hash."""
    return {"by": "official", "how": how}


def check_pin(path: Path, rel: str, sha: str, pins: Mapping[str, str],
              where: str | None = None) -> dict[str, str] | None:
    """Check ``path`` (SHA-256 ``sha``) against the user's pin for ``rel``; None when it is not pinned.

    A pin is checked whatever the published sums say: it is the user's statement of which copy
    this is, and a different file under that name is refused.
    """
    expected = pins.get(rel)
    if expected is None:
        return None
    if sha != expected:
        raise DataError(
            f"{where or shown(path)} is not the copy you pinned: data.checksums in params.yaml gives {rel} the SHA-256 "
            f"{expected}, this file has {sha}. Put the pinned copy back, or, if you replaced it on purpose "
            f"with a copy you trust, set the pin to {sha}."
        )
    return {"by": "user", "how": "data.checksums SHA-256"}


def unverified_error(path: Path, rel: str, sha: str, found: str, fix: str) -> DataError:
    """A file no published hash vouches for, and no pin: what was found, and both ways out (the
    params.yaml lines that pin it, ready to paste)."""
    return DataError(
        f"{shown(path)}: {found} Its SHA-256 is {sha}. If this is your own copy of the official file (a "
        f"distribution's package, a mirror, a re-compressed or unpacked copy) and you trust it, pin it in "
        f"params.yaml; r2kd then checks it against that SHA-256 on every run and records it in meta.json as "
        f"verified by you:\n  data:\n    checksums:\n      {rel}: {sha}\nOtherwise: {fix}"
    )


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
    online = "e.g. copied from a machine that has it; with data.download: true a *missing* file is fetched, so {} also"
    if path.is_symlink():
        return (f"{shown(path)} is a symbolic link: remove the link itself (`rm {shown(path)}` removes only the link; "
                f"do not overwrite or delete the file it points to) and place the official file (MD5 {md5}) there, "
                f"{online.format('removing the link')} works online.")
    return f"Place the official file (MD5 {md5}) at {shown(path)}, {online.format('deleting this one')} works online."


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


def fetch(dataset: str, root: Path, rel: str, urls: list[str], download: bool, md5: str | None) -> Path:
    """Return ``root/rel``; if absent, download it (trying each mirror) or explain where to put it."""
    path = root / rel
    if path.is_file():
        return path
    if not download or not urls:
        url = urls[0] if urls else None
        raise DataError(
            f"{dataset}: {path.name} not found. Put the official file{f' from {url}' if url else ''} in "
            f"{shown(path.parent)}/{' or set data.download: true to fetch it' if url else ''} (nothing is "
            "downloaded unless data.download is true)."
        )
    errors = []
    for url in urls:
        try:
            download_file(url, path.parent, path.name, md5)
            return path
        except DataError as exc:
            errors.append(str(exc))
    raise DataError("; ".join(errors))
