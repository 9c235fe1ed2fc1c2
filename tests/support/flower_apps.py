"""Small Flower apps written by tests into a temporary folder (a probe, a foreign app)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{name}"
version = "{version}"
description = "{description}"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "{publisher}"

[tool.flwr.app.components]
serverapp = "{name}.{serverapp}"
clientapp = "{name}.{clientapp}"

[tool.flwr.app.config]
{config}
"""


def write_flower_app(
    root: Path,
    *,
    name: str,
    modules: Mapping[str, str],
    serverapp: str,
    clientapp: str,
    config: str,
    publisher: str = "fedrisk",
    version: str = "1.0.0",
    description: str = "A Flower app written by a fedrisk test",
) -> Path:
    """Write ``root/pyproject.toml`` and the package ``root/name/`` with ``modules``.

    ``serverapp`` / ``clientapp`` are ``module:attribute`` inside the package; ``config`` is
    the TOML body of ``[tool.flwr.app.config]``. Dependencies are empty: the SuperLink runs with
    runtime dependency installation disabled.
    """
    package = root / name
    package.mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        PYPROJECT.format(
            name=name,
            version=version,
            description=description,
            publisher=publisher,
            serverapp=serverapp,
            clientapp=clientapp,
            config=config,
        )
    )
    (package / "__init__.py").write_text("")
    for module, text in modules.items():
        (package / f"{module}.py").write_text(text)
    return root
