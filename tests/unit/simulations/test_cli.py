"""The ``fedrisk`` dispatcher: every command listed by role, each role's code imported only to run
its command, every argument checked before torch or Flower is imported."""

from __future__ import annotations

import click
import pytest
from pydantic import ValidationError

from fedrisk.federation.processes import console_script
from simulations.cli import COMMANDS, ROLES, load_command
from simulations.spec import SimulationSpec
from tests.support.imports import HEAVY_MODULES, ImportTrace, trace_imports

ROLE_PACKAGES = ("clients", "server", "secure_agg", "simulations.commands")


def fedrisk(*args: str) -> ImportTrace:
    return trace_imports(console_script("fedrisk"), *args)


def _first_paragraph(command: click.Command) -> str:
    text = command.short_help or command.help or ""
    return " ".join(text.split("\n\n")[0].split())


def test_help_lists_every_command_under_its_role_without_importing_role_code() -> None:
    run = fedrisk("--help")

    assert run.returncode == 0, run.output
    for name, entry in COMMANDS.items():
        assert name in run.output
        assert entry.help.split(";")[0] in run.output
    for title in ROLES.values():
        assert title in run.output
    assert run.imported(*ROLE_PACKAGES, *HEAVY_MODULES) == []


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_table_says_what_the_command_itself_says(name: str) -> None:
    command = load_command(name)

    assert _first_paragraph(command) == COMMANDS[name].help
    assert COMMANDS[name].role in ROLES


def test_a_role_module_is_imported_only_for_its_own_command() -> None:
    run = fedrisk("keys", "--help")

    assert run.returncode == 0, run.output
    assert run.imported("clients") == ["clients"]
    assert run.imported("server", "simulations.commands", *HEAVY_MODULES) == []


@pytest.mark.parametrize(
    "args",
    [
        ("serve", "--help"),
        ("audit", "--help"),
        ("audit", "verify", "--help"),
        ("models", "--help"),
        ("models", "list", "--help"),
    ],
)
def test_lender_commands_import_no_torch_tenseal_or_flower(args: tuple[str, ...]) -> None:
    run = fedrisk(*args)

    assert run.returncode == 0, run.output
    assert run.imported(*HEAVY_MODULES, "clients", "server.coordinator") == []


def test_the_scoring_service_module_imports_no_torch_tenseal_or_flower() -> None:
    run = trace_imports("-c", "import server.scoring.app")

    assert run.returncode == 0, run.output
    assert "server.scoring.app" in run.modules
    assert run.imported(*HEAVY_MODULES) == []


