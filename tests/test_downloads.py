"""Workspace downloads through signed URLs, against a live server on a real socket."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from chatkit.types import ThreadMetadata, WidgetItem
from starlette.requests import Request

from tests.conftest import new_user
from tests.live import LiveServer
from workbench.config import Settings
from workbench.context import Authenticator, RequestContext
from workbench.files.downloads import workspace_file_path, workspace_file_url
from workbench.files.signing import UrlSigner, load_or_create_secret
from workbench.sandbox.workspaces import Workspaces
from workbench.store import PostgresStore
from workbench.widgets import FileView, file_list_widget

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@dataclass
class Workspace:
    live: LiveServer
    owner: RequestContext
    thread_id: str
    path: Path

    @property
    def signer(self) -> UrlSigner:
        signer: UrlSigner = self.live.app.state.signer
        return signer

    def url(self, relative: str, *, inline: bool = False) -> str:
        return workspace_file_url(
            self.signer, self.live.base, self.owner.user_id, self.thread_id, relative,
            inline=inline,
        )  # fmt: skip

    def write(self, relative: str, data: bytes) -> Path:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return target


async def new_thread(store: PostgresStore, owner: RequestContext) -> str:
    thread = ThreadMetadata(id=store.generate_thread_id(owner), created_at=datetime.now())
    await store.save_thread(thread, owner)
    return thread.id


def workspaces(live: LiveServer) -> Workspaces:
    return Workspaces(live.settings.data_dir / "workspaces")


@pytest.fixture
async def ws(live: LiveServer, store: PostgresStore, alice: RequestContext) -> Workspace:
    thread_id = await new_thread(store, alice)
    path = workspaces(live).ensure(alice.user_id, thread_id)
    return Workspace(live, alice, thread_id, path)


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body["error"]) == {"code", "message"}
    error: dict[str, Any] = body["error"]
    return error


def raw_get(base: str, target: str) -> tuple[int, dict[str, str], bytes]:
    """GET exactly ``target`` (no client-side normalisation of ``..`` or ``%2e``)."""
    split = urlsplit(base)
    assert split.hostname is not None
    connection = http.client.HTTPConnection(split.hostname, split.port, timeout=10)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def signed_target(ws: Workspace, raw_relative: str, decoded_relative: str) -> str:
    """A request target with ``raw_relative`` on the wire, validly signed for what the server
    decodes it to: what a tool that signs any path the model asks for would hand out."""
    url = ws.signer.sign("", workspace_file_path(ws.thread_id, decoded_relative), ws.owner.user_id)
    query = url.split("?", 1)[1]
    return f"/files/workspaces/{ws.thread_id}/{raw_relative}?{query}"


# -- serving -------------------------------------------------------------------------------


async def test_valid_link_downloads_the_file(ws: Workspace, http: httpx.AsyncClient) -> None:
    ws.write("notes.txt", b"hello, workspace\n")
    url = ws.url("notes.txt")
    assert url.startswith(ws.live.base + f"/files/workspaces/{ws.thread_id}/notes.txt?exp=")

    response = await http.get(url)

    assert response.status_code == 200, response.text
    assert response.content == b"hello, workspace\n"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["content-disposition"] == (
        "attachment; filename=\"notes.txt\"; filename*=UTF-8''notes.txt"
    )
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "private, no-store"
    assert response.headers["content-length"] == "17"


async def test_names_are_encoded_both_ways(ws: Workspace, http: httpx.AsyncClient) -> None:
    name = 'résumé "final" 100%?#.csv'
    ws.write(f"out/{name}", b"a,b\n1,2\n")

    response = await http.get(ws.url(f"out/{name}"))

    assert response.status_code == 200, response.text
    assert response.content == b"a,b\n1,2\n"
    assert response.headers["content-type"].startswith("text/csv")
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="r_sum_ _final_ 100_?#.csv"; ')
    assert disposition.endswith("filename*=UTF-8''" + quote(name, safe=""))


@pytest.mark.parametrize(
    ("name", "data", "inline", "media_type", "disposition"),
    [
        ("plot.png", PNG, True, "image/png", "inline"),
        ("plot.png", PNG, False, "image/png", "attachment"),
        ("page.html", b"<script>alert(1)</script>", True, "text/html", "attachment"),
        ("data.parquet.bin", b"\x00\x01", False, "application/octet-stream", "attachment"),
    ],
)
async def test_content_type_and_disposition(
    ws: Workspace,
    http: httpx.AsyncClient,
    name: str,
    data: bytes,
    inline: bool,
    media_type: str,
    disposition: str,
) -> None:
    ws.write(name, data)

    response = await http.get(ws.url(name, inline=inline))

    assert response.status_code == 200, response.text
    assert response.content == data
    assert response.headers["content-type"].split(";")[0] == media_type
    assert response.headers["content-disposition"].split(";")[0] == disposition
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_large_file_streams_with_ranges_and_head(
    ws: Workspace, http: httpx.AsyncClient
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    ws.write("big.bin", data)
    url = ws.url("big.bin")

    async with http.stream("GET", url) as response:
        assert response.status_code == 200
        chunks = [chunk async for chunk in response.aiter_raw()]
    assert b"".join(chunks) == data
    assert len(chunks) > 1

    partial = await http.get(url, headers={"Range": "bytes=10-19"})
    assert partial.status_code == 206
    assert partial.content == data[10:20]

    head = await http.head(url)
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(data))
    assert head.content == b""


async def test_a_symlink_is_not_followed_even_one_that_stays_inside(
    ws: Workspace, http: httpx.AsyncClient
) -> None:
    """Where a link points can change between any check and the read: none is followed."""
    ws.write("real/data.txt", b"inside")
    (ws.path / "alias.txt").symlink_to(ws.path / "real/data.txt")
    (ws.path / "alias").symlink_to("real")

    for relative in ("alias.txt", "alias/data.txt"):
        assert error_of(await http.get(ws.url(relative)), 404)["code"] == "not_found", relative
    response = await http.get(ws.url("real/data.txt"))
    assert response.status_code == 200, response.text
    assert response.content == b"inside"


async def test_base_url_comes_from_settings_or_the_request(tmp_path: Path) -> None:
    scope = {
        "type": "http", "method": "GET", "path": "/chatkit", "root_path": "", "query_string": b"",
        "headers": [(b"host", b"workbench.internal:8000")], "scheme": "http",
        "server": ("workbench.internal", 8000),
    }  # fmt: skip
    request = Request(scope)
    plain = Settings(data_dir=tmp_path, _env_file=None)
    assert (await Authenticator(plain)(request)).base_url == "http://workbench.internal:8000"
    public = Settings(data_dir=tmp_path, public_url="https://chat.example.com/", _env_file=None)
    assert (await Authenticator(public)(request)).base_url == "https://chat.example.com"


# -- signatures ----------------------------------------------------------------------------


def tampered(url: str, **changes: str | None) -> str:
    base, _, query = url.partition("?")
    params = dict(part.split("=", 1) for part in query.split("&"))
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    return base + "?" + "&".join(f"{k}={v}" for k, v in params.items())


async def test_tampered_links_are_refused(ws: Workspace, http: httpx.AsyncClient) -> None:
    ws.write("notes.txt", b"mine")
    ws.write("secret.txt", b"also mine, but not what was shared")
    ws.write("plot.png", PNG)
    url = ws.url("notes.txt")
    exp = url.split("exp=")[1].split("&")[0]
    sig = url.split("sig=")[1]
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]

    attempts = {
        "other path": url.replace("/notes.txt?", "/secret.txt?"),
        "sig": tampered(url, sig=flipped),
        "truncated sig": tampered(url, sig=sig[:-2]),
        "exp": tampered(url, exp=str(int(exp) + 3600)),
        "no sig": tampered(url, sig=None),
        "no exp": tampered(url, exp=None),
        "no query": url.split("?")[0],
        "added param": url + "&download=0",
        "added inline": tampered(url, inline="1"),
        "repeated sig": url + f"&sig={sig}",
        "non-ascii sig": tampered(url, sig="%C3%A9" + sig[1:]),
    }
    image = ws.url("plot.png", inline=True)
    attempts["removed inline"] = tampered(image, inline=None)
    for name, attempt in attempts.items():
        error = error_of(await http.get(attempt), 403)
        assert error["code"] == "invalid_signature", name
        assert "link" in error["message"], name

    assert (await http.get(url)).content == b"mine"


async def test_expired_link_says_so(ws: Workspace, http: httpx.AsyncClient) -> None:
    ws.write("notes.txt", b"old news")
    secret = load_or_create_secret(ws.live.settings)
    two_hours_ago = UrlSigner(secret, 3600, clock=lambda: time.time() - 7200)
    url = workspace_file_url(
        two_hours_ago, ws.live.base, ws.owner.user_id, ws.thread_id, "notes.txt"
    )

    error = error_of(await http.get(url), 403)

    assert error["code"] == "link_expired"
    assert "expired" in error["message"]
    assert ws.url("notes.txt") != url
    assert (await http.get(ws.url("notes.txt"))).status_code == 200


async def test_short_ttl_link_expires(
    ws: Workspace, http: httpx.AsyncClient, alice: RequestContext
) -> None:
    ws.write("notes.txt", b"brief")
    url = ws.signer.sign(
        ws.live.base, workspace_file_path(ws.thread_id, "notes.txt"), alice.user_id, ttl_seconds=1
    )
    assert (await http.get(url)).status_code == 200
    await asyncio.sleep(2.05)
    assert error_of(await http.get(url), 403)["code"] == "link_expired"


async def test_link_signed_for_another_user_serves_nothing(
    live: LiveServer, store: PostgresStore, http: httpx.AsyncClient
) -> None:
    alice, bob = new_user(), new_user()
    bobs_thread = await new_thread(store, bob)
    workspaces(live).ensure(bob.user_id, bobs_thread)
    (workspaces(live).path(bob.user_id, bobs_thread) / "diary.txt").write_bytes(b"bob's")
    # Alice's own workspace under Bob's thread id, in case the route trusted the signer.
    workspaces(live).ensure(alice.user_id, bobs_thread)
    (workspaces(live).path(alice.user_id, bobs_thread) / "diary.txt").write_bytes(b"alice's")
    signer: UrlSigner = live.app.state.signer

    url = workspace_file_url(signer, live.base, alice.user_id, bobs_thread, "diary.txt")

    assert error_of(await http.get(url), 403)["code"] == "invalid_signature"
    bobs_url = workspace_file_url(signer, live.base, bob.user_id, bobs_thread, "diary.txt")
    assert (await http.get(bobs_url)).content == b"bob's"


async def test_link_dies_with_its_thread(
    ws: Workspace, store: PostgresStore, http: httpx.AsyncClient
) -> None:
    ws.write("notes.txt", b"soon gone")
    url = ws.url("notes.txt")
    assert (await http.get(url)).status_code == 200

    await store.delete_thread(ws.thread_id, ws.owner)

    assert error_of(await http.get(url), 404)["code"] == "not_found"


async def test_unknown_thread_and_file_are_404(ws: Workspace, http: httpx.AsyncClient) -> None:
    signer, owner = ws.signer, ws.owner.user_id
    unknown_thread = workspace_file_url(signer, ws.live.base, owner, "thr_missing", "notes.txt")
    assert error_of(await http.get(unknown_thread), 404)["code"] == "not_found"
    assert error_of(await http.get(ws.url("missing.txt")), 404)["code"] == "not_found"
    (ws.path / "folder").mkdir()
    assert error_of(await http.get(ws.url("folder")), 404)["code"] == "not_found"
    assert error_of(await http.get(ws.url("")), 404)["code"] == "not_found"


# -- escaping the workspace ----------------------------------------------------------------


@pytest.fixture
def outside(ws: Workspace, live: LiveServer) -> Path:
    """A file next to the workspace, and one in another thread's workspace of the same user."""
    target = live.settings.data_dir / "outside.txt"
    target.write_bytes(b"host secret")
    other = workspaces(live).ensure(ws.owner.user_id, "thr_other")
    (other / "theirs.txt").write_bytes(b"other thread")
    return target


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("../../../outside.txt", "../../../outside.txt"),
        ("a/../../../../outside.txt", "a/../../../../outside.txt"),
        ("%2e%2e/%2e%2e/%2e%2e/outside.txt", "../../../outside.txt"),
        ("%2E%2E%2F%2E%2E%2F%2E%2E%2Foutside.txt", "../../../outside.txt"),
        ("..%5c..%5c..%5coutside.txt", "..\\..\\..\\outside.txt"),
        ("../thr_other/theirs.txt", "../thr_other/theirs.txt"),
        ("/etc/passwd", "/etc/passwd"),
        ("%2Fetc%2Fpasswd", "/etc/passwd"),
        ("notes.txt%00.png", "notes.txt\x00.png"),
    ],
)
async def test_traversal_is_404_even_when_signed(
    ws: Workspace, outside: Path, raw: str, decoded: str
) -> None:
    ws.write("notes.txt", b"fine")

    status, _, body = await asyncio.to_thread(
        raw_get, ws.live.base, signed_target(ws, raw, decoded)
    )

    assert status == 404, body
    assert json.loads(body)["error"]["code"] == "not_found"
    unsigned = f"/files/workspaces/{ws.thread_id}/{raw}"
    status, _, body = await asyncio.to_thread(raw_get, ws.live.base, unsigned)
    assert status == 403, body


