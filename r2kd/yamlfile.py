"""Read params.yaml the way both tools will: one meaning for every value, or a clear refusal.

DVC reads params.yaml with ruamel (YAML 1.2), Snakemake and this package with PyYAML (YAML 1.1).
They disagree on some plain scalars (`010` is 8 or 10, `yes` a boolean or a string, `5e-4` a string
or a number) and on duplicate keys (one keeps the last, the other fails). Rather than pick a side,
this reader refuses every construct on which they differ, and refuses anchors and aliases, whose
expansion lets a tiny file become gigabytes in memory.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from r2kd.errors import ConfigError

MAX_BYTES = 1_000_000

# Plain scalars whose meaning differs between YAML 1.1 (PyYAML) and 1.2 (ruamel, DVC).
_BOOL_11_ONLY = re.compile(r"^(y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF)$")
_INT_11_ONLY = re.compile(r"^[-+]?(0[0-7_]+|0b[01_]+|[0-9][0-9_]*(:[0-5]?[0-9])+|[-+]?[0-9]+(_[0-9]+)+)$")
_FLOAT_11_ONLY = re.compile(r"^[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*$|.*_.*\..*|.*\..*_.*")
_FLOAT_12 = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases, anchors, duplicate keys and version-dependent scalars."""

    def compose_node(self, parent, index):  # noqa: ANN001
        event = self.peek_event()
        if getattr(event, "anchor", None):  # an alias (*name) or an anchor (&name)
            what = "aliases (*name)" if isinstance(event, yaml.AliasEvent) else "anchors (&name)"
            raise ConfigError(f"{self._source}: line {event.start_mark.line + 1}: YAML {what} are not allowed in "
                              "params.yaml; write the value out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # noqa: ANN001
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"{self._source}: line {key_node.start_mark.line + 1}: duplicate key {key!r}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_scalar(self, node):  # noqa: ANN001
        value = super().construct_scalar(node)
        if node.style is None and isinstance(value, str):  # plain (unquoted) scalar
            _refuse_ambiguous(value, node, self._source)
        return value


def _refuse_ambiguous(text: str, node: yaml.Node, source: str) -> None:
    tag = node.tag
    where = f"{source}: line {node.start_mark.line + 1}"
    if tag.endswith(":bool") and _BOOL_11_ONLY.match(text):
        raise ConfigError(f"{where}: {text!r} is a boolean in YAML 1.1 but a string in YAML 1.2 (DVC); "
                          "write true/false, or quote it")
    if tag.endswith(":int") and _INT_11_ONLY.match(text):
        raise ConfigError(f"{where}: {text!r} is read differently by YAML 1.1 and 1.2 (DVC); write a plain "
                          "decimal integer without leading zeros or underscores")
    if tag.endswith(":float") and _FLOAT_11_ONLY.match(text):
        raise ConfigError(f"{where}: {text!r} is read differently by YAML 1.1 and 1.2 (DVC); write a plain number")
    if tag.endswith(":str") and _FLOAT_12.match(text):
        raise ConfigError(f"{where}: {text!r} is a number in YAML 1.2 (DVC) but a string in YAML 1.1; write it "
                          f"with a decimal point and signed exponent (e.g. 5.0e-4), or quote it")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _check_regular(path: Path, info: os.stat_result) -> None:
    """Refuse what is not a regular file of bounded size, before reading a byte of it: /dev/zero
    would be read without end, a FIFO would block until someone writes to it."""
    if not stat.S_ISREG(info.st_mode):
        link = " (through a symbolic link)" if path.is_symlink() else ""
        raise ConfigError(f"{path} is {_kind(info.st_mode)}{link}, not a regular file; params.yaml must be a "
                          "regular file")
    if info.st_size > MAX_BYTES:
        raise ConfigError(f"{path} is {info.st_size:,} bytes, larger than {MAX_BYTES:,}; this is not a params file")


def read_yaml(path: Path) -> Any:
    """The parsed content of ``path``; every problem is a ConfigError naming the file.

    Only a regular file (a symbolic link is followed: its target must be one) of at most MAX_BYTES
    is read, checked with stat before it is opened and again on the open descriptor (it may have
    been swapped in between); the read itself stops at MAX_BYTES + 1 bytes whatever the file says.
    """
    try:
        _check_regular(path, path.stat())
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as fh:
            _check_regular(path, os.fstat(fh.fileno()))
            data = fh.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:  # it grew after the stat
            raise ConfigError(f"{path} is larger than {MAX_BYTES:,} bytes; this is not a params file")
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} not found; run from the repository root") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, source: str = "params.yaml") -> Any:
    loader = _StrictLoader(text)
    loader._source = source
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None
    finally:
        loader.dispose()