BAD_ARGUMENTS = [
    pytest.param(("simulate", "--model", "foo"), ["'lr'", "'mlp'"], id="simulate-model"),
    pytest.param(
        ("simulate", "--dataset", "nope"), ["'synthetic'", "'taiwan-collection'"], id="dataset"
    ),
    pytest.param(("simulate", "--partition", "bogus"), ["dirichlet:<alpha>"], id="partition"),
    pytest.param(("simulate", "--partition", "dirichlet:-1"), ["positive"], id="alpha"),
    pytest.param(
        ("simulate", "--parties", "2"), ["at least 3", "--allow-fewer-parties"], id="parties"
    ),
    pytest.param(("simulate", "--rounds", "0"), ["x>=1"], id="rounds"),
    pytest.param(("simulate", "--local-epochs", "0"), ["x>=1"], id="local-epochs"),
    pytest.param(("simulate", "--seed", "-1"), ["x>=0"], id="seed"),
    pytest.param(("simulate", "--data-dir", "/no/such/dir"), ["does not exist"], id="data-dir"),
    pytest.param(("simulate", "--json", "/no/such/dir/out.json"), ["must exist"], id="json"),
    pytest.param(
        ("train-central", "--dataset", "synthetic", "--model", "foo"),
        ["'lr'", "'mlp'"],
        id="train-central-model",
    ),
    pytest.param(("train-central",), ["--dataset"], id="train-central-dataset-missing"),
    pytest.param(("scenario", "nope"), ["collection-taiwan"], id="scenario-name"),
    pytest.param(("scenario", "x", "--model", "foo"), ["'lr'", "'mlp'"], id="scenario-model"),
    pytest.param(("study", "--out", "/no/such/dir/r.json"), ["must exist"], id="study-out"),
    pytest.param(
        ("report", "--out", "r", "--results", "/no/such.json"), ["does not exist"], id="results"
    ),
    pytest.param(("run", "-w", ".", "--model", "foo"), ["'lr'", "'mlp'"], id="run-model"),
    pytest.param(("run", "-w", ".", "--stage", "x"), ["'behaviour'"], id="run-stage"),
    pytest.param(("run", "-w", ".", "--min-parties", "2"), ["x>=3"], id="run-min-parties"),
    pytest.param(("run", "-w", "/no/such/ws"), ["does not exist"], id="run-workspace"),
    pytest.param(("server", "start", "-w", ".", "--port", "0"), ["1<=x<=65535"], id="port"),
    pytest.param(
        ("party", "start", "-b", ".", "--data", "/no/such.csv", "--superlink", "h:1"),
        ["does not exist"],
        id="party-data",
    ),
    pytest.param(
        ("party", "start", "-b", ".", "--data", __file__, "--superlink", "nohost"),
        ["HOST:PORT"],
        id="superlink",
    ),
    pytest.param(
        ("keys", "init", "-b", ".", "--out", "o", "--poly-modulus-degree", "5"),
        ["'8192'"],
        id="poly-modulus-degree",
    ),
    pytest.param(("keys", "accept", "-b", ".", "--sealed", "/no/x"), ["does not exist"], id="seal"),
    pytest.param(
        ("simulate", "--layout", "vertical", "--dataset", "taiwan"),
        ["fate-hetero, synthetic-vertical, taiwan-3way"],
        id="vertical-dataset",
    ),
    pytest.param(
        ("simulate", "--layout", "vertical", "--dataset", "fate-hetero", "--model", "mlp"),
        ["must be lr"],
        id="vertical-model",
    ),
    pytest.param(("simulate", "--layout", "diagonal"), ["horizontal or vertical"], id="layout"),
    pytest.param(
        ("provision", "-w", "ws", "--request", __file__, "--schema", "/no/s.toml"),
        ["does not exist"],
        id="provision-schema",
    ),
]


@pytest.mark.parametrize(("args", "allowed"), BAD_ARGUMENTS)
def test_a_bad_argument_is_refused_with_the_allowed_values_before_torch_or_flower(
    args: tuple[str, ...], allowed: list[str]
) -> None:
    run = fedrisk(*args)

    assert run.returncode != 0
    for text in allowed:
        assert text in run.output
    assert "Traceback" not in run.output
    assert run.imported("torch", "flwr") == []


def test_the_spec_refuses_every_mistake_it_is_given() -> None:
    with pytest.raises(ValidationError) as refused:
        SimulationSpec(dataset="nope", parties=3, partition="iid", model="lr", rounds=1)
    assert "dataset must be one of" in str(refused.value)

    with pytest.raises(ValidationError, match="partition"):
        SimulationSpec(dataset="synthetic", parties=3, partition="by:", model="lr", rounds=1)

    with pytest.raises(ValidationError, match="at least 3"):
        SimulationSpec(dataset="synthetic", parties=2, partition="iid", model="lr", rounds=1)

    with pytest.raises(ValidationError, match="rounds"):
        SimulationSpec(dataset="synthetic", parties=3, partition="iid", model="lr", rounds=0)


def test_fewer_parties_are_allowed_only_when_asked_for() -> None:
    spec = SimulationSpec(
        dataset="synthetic",
        parties=2,
        partition="dirichlet:0.5",
        model="mlp",
        rounds=1,
        allow_fewer_parties=True,
    )

    assert (spec.parties, spec.partition, spec.model) == (2, "dirichlet:0.5", "mlp")


def test_scenario_lists_the_scenarios_without_importing_torch() -> None:
    run = fedrisk("scenario")

    assert run.returncode == 0, run.output
    assert "collection-taiwan" in run.output
    assert run.imported(*HEAVY_MODULES) == []