@pytest.mark.parametrize(
    ("link", "target"),
    [
        ("passwd", "/etc/passwd"),
        ("etc", "/etc"),
        ("outside", "{data}/outside.txt"),
        ("sibling", "{workspaces}/thr_other"),
        ("others", "{workspaces}/thr_other/theirs.txt"),
        ("loop", "loop"),
    ],
)
async def test_symlinks_out_of_the_workspace_are_404(
    ws: Workspace, http: httpx.AsyncClient, outside: Path, link: str, target: str
) -> None:
    data = ws.live.settings.data_dir
    (ws.path / link).symlink_to(target.format(data=data, workspaces=ws.path.parent))
    for relative in (link, f"{link}/passwd", f"{link}/theirs.txt"):
        error = error_of(await http.get(ws.url(relative)), 404)
        assert error["code"] == "not_found", relative


async def test_fifo_is_refused_without_hanging(ws: Workspace, http: httpx.AsyncClient) -> None:
    os.mkfifo(ws.path / "pipe")
    response = await asyncio.wait_for(http.get(ws.url("pipe")), timeout=5)
    assert error_of(response, 404)["code"] == "not_found"


async def test_odd_bytes_are_refused_never_a_server_error(ws: Workspace) -> None:
    ws.write("notes.txt", b"fine")
    fake = "exp=9999999999&sig=" + "A" * 43
    thread = ws.thread_id
    cases = {
        f"/files/workspaces/{thread}%00/notes.txt?{fake}": 404,
        f"/files/workspaces/{thread}/notes.txt%00?{fake}": 403,
        f"/files/workspaces/{thread}/%ff%fe?{fake}": 403,
        f"/files/workspaces/{thread}/{'a/' * 2000}x?{fake}": 403,
        signed_target(ws, "%ff", "\ufffd"): 404,
        signed_target(ws, "notes.txt%00", "notes.txt\x00"): 404,
    }
    for target, expected in cases.items():
        status, headers, body = await asyncio.to_thread(raw_get, ws.live.base, target)
        assert status == expected, (target[:80], status, body[:200])
        assert headers["content-type"] == "application/json"


