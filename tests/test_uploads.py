"""Attachments over real HTTP: two-phase and direct uploads, limits, signed URLs, lifecycle,
and what the model receives. The local blob backend; ``test_s3.py`` covers S3."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import httpx
import psutil
import pytest

from tests.live import (
    LiveServer,
    ScriptedOpenAI,
    list_items,
    provider_settings,
    responses_step,
    running,
    stream_events,
    title_step,
)
from workbench.agent.response_events import FunctionCall, Text
from workbench.config import Settings
from workbench.files.attachments import (
    ATTACHMENTS_PREFIX,
    WorkbenchAttachmentStore,
    sanitize_name,
)
from workbench.files.signing import UrlSigner, load_or_create_secret
from workbench.sandbox.bubblewrap import sandbox_problem
from workbench.sandbox.workspaces import Workspaces
from workbench.store import PostgresStore
from workbench.tools.python import TOOL_NAME as PYTHON_TOOL

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # binary, NULs included
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\ntrailer\n%%EOF\n"
CSV = b"city,temp\nOslo,4\nLima,19\nPune,31\n"
MB = 1024 * 1024


# -- helpers ----------------------------------------------------------------------------------


def message(text: str, *attachment_ids: str) -> dict[str, Any]:
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": list(attachment_ids),
        "inference_options": {},
    }


def create_with(text: str, *attachment_ids: str) -> dict[str, Any]:
    return {"type": "threads.create", "params": {"input": message(text, *attachment_ids)}}


def add_with(thread_id: str, text: str, *attachment_ids: str) -> dict[str, Any]:
    return {
        "type": "threads.add_user_message",
        "params": {"thread_id": thread_id, "input": message(text, *attachment_ids)},
    }


async def chatkit(
    http: httpx.AsyncClient, live: LiveServer, op: str, user: str | None = None, **params: Any
) -> httpx.Response:
    headers = {"X-Forwarded-User": user} if user else {}
    return await http.post(live.url, json={"type": op, "params": params}, headers=headers)


async def create_attachment(
    http: httpx.AsyncClient,
    live: LiveServer,
    name: str,
    size: int,
    mime_type: str,
    user: str | None = None,
) -> dict[str, Any]:
    response = await chatkit(
        http, live, "attachments.create", user, name=name, size=size, mime_type=mime_type
    )
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    assert "metadata" not in created
    return created


async def two_phase(
    http: httpx.AsyncClient,
    live: LiveServer,
    name: str,
    data: bytes,
    mime_type: str,
    *,
    method: str = "POST",
    user: str | None = None,
) -> dict[str, Any]:
    """Create an attachment and upload its bytes to the descriptor; the uploaded attachment."""
    created = await create_attachment(http, live, name, len(data), mime_type, user)
    response = await send_bytes(http, created["upload_descriptor"]["url"], data, mime_type, method)
    assert response.status_code == 200, response.text
    uploaded: dict[str, Any] = response.json()
    return uploaded


async def send_bytes(
    http: httpx.AsyncClient, url: str, data: bytes, mime_type: str, method: str = "POST"
) -> httpx.Response:
    if method == "PUT":
        return await http.put(url, content=data, headers={"Content-Type": mime_type})
    return await http.post(url, files={"file": ("ignored-name", data, mime_type)})


async def direct(
    http: httpx.AsyncClient,
    live: LiveServer,
    name: str,
    data: bytes,
    mime_type: str,
    user: str | None = None,
) -> httpx.Response:
    headers = {"X-Forwarded-User": user} if user else {}
    return await http.post(
        live.base + "/files/upload", files={"file": (name, data, mime_type)}, headers=headers
    )


def attachments_of(live: LiveServer) -> WorkbenchAttachmentStore:
    attachments: WorkbenchAttachmentStore = live.app.state.attachments
    return attachments


def blobs_dir(live: LiveServer) -> Path:
    return live.settings.data_dir / "blobs"


def blob_names(live: LiveServer) -> list[str]:
    """Everything in the blob directory, partial files included."""
    return sorted(path.name for path in blobs_dir(live).iterdir())


def download_url(live: LiveServer, attachment_id: str, owner: str, *, inline: bool = False) -> str:
    return attachments_of(live).download_url(attachment_id, owner, live.base, inline=inline)


def error_of(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code, error
    message: str = error["message"]
    return message


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def with_path(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=path))


def no_errors(events: list[Any]) -> None:
    errors = [e for e in events if e.type == "error"]
    assert not errors, errors


async def eventually(check: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within:g} s")
        await asyncio.sleep(0.05)


def server_with(settings: Settings, **overrides: Any) -> LiveServer:
    return LiveServer(settings.model_copy(update=overrides))


@pytest.fixture
def small(settings: Settings) -> Iterator[LiveServer]:
    """A server that takes uploads of 1 MB at most."""
    with running(server_with(settings, upload_max_mb=1)) as live:
        yield live


@pytest.fixture
def two_users(settings: Settings) -> Iterator[LiveServer]:
    with running(server_with(settings, auth="header")) as live:
        yield live


# -- two-phase uploads ------------------------------------------------------------------------


async def test_two_phase_post_multipart_then_the_file_works_in_a_thread(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    created = await create_attachment(http, live, "data.csv", len(CSV), "text/csv")
    assert created["type"] == "file"
    descriptor = created["upload_descriptor"]
    assert descriptor["method"] == "POST"
    assert descriptor["url"].startswith(f"{live.base}/files/uploads/{created['id']}?")
    assert blob_names(live) == []

    response = await http.post(descriptor["url"], files={"file": ("data.csv", CSV, "text/csv")})

    assert response.status_code == 200, response.text
    uploaded = response.json()
    assert uploaded["id"] == created["id"] and uploaded["name"] == "data.csv"
    assert "upload_descriptor" not in uploaded and "metadata" not in uploaded
    assert (blobs_dir(live) / created["id"]).read_bytes() == CSV
    assert blob_names(live) == [created["id"]]

    events = await stream_events(http, live.url, create_with("Look at this", created["id"]))
    no_errors(events)
    thread_id = events[0].thread.id
    [user_message] = [
        e.item for e in events if e.type == "thread.item.done" and e.item.type == "user_message"
    ]
    assert [a.id for a in user_message.attachments] == [created["id"]]
    assert user_message.attachments[0].thread_id == thread_id
    assert user_message.attachments[0].upload_descriptor is None
    items = await list_items(http, live.url, thread_id)
    assert items[0].type == "user_message" and items[0].attachments[0].id == created["id"]

    response = await http.get(download_url(live, created["id"], live.settings.local_user))
    assert response.status_code == 200, response.text
    assert response.content == CSV
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == (
        "attachment; filename=\"data.csv\"; filename*=UTF-8''data.csv"
    )
    assert response.headers["content-length"] == str(len(CSV))
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_two_phase_put_raw_image_then_its_preview_url_serves_it_inline(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    events = await stream_events(http, live.url, create_with("First"))
    thread_id = events[0].thread.id
    created = await create_attachment(http, live, "chart.png", len(PNG), "image/png")
    assert created["type"] == "image"
    preview = created["preview_url"]
    assert preview.startswith(f"{live.base}/files/attachments/{created['id']}?")
    assert {"inline", "exp", "sig"} <= dict(parse_qsl(urlsplit(preview).query)).keys()
    response = await http.get(preview)
    error_of(response, 404, "not_found")  # no bytes yet

    response = await http.put(
        created["upload_descriptor"]["url"], content=PNG, headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["preview_url"] == preview

    events = await stream_events(http, live.url, add_with(thread_id, "And this", created["id"]))
    no_errors(events)
    response = await http.get(preview)
    assert response.status_code == 200, response.text
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"].startswith('inline; filename="chart.png"')
    # Signed without inline=1: the same file, as a download.
    response = await http.get(download_url(live, created["id"], live.settings.local_user))
    assert response.headers["content-disposition"].startswith('attachment; filename="chart.png"')


async def test_uploading_to_the_same_url_again_is_a_conflict(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    created = await create_attachment(http, live, "a.txt", 5, "text/plain")
    url = created["upload_descriptor"]["url"]
    assert (await send_bytes(http, url, b"hello", "text/plain", "PUT")).status_code == 200
    for method in ("PUT", "POST"):
        response = await send_bytes(http, url, b"world", "text/plain", method)
        error_of(response, 409, "already_uploaded")
    assert (blobs_dir(live) / created["id"]).read_bytes() == b"hello"


async def test_a_message_naming_an_attachment_never_uploaded_is_refused(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    created = await create_attachment(http, live, "a.txt", 5, "text/plain")
    response = await http.post(live.url, json=create_with("Here", created["id"]))
    assert "a.txt" in error_of(response, 400, "upload_incomplete")


# -- direct uploads ---------------------------------------------------------------------------


async def test_direct_upload_returns_the_attachment(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    response = await direct(http, live, "report.pdf", PDF, "application/pdf")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    attachment = response.json()
    assert set(attachment) == {"id", "name", "mime_type", "type"}
    assert attachment["id"].startswith("atc_")
    assert attachment["name"] == "report.pdf" and attachment["mime_type"] == "application/pdf"
    assert attachment["type"] == "file"
    assert (blobs_dir(live) / attachment["id"]).read_bytes() == PDF

    events = await stream_events(http, live.url, create_with("Read it", attachment["id"]))
    no_errors(events)
    response = await http.get(download_url(live, attachment["id"], live.settings.local_user))
    assert response.content == PDF
    assert response.headers["content-type"] == "application/pdf"


async def test_direct_upload_of_an_image_has_a_preview(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    # No declared type: it follows from the name.
    response = await direct(http, live, "photo.png", PNG, "application/octet-stream")
    assert response.status_code == 200, response.text
    attachment = response.json()
    assert attachment["type"] == "image" and attachment["mime_type"] == "image/png"
    preview = await http.get(attachment["preview_url"])
    assert preview.content == PNG and preview.headers["content-type"] == "image/png"


async def test_direct_upload_needs_authentication_and_a_file_field(
    two_users: LiveServer, http: httpx.AsyncClient
) -> None:
    response = await direct(http, two_users, "a.txt", b"hi", "text/plain")
    error_of(response, 401, "unauthorized")
    response = await http.post(
        two_users.base + "/files/upload",
        files={"other": ("a.txt", b"hi", "text/plain")},
        headers={"X-Forwarded-User": "alice"},
    )
    error_of(response, 400, "invalid_request")
    response = await http.post(
        two_users.base + "/files/upload", content=b"hi", headers={"X-Forwarded-User": "alice"}
    )
    error_of(response, 415, "unsupported_media_type")
    assert blob_names(two_users) == []


# -- limits -----------------------------------------------------------------------------------


@dataclass
class SlowUpload:
    status: int
    body: bytes
    sent_before_answer: int
    sent_in_all: int
    rss_growth: int


async def slow_chunked_upload(
    live: LiveServer,
    target: str,
    head: bytes,
    total: int,
    *,
    method: str = "POST",
    content_type: str = "multipart/form-data; boundary=XyZzY",
    chunk: int = 64 * 1024,
) -> SlowUpload:
    """``head`` then text, ``total`` bytes in all, as a chunked body on a raw socket.

    Sends slowly until the answer arrives, then the rest as fast as it can (the server must
    neither buffer nor store it); samples this process's RSS throughout (the server runs
    in-process)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    writer.write(
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n"
        f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    )
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = baseline

    async def answer() -> tuple[int, bytes]:
        headers = await reader.readuntil(b"\r\n\r\n")
        status = int(headers.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in headers.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return status, await reader.readexactly(length)

    answered = asyncio.create_task(answer())
    filler = b"x" * chunk
    sent, sent_before_answer = 0, None
    try:
        while sent < total:
            piece = head if sent == 0 else filler[: min(chunk, total - sent)]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            sent += len(piece)
            peak = max(peak, process.memory_info().rss)
            if sent_before_answer is None:
                if answered.done():
                    sent_before_answer = sent
                else:
                    await asyncio.sleep(0.005)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    except (ConnectionError, OSError):
        pass
    status, body = await asyncio.wait_for(answered, 30)
    writer.close()
    return SlowUpload(status, body, sent_before_answer or sent, sent, peak - baseline)


async def test_an_oversize_upload_is_refused_mid_stream(
    small: LiveServer, http: httpx.AsyncClient
) -> None:
    head = (
        b'--XyZzY\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\n"
    )
    total = 64 * MB  # 64 times the limit

    upload = await slow_chunked_upload(small, "/files/upload", head, total)

    assert upload.status == 413
    assert json.loads(upload.body)["error"]["code"] == "file_too_large"
    assert upload.sent_before_answer < 4 * MB, upload
    assert upload.rss_growth < 16 * MB, upload
    assert blob_names(small) == []


async def test_an_oversize_two_phase_put_is_refused_mid_stream(
    small: LiveServer, http: httpx.AsyncClient
) -> None:
    response = await chatkit(
        http, small, "attachments.create", name="big.txt", size=2 * MB, mime_type="text/plain"
    )
    error_of(response, 413, "file_too_large")

    created = await create_attachment(http, small, "big.txt", MB // 2, "text/plain")
    url = urlsplit(created["upload_descriptor"]["url"])
    upload = await slow_chunked_upload(
        small, f"{url.path}?{url.query}", b"x" * 1024, 64 * MB,
        method="PUT", content_type="text/plain",
    )  # fmt: skip
    # Past the declared size (below the limit): stopped there.
    assert upload.status == 400 and json.loads(upload.body)["error"]["code"] == "size_mismatch"
    assert upload.sent_before_answer < 4 * MB, upload
    assert blob_names(small) == []
    # Still pending: the right bytes are taken afterwards.
    response = await send_bytes(
        http, created["upload_descriptor"]["url"], b"y" * (MB // 2), "text/plain"
    )
    assert response.status_code == 200, response.text


async def test_a_body_over_the_limit_without_streaming_gets_413_json(
    small: LiveServer, http: httpx.AsyncClient
) -> None:
    response = await direct(http, small, "big.csv", b"a,b\n" * (MB // 4 + 1), "text/csv")
    error_of(response, 413, "file_too_large")
    response = await direct(http, small, "fits.csv", b"a,b\n" * (MB // 4), "text/csv")
    assert response.status_code == 200, response.text
    assert blob_names(small) == [response.json()["id"]]


@pytest.mark.parametrize("method", ["PUT", "POST"])
@pytest.mark.parametrize("real", [4, 6])
async def test_a_declared_size_that_lies_keeps_nothing(
    live: LiveServer, http: httpx.AsyncClient, method: str, real: int
) -> None:
    created = await create_attachment(http, live, "a.txt", 5, "text/plain")
    url = created["upload_descriptor"]["url"]

    response = await send_bytes(http, url, b"x" * real, "text/plain", method)

    assert "5 were declared" in error_of(response, 400, "size_mismatch")
    assert blob_names(live) == []
    response = await http.post(live.url, json=create_with("Here", created["id"]))
    error_of(response, 400, "upload_incomplete")


@pytest.mark.parametrize(
    ("name", "declared", "data"),
    [
        ("fake.png", "image/png", b"just some text, not a picture\n"),
        ("fake.pdf", "application/pdf", b"<html>not a pdf</html>"),
        ("notes.txt", "text/plain", b"text\x00with\x00NULs" + PNG),
        ("data.json", "application/json", PNG),
        ("empty.png", "image/png", b""),
    ],
)
async def test_bytes_that_are_not_the_declared_type_are_refused(
    live: LiveServer, http: httpx.AsyncClient, name: str, declared: str, data: bytes
) -> None:
    response = await direct(http, live, name, data, declared)
    error_of(response, 400, "content_mismatch")
    created = await create_attachment(http, live, name, len(data), declared)
    for method in ("PUT", "POST"):
        response = await send_bytes(
            http, created["upload_descriptor"]["url"], data, declared, method
        )
        error_of(response, 400, "content_mismatch")
    assert blob_names(live) == []


async def test_the_content_check_looks_past_the_first_chunk(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    """A NUL a little way in (the sniffed head spans several network chunks) still counts."""

    async def body() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"a" * 1000
        yield b"\x00" + b"b" * 5000

    created = await create_attachment(http, live, "a.txt", 13001, "text/plain")
    response = await http.put(created["upload_descriptor"]["url"], content=body())
    error_of(response, 400, "content_mismatch")
    assert blob_names(live) == []


@pytest.mark.parametrize("mime_type", ["application/x-msdownload", "image/svg+xml", "video/mp4"])
async def test_a_type_not_accepted_is_415(
    live: LiveServer, http: httpx.AsyncClient, mime_type: str
) -> None:
    response = await chatkit(
        http, live, "attachments.create", name="x.bin", size=3, mime_type=mime_type
    )
    assert mime_type in error_of(response, 415, "unsupported_file_type")
    response = await direct(http, live, "x.bin", b"abc", mime_type)
    error_of(response, 415, "unsupported_file_type")
    # No type: guessed from the name, and refused all the same.
    response = await direct(http, live, "setup.exe", b"MZ\x90\x00", "")
    error_of(response, 415, "unsupported_file_type")
    assert blob_names(live) == []


async def test_the_accepted_types_are_a_setting(
    settings: Settings, http: httpx.AsyncClient
) -> None:
    with running(server_with(settings, upload_mime_types=["text/csv"])) as live:
        response = await direct(http, live, "a.txt", b"hi", "text/plain")
        error_of(response, 415, "unsupported_file_type")
        response = await direct(http, live, "a.csv", b"a,b\n", "text/csv; charset=utf-8")
        assert response.status_code == 200, response.text
        assert response.json()["mime_type"] == "text/csv"


LONG = "x" * 300 + ".csv"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\report.csv", "report.csv"),
        ("/abs/path/notes.txt", "notes.txt"),
        ("a\x00b\nc\td\x7f.txt", "a_b_c_d_.txt"),
        ("bell\x07\x1b[31m.txt", "bell_[31m.txt"),
        ("next\x85line.txt", "next_line.txt"),  # a C1 control
        ("\u202etxt.exe", "_txt.exe"),  # right-to-left override
        ('quote"star*.txt', "quote_star_.txt"),
        ("..", "upload"),
        ("   ", "upload"),
        ("café.txt", "café.txt"),
        (LONG, "x" * 196 + ".csv"),
    ],
)
async def test_names_are_sanitized(
    live: LiveServer, http: httpx.AsyncClient, raw: str, clean: str
) -> None:
    assert sanitize_name(raw) == clean
    created = await create_attachment(http, live, raw, 3, "text/plain")
    assert created["name"] == clean
    uploaded = await send_bytes(http, created["upload_descriptor"]["url"], b"abc", "text/plain")
    assert uploaded.status_code == 200, uploaded.text
    response = await http.get(download_url(live, created["id"], live.settings.local_user))
    assert response.status_code == 200
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment; filename=")
    assert disposition.endswith(f"; filename*=UTF-8''{quote(clean, safe='')}")
    assert response.content == b"abc"


async def test_names_of_direct_uploads_are_sanitized(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    body = (
        b"--b0undary\r\n"
        b'Content-Disposition: form-data; name="file"; filename="..\\..\\x/\x01evil\x1f.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\nhello\r\n--b0undary--\r\n"
    )
    response = await http.post(
        live.base + "/files/upload",
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=b0undary"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "_evil_.txt"


async def test_an_unpaired_surrogate_in_a_name_is_a_clear_400(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    body = (
        '{"type":"attachments.create",'
        '"params":{"name":"a\\ud800b.txt","size":1,"mime_type":"text/plain"}}'
    )
    response = await http.post(live.url, content=body, headers={"Content-Type": "application/json"})
    # Refused up front like any lone surrogate in a request (protocol.parse_request).
    assert response.status_code == 400, response.text
    assert "surrogate" in response.json()["error"]["message"]


# -- signed URLs ------------------------------------------------------------------------------


async def test_tampered_links_are_403(live: LiveServer, http: httpx.AsyncClient) -> None:
    user = live.settings.local_user
    first = await two_phase(http, live, "one.png", PNG, "image/png")
    second = await two_phase(http, live, "two.png", PNG, "image/png")
    url = first["preview_url"]
    assert (await http.get(url)).status_code == 200
    sig = dict(parse_qsl(urlsplit(url).query))["sig"]
    exp = dict(parse_qsl(urlsplit(url).query))["exp"]

    tampered = [
        with_query(url, sig=("A" if sig[0] != "A" else "B") + sig[1:]),
        with_query(url, sig=""),
        with_query(url, exp=str(int(exp) + 1)),
        with_query(url, exp="99999999999"),
        with_query(url, inline="0"),
        with_query(url, extra="1"),
        with_path(url, f"/files/attachments/{second['id']}"),
        download_url(live, first["id"], user).split("&sig=")[0],
    ]
    for bad in tampered:
        error_of(await http.get(bad), 403, "invalid_signature")

    # An upload URL is not a download URL, nor the other way round.
    created = await create_attachment(http, live, "three.txt", 3, "text/plain")
    upload = created["upload_descriptor"]["url"]
    error_of(await http.get(with_path(upload, f"/files/attachments/{created['id']}")), 403,
             "invalid_signature")  # fmt: skip
    response = await send_bytes(
        http, with_path(url, f"/files/uploads/{first['id']}"), PNG, "image/png"
    )
    error_of(response, 403, "invalid_signature")
    response = await send_bytes(
        http, with_query(upload, exp=str(int(exp) + 5)), b"abc", "text/plain"
    )
    error_of(response, 403, "invalid_signature")
    assert sorted(blob_names(live)) == sorted([first["id"], second["id"]])


async def test_expired_links_are_403_link_expired(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    user = live.settings.local_user
    uploaded = await two_phase(http, live, "one.png", PNG, "image/png")
    created = await create_attachment(http, live, "a.txt", 3, "text/plain")
    past = UrlSigner(load_or_create_secret(live.settings), 60, clock=lambda: time.time() - 3600)
    download = past.sign(live.base, f"/files/attachments/{uploaded['id']}", user)
    preview = past.sign(
        live.base, f"/files/attachments/{uploaded['id']}", user, params={"inline": "1"}
    )
    upload = past.sign(live.base, f"/files/uploads/{created['id']}", user)

    for url in (download, preview):
        assert "expired at" in error_of(await http.get(url), 403, "link_expired")
    response = await send_bytes(http, upload, b"abc", "text/plain", "PUT")
    error_of(response, 403, "link_expired")
    # The same signer, now: valid (so it really was the expiry).
    now = UrlSigner(load_or_create_secret(live.settings), 60)
    response = await http.get(now.sign(live.base, f"/files/attachments/{uploaded['id']}", user))
    assert response.status_code == 200


async def test_links_and_ids_of_another_user_do_not_work(
    two_users: LiveServer, http: httpx.AsyncClient
) -> None:
    live = two_users
    alice_file = await two_phase(http, live, "alice.png", PNG, "image/png", user="alice")
    bob_file = await two_phase(http, live, "bob.png", PNG[:-1] + b"!", "image/png", user="bob")

    # Alice's link serves Alice's file, to anyone holding it (an <img> sends no credentials).
    assert (await http.get(alice_file["preview_url"])).content == PNG
    # Signed for Alice, pointed at Bob's file (by path, or signed for it outright): refused.
    error_of(await http.get(with_path(alice_file["preview_url"],
                                      f"/files/attachments/{bob_file['id']}")),
             403, "invalid_signature")  # fmt: skip
    forged = download_url(live, bob_file["id"], "alice")
    error_of(await http.get(forged), 403, "invalid_signature")
    forged_upload = attachments_of(live).signer.sign(
        live.base, f"/files/uploads/{bob_file['id']}", "alice"
    )
    error_of(await send_bytes(http, forged_upload, PNG, "image/png"), 403, "invalid_signature")

    # Bob cannot put Alice's attachment in a message, nor delete it.
    response = await http.post(
        live.url,
        json=create_with("Mine now", alice_file["id"]),
        headers={"X-Forwarded-User": "bob"},
    )
    assert alice_file["id"] in error_of(response, 404, "not_found")
    response = await chatkit(
        http, live, "attachments.delete", "bob", attachment_id=alice_file["id"]
    )
    error_of(response, 404, "not_found")
    assert (blobs_dir(live) / alice_file["id"]).exists()

    # Alice can.
    response = await http.post(
        live.url, json=create_with("Mine", alice_file["id"]), headers={"X-Forwarded-User": "alice"}
    )
    assert response.status_code == 200


async def test_unknown_ids_are_404(live: LiveServer, http: httpx.AsyncClient) -> None:
    user = live.settings.local_user
    signer = attachments_of(live).signer
    for attachment_id in ("atc_nope", "atc_0000", "a%00b", "a\x00b"):
        url = signer.sign(live.base, f"/files/attachments/{attachment_id}", user)
        error_of(await http.get(url), 404, "not_found")
        url = signer.sign(live.base, f"/files/uploads/{attachment_id}", user)
        error_of(await send_bytes(http, url, b"abc", "text/plain", "PUT"), 404, "not_found")
    response = await http.post(live.url, json=create_with("Here", "atc_nope"))
    assert "atc_nope" in error_of(response, 404, "not_found")


# -- lifecycle --------------------------------------------------------------------------------


async def test_deleting_an_attachment_removes_blob_and_row(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    uploaded = await two_phase(http, live, "a.txt", b"abc", "text/plain")
    url = download_url(live, uploaded["id"], live.settings.local_user)
    assert blob_names(live) == [uploaded["id"]]

    response = await chatkit(http, live, "attachments.delete", attachment_id=uploaded["id"])

    assert response.status_code == 200, response.text
    assert blob_names(live) == []
    assert await attachments_of(live).store.owner_of_attachment(uploaded["id"]) is None
    error_of(await http.get(url), 404, "not_found")
    response = await http.post(live.url, json=create_with("Here", uploaded["id"]))
    error_of(response, 404, "not_found")


async def test_deleting_a_thread_removes_its_attachments_and_workspace(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    user = live.settings.local_user
    csv = await two_phase(http, live, "data.csv", CSV, "text/csv")
    image = await two_phase(http, live, "one.png", PNG, "image/png", method="PUT")
    kept = await two_phase(http, live, "kept.txt", b"abc", "text/plain")
    events = await stream_events(http, live.url, create_with("Here", csv["id"], image["id"]))
    no_errors(events)
    thread_id = events[0].thread.id
    workspace = Workspaces(live.settings.data_dir / "workspaces").path(user, thread_id)
    assert (workspace / "uploads" / "data.csv").read_bytes() == CSV
    assert len(blob_names(live)) == 3

    response = await chatkit(http, live, "threads.delete", thread_id=thread_id)

    assert response.status_code == 200, response.text
    assert blob_names(live) == [kept["id"]]
    assert not workspace.exists()
    store = attachments_of(live).store
    assert await store.owner_of_attachment(csv["id"]) is None
    error_of(await http.get(image["preview_url"]), 404, "not_found")


async def test_uploads_never_attached_are_collected(
    settings: Settings, http: httpx.AsyncClient
) -> None:
    with running(server_with(settings, upload_ttl_hours=3 / 3600)) as live:
        attached = await two_phase(http, live, "attached.txt", b"abc", "text/plain")
        events = await stream_events(http, live.url, create_with("Here", attached["id"]))
        no_errors(events)
        orphan = await two_phase(http, live, "orphan.txt", b"abc", "text/plain")
        pending = await create_attachment(http, live, "pending.txt", 3, "text/plain")
        store = attachments_of(live).store

        async def collected() -> bool:
            return (
                await store.owner_of_attachment(orphan["id"]) is None
                and await store.owner_of_attachment(pending["id"]) is None
            )

        await eventually(collected, within=20)
        assert blob_names(live) == [attached["id"]]
        assert await store.owner_of_attachment(attached["id"]) == live.settings.local_user
        response = await send_bytes(http, pending["upload_descriptor"]["url"], b"abc", "text/plain")
        error_of(response, 404, "not_found")


# -- what the model receives ------------------------------------------------------------------


def user_contents(request: dict[str, Any]) -> list[dict[str, Any]]:
    """Every content part of every user message in a Responses request, oldest first."""
    return [
        part
        for entry in request["input"]
        if isinstance(entry, dict) and entry.get("role") == "user"
        and isinstance(entry.get("content"), list)
        for part in entry["content"]
    ]  # fmt: skip


async def test_an_image_reaches_the_model_as_a_data_url(
    database_url: str, tmp_path: Path, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    settings = provider_settings(database_url, tmp_path / "data", scripted_openai)
    scripted_openai.script(
        responses_step([Text("A chart.")]), title_step("Chart"), responses_step([Text("Yes.")])
    )
    with running(LiveServer(settings)) as live:
        image = await two_phase(http, live, "chart.png", PNG, "image/png")
        events = await stream_events(http, live.url, create_with("What is this?", image["id"]))
        no_errors(events)
        events = await stream_events(http, live.url, add_with(events[0].thread.id, "Sure?"))
        no_errors(events)

    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    first, second = scripted_openai.streamed
    assert {"type": "input_image", "detail": "auto", "image_url": data_url} in user_contents(first)
    # The next turn's history still has it (from the transcript, not converted again).
    images = [p for p in user_contents(second) if p["type"] == "input_image"]
    assert [p["image_url"] for p in images] == [data_url]


async def test_an_image_reaches_the_model_as_a_signed_url(
    database_url: str,
    tmp_path: Path,
    scripted_openai: ScriptedOpenAI,
    http: httpx.AsyncClient,
    store: PostgresStore,
) -> None:
    settings = provider_settings(
        database_url, tmp_path / "data", scripted_openai, image_input="url"
    )
    scripted_openai.script(
        responses_step([Text("A chart.")]), title_step("Chart"), responses_step([Text("Yes.")])
    )
    with running(LiveServer(settings)) as live:
        image = await two_phase(http, live, "chart.png", PNG, "image/png")
        events = await stream_events(http, live.url, create_with("What is this?", image["id"]))
        no_errors(events)
        [part] = [
            p for p in user_contents(scripted_openai.streamed[0]) if p["type"] == "input_image"
        ]
        url = part["image_url"]
        assert url.startswith(f"{live.base}/files/attachments/{image['id']}?")
        response = await http.get(url)
        assert response.status_code == 200
        assert response.content == PNG and response.headers["content-type"] == "image/png"

        # A month on, the link in the transcript has expired; the next turn sends a fresh one.
        thread_id = events[0].thread.id
        month_ago = UrlSigner(
            load_or_create_secret(live.settings), 3600, clock=lambda: time.time() - 30 * 86400
        )
        stale_url = month_ago.sign(
            live.base, f"{ATTACHMENTS_PREFIX}/{image['id']}", live.settings.local_user,
            params={"inline": "1"},
        )  # fmt: skip
        assert (await http.get(stale_url)).status_code == 403
        async with store.pool.connection() as conn:
            await conn.execute(
                "UPDATE agent_transcript SET data = replace(data::text, %s, %s)::jsonb"
                " WHERE thread_id = %s",
                (url, stale_url, thread_id),
            )
        no_errors(await stream_events(http, live.url, add_with(thread_id, "Sure?")))
        [again] = [
            p for p in user_contents(scripted_openai.streamed[1]) if p["type"] == "input_image"
        ]
        assert again["image_url"] != stale_url
        response = await http.get(again["image_url"])
        assert response.status_code == 200 and response.content == PNG


async def test_a_pdf_reaches_the_model_as_input_file(
    database_url: str, tmp_path: Path, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    settings = provider_settings(database_url, tmp_path / "data", scripted_openai)
    scripted_openai.script(responses_step([Text("A PDF.")]), title_step("PDF"))
    with running(LiveServer(settings)) as live:
        response = await direct(http, live, "paper.pdf", PDF, "application/pdf")
        pdf = response.json()
        events = await stream_events(http, live.url, create_with("Summarize", pdf["id"]))
        no_errors(events)

    [part] = [p for p in user_contents(scripted_openai.streamed[0]) if p["type"] == "input_file"]
    assert part == {
        "type": "input_file",
        "filename": "paper.pdf",
        "file_data": "data:application/pdf;base64," + base64.b64encode(PDF).decode(),
    }


SANDBOX_PROBLEM = sandbox_problem()


@pytest.mark.skipif(SANDBOX_PROBLEM is not None, reason=f"no sandbox: {SANDBOX_PROBLEM}")
async def test_a_csv_lands_in_the_workspace_and_python_reads_it(
    database_url: str, tmp_path: Path, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    settings = provider_settings(database_url, tmp_path / "data", scripted_openai)
    code = (
        "import pandas as pd\n"
        "df = pd.read_csv('/workspace/uploads/city temps.csv')\n"
        "print(df.sort_values('temp').to_string(index=False))\n"
        "print('mean', df.temp.mean())\n"
    )
    scripted_openai.script(
        responses_step([FunctionCall(PYTHON_TOOL, json.dumps({"code": code}), "call_csv")]),
        responses_step([Text("Pune is warmest.")]),
        title_step("Temperatures"),
        responses_step([Text("Still Pune.")]),
    )
    with running(LiveServer(settings)) as live:
        csv = await two_phase(http, live, "city temps.csv", CSV, "text/csv")
        events = await stream_events(http, live.url, create_with("Which is warmest?", csv["id"]))
        no_errors(events)
        thread_id = events[0].thread.id
        events = await stream_events(http, live.url, add_with(thread_id, "Sure?"))
        no_errors(events)

    first, after_tool, second = scripted_openai.streamed
    [note] = [p["text"] for p in user_contents(first) if "/workspace/uploads/" in p.get("text", "")]
    assert "/workspace/uploads/city temps.csv" in note
    assert "Its first lines:\ncity,temp\nOslo,4\nLima,19\nPune,31" in note
    [output] = [
        entry["output"]
        for entry in after_tool["input"]
        if isinstance(entry, dict) and entry.get("type") == "function_call_output"
    ]
    assert output.startswith("status: ok"), output
    assert "Oslo     4" in output and "Pune    31" in output and "mean 18.0" in output
    notes = [p["text"] for p in user_contents(second) if "/workspace/uploads/" in p.get("text", "")]
    assert notes == [note]


async def test_a_retried_message_reuses_its_attachment_copy_unless_it_changed(
    database_url: str, tmp_path: Path, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    settings = provider_settings(database_url, tmp_path / "data", scripted_openai)
    scripted_openai.script(
        responses_step([Text("Ok.")]), title_step("Temps"),
        responses_step([Text("Again.")]), responses_step([Text("Once more.")]),
        responses_step([Text("And again.")]),
    )  # fmt: skip
    with running(LiveServer(settings)) as live:
        csv = await two_phase(http, live, "temps.csv", CSV, "text/csv")
        events = await stream_events(http, live.url, create_with("Look", csv["id"]))
        no_errors(events)
        thread_id = events[0].thread.id
        [question] = [e.item.id for e in events if e.type == "thread.item.done"][:1]
        retry = {
            "type": "threads.retry_after_item",
            "params": {"thread_id": thread_id, "item_id": question},
        }
        no_errors(await stream_events(http, live.url, retry))
        uploads = live.app.state.workspaces.path(live.settings.local_user, thread_id) / "uploads"
        assert sorted(p.name for p in uploads.iterdir()) == ["temps.csv"]
        (uploads / "temps.csv").write_bytes(CSV.replace(b"Oslo", b"Oslu"))  # the model edited it
        no_errors(await stream_events(http, live.url, retry))
        assert sorted(p.name for p in uploads.iterdir()) == ["temps (2).csv", "temps.csv"]
        assert (uploads / "temps (2).csv").read_bytes() == CSV
        # What code in the sandbox may leave there is never followed nor waited on.
        (uploads / "temps.csv").unlink()
        os.mkfifo(uploads / "temps.csv")
        (uploads / "temps (2).csv").unlink()
        (uploads / "temps (2).csv").symlink_to(tmp_path / "elsewhere.csv")
        (tmp_path / "elsewhere.csv").write_bytes(CSV)
        no_errors(await asyncio.wait_for(stream_events(http, live.url, retry), timeout=30))
        assert (uploads / "temps (3).csv").read_bytes() == CSV

    notes = [
        [p["text"] for p in user_contents(request) if "/workspace/uploads/" in p.get("text", "")]
        for request in scripted_openai.streamed
        if request["input"][-1].get("role") == "user"
    ]
    first, retried, after_edit, after_traps = (note for [note] in notes)
    assert "/workspace/uploads/temps.csv:" in first and retried == first
    assert "/workspace/uploads/temps (2).csv:" in after_edit
    assert "/workspace/uploads/temps (3).csv:" in after_traps


async def test_an_attachment_is_not_copied_through_a_planted_uploads_link(
    database_url: str, tmp_path: Path, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    settings = provider_settings(database_url, tmp_path / "data", scripted_openai)
    scripted_openai.script(
        responses_step([Text("Hi.")]), title_step("Temps"), responses_step([Text("Seen.")])
    )
    outside = tmp_path / "outside"
    outside.mkdir()
    with running(LiveServer(settings)) as live:
        events = await stream_events(http, live.url, create_with("Hello"))
        no_errors(events)
        thread_id = events[0].thread.id
        workspace = live.app.state.workspaces.ensure(live.settings.local_user, thread_id)
        link = "../../../../outside"  # from data/workspaces/<user>/<thread>: short to quote
        (workspace / "uploads").symlink_to(link)  # what code in the sandbox could leave
        csv = await two_phase(http, live, "temps.csv", CSV, "text/csv")
        no_errors(await stream_events(http, live.url, add_with(thread_id, "Look", csv["id"])))

    assert (workspace / link).resolve() == outside.resolve()
    assert list(outside.iterdir()) == []
    request = scripted_openai.streamed[-1]
    [note] = [p["text"] for p in user_contents(request) if "temps.csv" in p.get("text", "")]
    assert note.startswith(
        "[The user attached 'temps.csv', but it could not be placed in the workspace "
        f"('uploads' is a symbolic link (to {link!r}); the file tools never follow links."
    ), note


async def test_a_short_text_file_is_previewed_whole(
    database_url: str, tmp_path: Path, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    """No trailing newline: the last line is still complete and belongs in the preview."""
    settings = provider_settings(database_url, tmp_path / "data", scripted_openai)
    scripted_openai.script(responses_step([Text("Ok.")]), title_step("Notes"))
    with running(LiveServer(settings)) as live:
        notes = await two_phase(http, live, "notes.txt", b"first\nlast line", "text/plain")
        events = await stream_events(http, live.url, create_with("Read", notes["id"]))
        no_errors(events)
    [note] = [
        p["text"]
        for p in user_contents(scripted_openai.streamed[0])
        if "uploads/" in p.get("text", "")
    ]
    assert note.endswith("Its first lines:\nfirst\nlast line]"), note


# -- interrupted and concurrent uploads -------------------------------------------------------


async def test_a_client_that_goes_away_mid_upload_leaves_nothing(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    created = await create_attachment(http, live, "a.txt", 4 * MB, "text/plain")
    url = urlsplit(created["upload_descriptor"]["url"])
    for method, target, content_type in (
        ("PUT", f"{url.path}?{url.query}", "text/plain"),
        ("POST", "/files/upload", "multipart/form-data; boundary=XyZzY"),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        writer.write(
            f"{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {4 * MB}\r\n\r\n".encode()
            + b'--XyZzY\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'
            + b"x" * MB
        )
        await writer.drain()

        async def writing() -> bool:
            return any(name.endswith(".partial") for name in blob_names(live))

        await eventually(writing)  # the server is in the middle of storing it
        writer.close()
        del reader

    async def cleaned_up() -> bool:
        return blob_names(live) == []

    await eventually(cleaned_up)
    # The two-phase attachment is still pending: the whole file is taken afterwards.
    data = b"y" * (4 * MB)
    response = await send_bytes(http, created["upload_descriptor"]["url"], data, "text/plain")
    assert response.status_code == 200, response.text
    assert (blobs_dir(live) / created["id"]).read_bytes() == data


async def test_a_multipart_body_that_ends_early_is_refused(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    body = b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nabc'
    response = await http.post(
        live.base + "/files/upload",
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=b0undary"},
    )
    assert "ended early" in error_of(response, 400, "invalid_request")
    assert blob_names(live) == []


async def test_two_uploads_to_one_url_at_once_store_one_file_whole(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    size = 8 * MB
    created = await create_attachment(http, live, "a.txt", size, "text/plain")
    url = created["upload_descriptor"]["url"]

    async def body(byte: bytes) -> AsyncIterator[bytes]:
        for _ in range(size // (256 * 1024)):
            yield byte * (256 * 1024)
            await asyncio.sleep(0.001)

    responses = await asyncio.gather(
        http.put(url, content=body(b"a")), http.put(url, content=body(b"b"))
    )

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200, 409], [r.text for r in responses]
    stored = (blobs_dir(live) / created["id"]).read_bytes()
    assert stored in (b"a" * size, b"b" * size)
    assert blob_names(live) == [created["id"]]


@pytest.mark.parametrize(
    "body",
    [
        # A part's headers longer than any real one.
        b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        + b"X-Junk: "
        + b"a" * (1024 * 1024)
        + b"\r\n\r\nhello\r\n--b0undary--\r\n",
        # Not what the boundary announces.
        b"--something-else\r\n\r\nhello\r\n",
        # A header line without a colon.
        b"--b0undary\r\nno colon here\r\n\r\nhello\r\n--b0undary--\r\n",
    ],
    ids=["huge part header", "wrong boundary", "bad header line"],
)
async def test_a_malformed_multipart_body_is_400(
    live: LiveServer, http: httpx.AsyncClient, body: bytes
) -> None:
    created = await create_attachment(http, live, "a.txt", 5, "text/plain")
    for url in (live.base + "/files/upload", created["upload_descriptor"]["url"]):
        response = await http.post(
            url, content=body, headers={"Content-Type": "multipart/form-data; boundary=b0undary"}
        )
        error_of(response, 400, "invalid_request")
    assert blob_names(live) == []
