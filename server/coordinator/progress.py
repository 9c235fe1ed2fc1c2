"""The run's event log: one JSON object per line, read live by the coordinator's display."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class ProgressLog:
    """Appends events to ``progress.jsonl`` (and the log); never carries keys or model data.

    Parameters
    ----------
    path
        The JSONL file, or None to log only.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, event: str, **fields: Any) -> None:
        """Record one event with a wall-clock timestamp."""
        record = {"event": event, "time": time.time(), **fields}
        log.info("progress: %s", json.dumps(record, sort_keys=True))
        if self.path is not None:
            # One write per line plus flush: a reader tailing the file never sees half a line
            # for lines below the pipe buffer size, which ours always are.
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
                handle.flush()


def read_events(path: Path) -> list[dict[str, Any]]:
    """All complete events written so far (a trailing partial line is ignored)."""
    if not path.exists():
        return []
    events: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return events
