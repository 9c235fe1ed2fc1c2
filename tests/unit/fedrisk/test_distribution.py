"""fedrisk.distribution: the role packages are ours, another project's same-named package is
refused by fedrisk's entry point and keeps working for its own project."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedrisk.distribution import DISTRIBUTION, MARKER, ROLE_PACKAGES, require_own_packages
from fedrisk.errors import FedRiskError, ForeignPackageError
from fedrisk.federation.processes import console_script

REPO = Path(__file__).resolve().parents[3]
WAIT = 120.0

# Another project's ``server``: a package with a submodule, that records every time it is run.
FOREIGN_INIT = """
import os
from pathlib import Path
NAME = "foreign"
Path(os.environ["FOREIGN_SENTINEL"]).touch()
"""


@pytest.fixture
def foreign_path(tmp_path: Path) -> Path:
    """A sys.path entry holding another project's ``server`` package."""
    root = tmp_path / "other-project"
    package = root / "server"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FOREIGN_INIT)
    (package / "api.py").write_text("ROUTES = ['/health']\n")
    return root


def _run(argv: list[str], *, foreign: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(foreign),  # before site-packages and fedrisk's editable finder
        "FOREIGN_SENTINEL": str(cwd / "foreign-ran"),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
    }
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=WAIT)


def test_every_role_package_is_this_distributions_and_declares_the_marker() -> None:
    # act
    require_own_packages()
    modules = [importlib.import_module(name) for name in ROLE_PACKAGES]

    # assert
    for module in modules:
        assert getattr(module, MARKER) == DISTRIBUTION
        assert Path(str(module.__file__)).parent.parent == REPO


def test_the_fedrisk_command_refuses_a_foreign_server_first_on_the_path(
    foreign_path: Path, tmp_path: Path
) -> None:
    # act
    done = _run([console_script("fedrisk"), "--help"], foreign=foreign_path, cwd=tmp_path)

    # assert: a clear refusal naming both paths, before any of the other project's code ran
    assert done.returncode != 0
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith("fedrisk.errors.ForeignPackageError: package 'server' must be")
    assert str(REPO / "server" / "__init__.py") in last_line
    assert str(foreign_path / "server" / "__init__.py") in last_line
    assert "Usage" not in done.stdout
    assert not (tmp_path / "foreign-ran").exists()


def test_a_foreign_server_first_on_the_path_keeps_working_beside_ours(
    foreign_path: Path, tmp_path: Path
) -> None:
    # arrange: the other project imports its server, and our packages that do not need server
    code = (
        "import fedrisk.distribution, clients, secure_agg\n"
        "import server, server.api\n"
        "print(server.NAME, server.api.ROUTES[0], server.__file__, clients.__file__)\n"
    )

    # act
    done = _run([sys.executable, "-c", code], foreign=foreign_path, cwd=tmp_path)

    # assert
    assert done.returncode == 0, done.stderr
    name, route, server_file, clients_file = done.stdout.split()
    assert (name, route) == ("foreign", "/health")
    assert server_file == str(foreign_path / "server" / "__init__.py")
    assert clients_file == str(REPO / "clients" / "__init__.py")
    assert (tmp_path / "foreign-ran").exists()


@pytest.mark.parametrize(
    ("init", "got"),
    [("NAME = 'other'\n", "None"), ("__distribution__ = 'other'\n", "'other'")],
    ids=["no-marker", "other-marker"],
)
def test_a_package_in_our_place_without_our_marker_is_refused_unrun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, init: str, got: str
) -> None:
    # arrange: files overwritten in our own directory (here tmp_path plays site-packages)
    package = tmp_path / "fedrisk_overwritten_probe"
    package.mkdir()
    (package / "__init__.py").write_text(init + "raise SystemExit('must not run')\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    # act
    with pytest.raises(ForeignPackageError) as refused:
        require_own_packages(["fedrisk_overwritten_probe"], home=tmp_path)

    # assert
    message = str(refused.value)
    assert f"must declare __distribution__ = 'fedrisk'; got {got}" in message
    assert str(package / "__init__.py") in message
    assert isinstance(refused.value, FedRiskError)
    assert isinstance(refused.value, ImportError)
    assert "fedrisk_overwritten_probe" not in sys.modules


def test_a_package_in_our_place_with_our_marker_passes_unrun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # arrange
    package = tmp_path / "fedrisk_marked_probe"
    package.mkdir()
    (package / "__init__.py").write_text(
        "__distribution__ = 'fedrisk'\nraise SystemExit('must not run')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    # act
    require_own_packages(["fedrisk_marked_probe"], home=tmp_path)

    # assert
    assert "fedrisk_marked_probe" not in sys.modules


def test_missing_and_misplaced_packages_are_all_named_in_one_error(tmp_path: Path) -> None:
    # act: "fedrisk" exists but not in tmp_path; the other name exists nowhere
    with pytest.raises(ForeignPackageError) as refused:
        require_own_packages(["fedrisk", "fedrisk_no_such_package"], home=tmp_path)

    # assert
    message = str(refused.value)
    assert f"package 'fedrisk' must be fedrisk's {tmp_path / 'fedrisk' / '__init__.py'}" in message
    assert f"got {REPO / 'fedrisk' / '__init__.py'}" in message
    assert "package 'fedrisk_no_such_package' must be fedrisk's" in message
    assert "got no package with a file of that name" in message
