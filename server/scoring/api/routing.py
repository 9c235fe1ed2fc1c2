"""What every router of the scoring API shares: the guarded route class, the documented errors."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from server.scoring.access import authorize, declared_access

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No API key, or an unknown, wrong or revoked one"},
    403: {"description": "The key's role does not cover this route"},
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


class GuardedRoute(APIRoute):
    """Route class that checks the caller's API key before anything else, then hands the
    endpoint a request refusing lone surrogates in JSON bodies.

    The key is checked before the body is read or validated, so a caller without a good key
    learns nothing from 422s. A route must declare its access (``openapi_extra=requires(…)`` or
    ``public()``): building one that does not raises, so no route is left open by omission.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        # get_route_handler runs inside APIRoute.__init__, so the access is read first
        self.access = declared_access(path, kwargs.get("openapi_extra"))
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        access = self.access

        async def guarded_handler(request: Request) -> Response:
            await authorize(request, access)
            return await handler(_UnicodeSafeRequest(request.scope, request.receive))

        return guarded_handler


def new_router() -> APIRouter:
    """A router of one API resource."""
    return APIRouter(route_class=GuardedRoute)
