"""The wire form of online vertical scoring between the lender and a host's feature service.

The lender asks a host (``fedrisk party serve``) for its part of a vertical model's score for one
customer, named only by its keyed hash (``IdentifierKey.keyed_hash``); the host answers its part
(masked when the federation has two or more hosts) and a coded reason.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PARTIAL_SCORE_PATH = "/v1/partial-score"
KEEP_ALIVE_SECONDS = 30.0
"""How long the lender keeps an idle connection to a host open; a host keeps it longer, so the
lender is the side that closes it (a request never races a host closing its connection)."""


class _Wire(BaseModel):
    """Base of the messages: unknown fields refused, values immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ScoreRequest(_Wire):
    """The lender's question: this host's part for one customer, under one model."""

    request_id: str = Field(pattern=r"^[A-Za-z0-9._-]{8,128}$")
    customer: str = Field(pattern=r"^[0-9a-f]{64}$")
    model_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,128}$")


class CodedReason(_Wire):
    """A host's reason: a code for its top risk-raising feature group, and its own text."""

    code: str
    text: str


class ScoreAnswer(_Wire):
    """A host's part (masked when the federation has two or more hosts)."""

    party: str
    model_id: str
    request_id: str
    status: Literal["known", "unknown"]
    score: float
    masked: bool
    reason: CodedReason | None = None


PARTIAL_SCORES_PATH = "/v1/partial-scores"
MAX_BATCH = 256
"""Most questions in one batch (a lender coalesces the decisions in flight, 16-64 at most)."""


class ScoreBatch(_Wire):
    """Several of the lender's questions in one request: the decisions in flight at once.

    Each question keeps its own request id (and so its own mask), exactly as if asked alone;
    batching only saves a round trip and the per-request overhead on both sides.
    """

    requests: list[ScoreRequest] = Field(min_length=1, max_length=MAX_BATCH)


class ScoreRefusal(_Wire):
    """A question of a batch the host would not answer (e.g. a request id seen before)."""

    request_id: str
    detail: str


class ScoreBatchAnswer(_Wire):
    """The host's answers to a :class:`ScoreBatch`, in its order."""

    answers: list[ScoreAnswer | ScoreRefusal]
