"""YAML config files, read one way for the pipeline, distillation and mix configs: a file's mapping, dotted
`key=value` overrides, and validated dataclasses whose every error is prefixed with where it is.

>>> from dataclasses import dataclass
>>> @dataclass
... class Sampling:
...     n: int = 4
>>> from_mapping(Sampling, apply_overrides({"n": 2}, ["n=8"]), "sampling")
Sampling(n=8)
>>> from_mapping(Sampling, {"m": 1}, "config.yaml: sampling")
Traceback (most recent call last):
...
posttrain.errors.UserError: config.yaml: sampling: unknown option(s) ['m']; valid options: ['n']
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from posttrain.errors import MissingFileError, UserError


def read_yaml(path: str | Path, what: str) -> Any:
    """A YAML file's content; a missing file or bad YAML is a ValueError naming `what` and the path."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} {path}: no such file")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{what} {path}: not valid YAML: {exc}") from None


def from_mapping(cls: type, data: Any, where: str) -> Any:
    """A config dataclass from a YAML mapping; unknown keys are refused with the valid ones listed, and every error
    is prefixed with `where`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping of options, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"{where}: unknown option(s) {unknown}; valid options: {sorted(names)}")
    try:
        return cls(**data)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}: {exc}") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set `a.b=value` overrides (values parsed as YAML) in a nested mapping, returning a new one.

    >>> apply_overrides({"sampling": {"n": 4}}, ["sampling.n=8", "teacher.model=ckpt"])
    {'sampling': {'n': 8}, 'teacher': {'model': 'ckpt'}}
    """
    out = json.loads(json.dumps(data))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r}: expected key=value, e.g. sampling.n=8 or teacher.model=path")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"override {item!r}: {part!r} is not a mapping")
        node[leaf] = yaml.safe_load(text)
    return out
