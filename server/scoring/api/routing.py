"""What every router of the scoring API shares: the route class and the documented errors."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown stage, model, decision or review item"},
    409: {"description": "Conflicts with the current state"},
    413: {"description": "Request body too large"},
    422: {"description": "Invalid input; `loc` names the field"},
    503: {"description": "No champion model for the stage, or the write queue is full"},
}
"""Error answers documented on routes that can give them."""


class _UnicodeSafeRequest(Request):
    """A request whose JSON body may not smuggle lone UTF-16 surrogates (``"\\ud800"``).

    ``json.loads`` accepts them, but they cannot be encoded as UTF-8, so they would fail later
    when stored or echoed (a 500). They are refused as malformed JSON (422) instead. The scan
    is a byte search; the full check runs only when a surrogate escape is present at all.
    """

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            value = json.loads(body)
            if _SURROGATE_ESCAPE.search(body):
                try:
                    json.dumps(value, ensure_ascii=False).encode("utf-8")
                except UnicodeEncodeError as e:
                    raise json.JSONDecodeError(
                        "strings must be valid Unicode; got a lone surrogate escape",
                        body.decode("utf-8", errors="replace"),
                        0,
                    ) from e
            self._json = value
        return self._json


class UnicodeSafeRoute(APIRoute):
    """Route class that hands endpoints a request refusing lone surrogates in JSON bodies."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def safe_handler(request: Request) -> Response:
            return await handler(_UnicodeSafeRequest(request.scope, request.receive))

        return safe_handler


def new_router() -> APIRouter:
    """A router of one API resource."""
    return APIRouter(route_class=UnicodeSafeRoute)
