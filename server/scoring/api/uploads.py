"""Request bodies that are files: multipart forms and batch uploads spooled to disk."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import IO, Any

import anyio
from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile

from server.scoring.batch import UploadFormat
from server.scoring.errors import InvalidInputError

CSV_TYPES = {"text/csv", "application/csv", "text/plain"}
PARQUET_TYPES = {"application/vnd.apache.parquet", "application/x-parquet", "application/parquet"}


def content_type(request: Request) -> str:
    """The request's media type, lower case, without parameters."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_form(request: Request, *, max_files: int) -> Any:
    """Parse a multipart body; a malformed one is a 422 (the parser's errors are not all 400s)."""
    try:
        return await request.form(max_files=max_files, max_fields=5)
    except HTTPException:
        raise
    except Exception as e:  # python-multipart raises its own exception types for bad framing
        raise InvalidInputError(
            [{"type": "value_error", "loc": ["body"], "msg": f"multipart body is malformed: {e}"}]
        ) from e


def format_of(media_type: str, filename: str = "") -> UploadFormat | None:
    """CSV or Parquet, from a media type or a file name; None when neither says."""
    if media_type in PARQUET_TYPES or filename.endswith((".parquet", ".pq")):
        return "parquet"
    if media_type in CSV_TYPES or filename.endswith(".csv"):
        return "csv"
    return None


async def _spool_multipart(request: Request, sink: IO[bytes], digest: Any) -> UploadFormat:
    """Copy multipart field ``file`` into ``sink``; its format from its type or name (CSV)."""
    form = await read_form(request, max_files=1)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInputError(
                [
                    {
                        "type": "missing",
                        "loc": ["body", "file"],
                        "msg": "multipart field file is required",
                    }
                ]
            )

        def copy() -> None:
            for block in iter(lambda: upload.file.read(1 << 20), b""):
                digest.update(block)
                sink.write(block)

        await anyio.to_thread.run_sync(copy)
        return (
            format_of((upload.content_type or "").lower(), (upload.filename or "").lower()) or "csv"
        )
    finally:
        await form.close()


async def _spool_raw(request: Request, sink: IO[bytes], digest: Any) -> UploadFormat:
    """Copy a raw CSV or Parquet body into ``sink``."""
    media_type = content_type(request)
    fmt = format_of(media_type)
    if fmt is None:
        raise InvalidInputError(
            [
                {
                    "type": "value_error",
                    "loc": ["header", "content-type"],
                    "msg": "content-type must be text/csv, application/vnd.apache.parquet or "
                    f"multipart/form-data; got {media_type or 'none'}",
                }
            ]
        )
    async for block in request.stream():
        digest.update(block)
        sink.write(block)
    return fmt


async def spool_upload(request: Request) -> tuple[Path, UploadFormat, str]:
    """Write the upload to a temp file while hashing it; never holds it in memory.

    Returns the file (the caller deletes it), its format and its SHA-256 hex.
    """
    digest = hashlib.sha256()
    handle = tempfile.NamedTemporaryFile(prefix="fedrisk-batch-", delete=False)  # noqa: SIM115
    path = Path(handle.name)
    try:
        if content_type(request) == "multipart/form-data":
            fmt = await _spool_multipart(request, handle, digest)
        else:
            fmt = await _spool_raw(request, handle, digest)
        handle.close()
        return path, fmt, digest.hexdigest()
    except BaseException:
        handle.close()
        path.unlink(missing_ok=True)
        raise
