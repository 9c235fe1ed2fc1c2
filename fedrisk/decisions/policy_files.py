"""Reading decision configuration files (TOML or YAML) into a mapping, with clear errors."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml

from fedrisk.errors import DecisionError

FileFormat = Literal["toml", "yaml"]


def parse_mapping(text: str, *, fmt: FileFormat, what: str, source: str) -> dict[str, Any]:
    """Parse TOML or YAML text whose top level must be a mapping (empty text gives ``{}``).

    Raises
    ------
    DecisionError
        On a syntax error or a top level that is not a mapping; ``what`` names the document.
    """
    data: Any
    try:
        data = tomllib.loads(text) if fmt == "toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise DecisionError(f"{what} {source} must be valid {fmt.upper()}; got {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DecisionError(
            f"{what} {source} must be a mapping at top level; got {type(data).__name__}"
        )
    return data


def read_policy_file(path: Path, *, what: str) -> tuple[str, FileFormat]:
    """The text of a ``.toml``, ``.yaml`` or ``.yml`` file and its format.

    Raises
    ------
    DecisionError
        If the suffix is another one or the file cannot be read as UTF-8.
    """
    suffix = path.suffix.lower()
    if suffix not in {".toml", ".yaml", ".yml"}:
        raise DecisionError(f"{what} file must end in .toml, .yaml or .yml; got {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DecisionError(f"{what} file must be readable; got {path}: {e}") from e
    return text, "toml" if suffix == ".toml" else "yaml"
