"""The top-level packages this distribution installs, and the check that each one is ours.

Why a check, and what it guards
-------------------------------
Installing fedrisk puts five top-level packages into site-packages: ``fedrisk`` (the credit core)
and the role packages ``clients`` (the party), ``server`` (the coordinator and the lender's
scoring service), ``simulations`` (simulations, reports, the ``fedrisk`` CLI) and ``secure_agg``.
The roles keep the short folder names their owners chose, and ``server`` or ``clients`` are names
other projects use too. Two clashes are possible:

1. **Shadowing.** The other project's ``server`` sits in an earlier ``sys.path`` entry
   (``PYTHONPATH``, the working directory, another site directory), so ``import server`` finds it
   first. Unguarded, fedrisk would fail deep inside with ``No module named 'server.coordinator'``
   or, worse, run the other project's code as if it were ours.
2. **Overwriting.** Both projects are installed into the same site-packages; pip lets the second
   one's ``server/__init__.py`` replace the first one's without a word.

Every role package declares ``__distribution__ = "fedrisk"`` in its ``__init__`` and, before it
does anything else, calls :func:`require_own_packages` for the role packages it imports (the
``fedrisk`` CLI, in ``simulations``, checks all of them). The check locates each package
*without importing it* (``importlib.util.find_spec``), requires it to sit beside this ``fedrisk``
package, and requires its ``__init__`` to declare the marker. Otherwise it raises
:class:`~fedrisk.errors.ForeignPackageError` naming the package, where ours should be and what
Python found instead, before any code of the other package has run. A clash is impossible to
miss, and it stops fedrisk, never the other project: the check runs only inside our packages, so
with the other ``server`` first on the path ``import server`` keeps giving that project its own
package.

The alternative, shipping the roles under one namespace (``fedrisk.server`` …), would rule out
clashes at install time but rename every import, Flower app reference and command the owners
use. The check keeps their layout. It cannot stop another project's files from overwriting ours
in a shared site-packages (case 2 above, which also breaks that project): it makes fedrisk refuse
to run on the mixture. Install fedrisk in a virtual environment of its own to avoid that case.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from fedrisk.errors import ForeignPackageError

__all__ = ["DISTRIBUTION", "MARKER", "ROLE_PACKAGES", "require_own_packages"]

DISTRIBUTION: Final = "fedrisk"
"""The value of every role package's marker."""

MARKER: Final = "__distribution__"
"""The module-level name each role package's ``__init__`` assigns :data:`DISTRIBUTION` to."""

ROLE_PACKAGES: Final = ("clients", "server", "simulations", "secure_agg")
"""The top-level packages installed beside ``fedrisk`` under names other projects may use."""

_HOME: Final = Path(__file__).resolve().parent.parent
"""The directory holding ``fedrisk/``: site-packages, or the source tree of an editable install."""


def _declared_distribution(init_file: Path) -> str | None:
    """The marker's value in ``init_file``, read without running it (None when absent)."""
    try:
        tree = ast.parse(init_file.read_bytes(), filename=str(init_file))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == MARKER for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    return None


def _found(name: str) -> tuple[str | None, str | None]:
    """Where ``name`` resolves (its ``__init__`` file) and the distribution it declares."""
    module = sys.modules.get(name)
    if module is not None:
        # Imported already (or being imported: a role package checks itself mid-import).
        origin = getattr(module, "__file__", None)
        return origin, getattr(module, MARKER, None)
    spec = importlib.util.find_spec(name)
    if spec is None:
        return None, None
    origin = spec.origin if spec.has_location else None
    return origin, (_declared_distribution(Path(origin)) if origin else None)


def _problem(name: str, home: Path) -> str | None:
    expected = home / name / "__init__.py"
    origin, declared = _found(name)
    if origin is None:
        return (
            f"package {name!r} must be fedrisk's {expected}; got no package with a file of that "
            "name on sys.path (a namespace directory, or not installed)"
        )
    if Path(origin).resolve() != expected.resolve():
        return (
            f"package {name!r} must be fedrisk's {expected}; got {origin}, another project's "
            f"package found first on sys.path"
        )
    if declared != DISTRIBUTION:
        return (
            f"package {name!r} at {origin} must declare {MARKER} = {DISTRIBUTION!r}; got "
            f"{declared!r}: another project's files overwrote fedrisk's in that directory"
        )
    return None


def require_own_packages(names: Iterable[str] = ROLE_PACKAGES, *, home: Path | None = None) -> None:
    """Refuse to go on unless each of ``names`` is this distribution's package.

    Parameters
    ----------
    names
        Top-level package names to check; default :data:`ROLE_PACKAGES`.
    home
        The directory the packages must sit in; default the one holding this ``fedrisk``.

    Raises
    ------
    ForeignPackageError
        A name resolves elsewhere, to no file, or to an ``__init__`` without the marker. The
        message lists every such package with both paths.

    Notes
    -----
    A package not yet imported is located with ``importlib.util.find_spec`` and its marker read
    with ``ast``: no code of a foreign package runs.
    """
    where = _HOME if home is None else Path(home)
    problems = [p for p in (_problem(name, where) for name in names) if p is not None]
    if problems:
        raise ForeignPackageError(
            "; ".join(problems) + ". fedrisk refuses to run on another project's package: "
            "install fedrisk in a virtual environment of its own, or take the other package off "
            "sys.path (PYTHONPATH, the working directory)"
        )
