"""``python -m server.scoring``: the scoring service's commands without the full ``fedrisk`` CLI."""

from server.scoring.cli import cli

if __name__ == "__main__":
    cli()