async def test_saved_links_are_re_signed_when_a_thread_is_read(
    live: LiveServer, store: PostgresStore, http: httpx.AsyncClient
) -> None:
    """A figure or file list saved a month ago still works: its links are signed anew."""
    local = RequestContext(user_id=live.settings.local_user)
    thread_id = await new_thread(store, local)
    (workspaces(live).ensure(local.user_id, thread_id) / "report.csv").write_bytes(b"a,b\n1,2\n")
    secret = load_or_create_secret(live.settings)
    month_ago = UrlSigner(secret, 3600, clock=lambda: time.time() - 30 * 86400)
    stale = workspace_file_url(month_ago, live.base, local.user_id, thread_id, "report.csv")
    assert error_of(await http.get(stale), 403)["code"] == "link_expired"
    widget = file_list_widget([FileView("report.csv", stale, 8)])
    item = WidgetItem(
        id=f"msg_{thread_id}", thread_id=thread_id, created_at=datetime.now(), widget=widget
    )
    await store.add_thread_item(thread_id, item, local)

    for request in (
        {"type": "items.list", "params": {"thread_id": thread_id}},
        {"type": "threads.get_by_id", "params": {"thread_id": thread_id}},
    ):
        response = await http.post(live.url, json=request)
        assert response.status_code == 200, response.text
        assert stale not in response.text
        links = re.findall(r"\((http://[^)\s]+)\)", response.text)
        assert len(links) == 1, response.text
        download = await http.get(links[0])
        assert download.status_code == 200, download.text
        assert download.content == b"a,b\n1,2\n"
    # What is stored does not change: each read hands out its own expiring copy.
    stored = await store.load_item(thread_id, item.id, local)
    assert stale in stored.model_dump_json()
