"""Authentication: HS256 and JWKS bearer tokens, a trusted proxy header, and the CLI's refusal
to serve an unauthenticated server beyond loopback.

Every user id in here is random, so the session's shared database never shows one test's
threads to another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.live import (
    LiveServer,
    _ThreadedUvicorn,
    add_message,
    create_thread,
    free_port,
    started,
    stream_events,
)
from workbench.cli import _loopback
from workbench.config import Settings
from workbench.context import RequestContext
from workbench.store import PostgresStore

SECRET = "test-secret-" + secrets.token_hex(32)  # long enough for HS512 too
OTHER_SECRET = "other-secret-" + secrets.token_hex(32)


def token(
    sub: str | None, *, key: Any = SECRET, algorithm: str = "HS256", expires_in: float = 300,
    headers: dict[str, Any] | None = None, **claims: Any,
) -> str:  # fmt: skip
    payload: dict[str, Any] = {"exp": int(time.time() + expires_in), **claims}
    if sub is not None:
        payload["sub"] = sub
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def new_sub(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def assert_unauthorized(response: httpx.Response, *mentions: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "unauthorized"
    for fragment in mentions:
        assert fragment in error["message"], error


def auth_settings(database_url: str, data_dir: Path, **fields: Any) -> Settings:
    return Settings(
        database_url=database_url, data_dir=data_dir, kernel_pool_size=0, _env_file=None, **fields
    )


@pytest.fixture
def jwt_server(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    settings = auth_settings(database_url, tmp_path, auth="jwt", jwt_secret=SECRET)
    yield from started(LiveServer(settings))


LIST = {"type": "threads.list", "params": {}}


# -- HS256 --------------------------------------------------------------------------------------


def _now() -> int:
    return int(time.time())


def _tampered(signed: str, **claims: Any) -> str:
    """The token with its payload swapped for ``claims`` and the original signature kept."""
    header, _, signature = signed.split(".")
    payload = base64url({"exp": _now() + 300, **claims})
    return f"{header}.{payload}.{signature}"


def base64url(value: dict[str, Any] | bytes) -> str:
    data = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


BAD_CREDENTIALS: list[tuple[str, dict[str, str], str]] = [
    ("no header", {}, "Bearer"),
    ("basic scheme", {"Authorization": "Basic dXNlcjpwYXNz"}, "Bearer"),
    ("bearer without token", {"Authorization": "Bearer"}, "Bearer"),
    ("token without scheme", {"Authorization": token("alice")}, "Bearer"),
    ("not a jwt", bearer("not-a-jwt"), "invalid token"),
    ("bad signature", bearer(token("alice", key=OTHER_SECRET)), "invalid"),
    ("tampered payload", bearer(_tampered(token("alice"), sub="admin")), "invalid"),
    ("expired", bearer(token("alice", expires_in=-60)), "expired"),
    ("not yet valid", bearer(token("alice", nbf=_now() + 3600)), "invalid"),
    ("no sub", bearer(token(None)), "sub"),
    ("empty sub", bearer(token("")), "sub"),
    ("no exp", bearer(jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256")), "exp"),
    ("alg none", bearer(jwt.encode({"sub": "alice", "exp": _now() + 300}, "",
                                   algorithm="none")), "invalid"),
    ("other hmac alg", bearer(token("alice", algorithm="HS512")), "invalid"),
    ("user id too long", bearer(token("u" * 300)), "too long"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "mention"),
    [(h, m) for _, h, m in BAD_CREDENTIALS],
    ids=[name for name, _, _ in BAD_CREDENTIALS],
)
async def test_jwt_rejects(
    headers: dict[str, str], mention: str, jwt_server: LiveServer, http: httpx.AsyncClient
) -> None:
    assert_unauthorized(await http.post(jwt_server.url, json=LIST, headers=headers), mention)
    # Streaming ops are refused before any event, and a bad body does not reveal more than
    # the missing authentication.
    response = await http.post(jwt_server.url, json=create_thread("hi"), headers=headers)
    assert_unauthorized(response)
    response = await http.post(
        jwt_server.url, content=b"{broken", headers={**headers, "Content-Type": "text/plain"}
    )
    assert_unauthorized(response)


async def test_jwt_valid_token_sub_is_the_user(
    jwt_server: LiveServer, http: httpx.AsyncClient, store: PostgresStore
) -> None:
    sub = new_sub("alice")
    events = await stream_events(
        http, jwt_server.url, create_thread("mine"), headers=bearer(token(sub))
    )
    thread_id = events[0].thread.id
    assert (await store.load_thread(thread_id, RequestContext(sub))).id == thread_id
    with pytest.raises(Exception, match="not found"):
        await store.load_thread(thread_id, RequestContext(jwt_server.settings.local_user))

    listed = await http.post(jwt_server.url, json=LIST, headers=bearer(token(sub)))
    assert [t["id"] for t in listed.json()["data"]] == [thread_id]


async def test_probes_and_preflight_need_no_token(
    jwt_server: LiveServer, http: httpx.AsyncClient
) -> None:
    assert (await http.get(f"{jwt_server.base}/healthz")).status_code == 200
    assert (await http.get(f"{jwt_server.base}/readyz")).status_code == 200
    # Browsers never send credentials on a CORS preflight.
    response = await http.options(jwt_server.url, headers={
        "Origin": "http://localhost:5173",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    })  # fmt: skip
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://localhost:5173"


async def test_threads_are_invisible_to_another_sub(
    jwt_server: LiveServer, http: httpx.AsyncClient, store: PostgresStore
) -> None:
    alice_sub = new_sub("alice")
    alice, bob = bearer(token(alice_sub)), bearer(token(new_sub("bob")))
    events = await stream_events(http, jwt_server.url, create_thread("secret plans"), headers=alice)
    thread_id = events[0].thread.id
    question, answer = [e.item.id for e in events if e.type == "thread.item.done"]

    attempts: list[dict[str, Any]] = [
        {"type": "threads.get_by_id", "params": {"thread_id": thread_id}},
        add_message(thread_id, "let me in"),
        {"type": "items.list", "params": {"thread_id": thread_id}},
        {"type": "threads.update", "params": {"thread_id": thread_id, "title": "pwned"}},
        {"type": "threads.delete", "params": {"thread_id": thread_id}},
        {"type": "items.feedback",
         "params": {"thread_id": thread_id, "item_ids": [answer], "kind": "negative"}},
        {"type": "threads.retry_after_item",
         "params": {"thread_id": thread_id, "item_id": question}},
        {"type": "threads.add_client_tool_output",
         "params": {"thread_id": thread_id, "result": {}}},
        {"type": "threads.add_structured_input",
         "params": {"thread_id": thread_id, "item_id": question, "input": {}}},
        {"type": "threads.custom_action",
         "params": {"thread_id": thread_id, "action": {"type": "x"}}},
        {"type": "threads.sync_custom_action",
         "params": {"thread_id": thread_id, "action": {"type": "x"}}},
    ]  # fmt: skip
    for body in attempts:
        response = await http.post(jwt_server.url, json=body, headers=bob)
        assert response.status_code == 404, (body["type"], response.text)
        assert response.json()["error"]["code"] == "not_found"
        assert thread_id in response.json()["error"]["message"]

    listed = await http.post(jwt_server.url, json=LIST, headers=bob)
    assert listed.json()["data"] == []

    # Alice's thread is untouched by all of it.
    response = await http.post(jwt_server.url, json=attempts[0], headers=alice)
    assert response.status_code == 200
    thread = response.json()
    assert thread["title"] == "secret plans"
    assert [item["id"] for item in thread["items"]["data"]] == [question, answer]
    assert await store.load_feedback(thread_id, RequestContext(alice_sub)) == {}


async def test_audience_and_issuer(
    database_url: str, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    settings = auth_settings(
        database_url, tmp_path, auth="jwt", jwt_secret=SECRET,
        jwt_audience="workbench", jwt_issuer="https://issuer.test",
    )  # fmt: skip
    for server in started(LiveServer(settings)):
        good = token(new_sub("u"), aud="workbench", iss="https://issuer.test")
        assert (await http.post(server.url, json=LIST, headers=bearer(good))).status_code == 200
        for bad in (
            token(new_sub("u"), iss="https://issuer.test"),
            token(new_sub("u"), aud="someone-else", iss="https://issuer.test"),
            token(new_sub("u"), aud="workbench", iss="https://evil.test"),
            token(new_sub("u"), aud="workbench"),
        ):
            assert_unauthorized(await http.post(server.url, json=LIST, headers=bearer(bad)))


# -- JWKS ---------------------------------------------------------------------------------------


class JwksServer(_ThreadedUvicorn):
    """An identity provider's key endpoint on a loopback port."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        self.keys = keys
        self.hits = 0
        super().__init__(Starlette(routes=[Route("/.well-known/jwks.json", self._jwks)]))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    async def _jwks(self, request: Request) -> JSONResponse:
        self.hits += 1
        return JSONResponse({"keys": self.keys})


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


async def test_jwks_tokens(
    database_url: str, tmp_path: Path, http: httpx.AsyncClient, store: PostgresStore
) -> None:
    key, other_key = rsa_key(), rsa_key()
    for jwks in started(JwksServer([public_jwk(key, "k1")])):
        settings = auth_settings(database_url, tmp_path, auth="jwt", jwt_jwks_url=jwks.url)
        for server in started(LiveServer(settings)):

            def rs256(sub: str, kid: str | None = "k1", signer: Any = key, **claims: Any) -> str:
                return token(sub, key=signer, algorithm="RS256",
                             headers={"kid": kid} if kid else None, **claims)  # fmt: skip

            sub = new_sub("rsa")
            events = await stream_events(
                http, server.url, create_thread("via jwks"), headers=bearer(rs256(sub))
            )
            thread_id = events[0].thread.id
            assert (await store.load_thread(thread_id, RequestContext(sub))).id == thread_id
            assert jwks.hits >= 1

            public_pem = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            rejected = {
                "signed by another key": rs256(sub, signer=other_key),
                "unknown kid": rs256(sub, kid="k2"),
                "no kid": rs256(sub, kid=None),
                "expired": rs256(sub, expires_in=-60),
                "no sub": token(None, key=key, algorithm="RS256", headers={"kid": "k1"}),
                "hs256 with the shared secret": token(sub, headers={"kid": "k1"}),
                # Algorithm confusion: an HMAC "signed" with the public key must not pass.
                "hs256 with the public key": _hmac_token(sub, public_pem),
            }
            for name, bad in rejected.items():
                response = await http.post(server.url, json=LIST, headers=bearer(bad))
                assert response.status_code == 401, (name, response.text)
                assert response.json()["error"]["code"] == "unauthorized"


def _hmac_token(sub: str, secret: bytes) -> str:
    """HS256 by hand: PyJWT refuses to use a PEM public key as an HMAC secret."""

    header = base64url({"alg": "HS256", "typ": "JWT", "kid": "k1"})
    payload = base64url({"sub": sub, "exp": _now() + 300})
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{base64url(signature)}"


async def test_jwks_unreachable_is_401_not_500(
    database_url: str, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    # Nothing listens on this port: the key cannot be fetched, so nobody gets in.
    url = f"http://127.0.0.1:{free_port()}/jwks.json"
    settings = auth_settings(database_url, tmp_path, auth="jwt", jwt_jwks_url=url)
    for server in started(LiveServer(settings)):
        bad = token("x", key=rsa_key(), algorithm="RS256", headers={"kid": "k1"})
        assert_unauthorized(await http.post(server.url, json=LIST, headers=bearer(bad)))
        assert (await http.get(f"{server.base}/healthz")).status_code == 200


# -- trusted proxy header -----------------------------------------------------------------------


async def test_header_auth(
    database_url: str, tmp_path: Path, http: httpx.AsyncClient, store: PostgresStore
) -> None:
    settings = auth_settings(database_url, tmp_path, auth="header")
    for server in started(LiveServer(settings)):
        assert_unauthorized(await http.post(server.url, json=LIST), "X-Forwarded-User")
        assert_unauthorized(
            await http.post(server.url, json=LIST, headers={"X-Forwarded-User": ""})
        )
        carol, dave = new_sub("carol"), new_sub("dave")
        events = await stream_events(
            http, server.url, create_thread("hi"), headers={"X-Forwarded-User": carol}
        )
        thread_id = events[0].thread.id
        assert (await store.load_thread(thread_id, RequestContext(carol))).id == thread_id

        get = {"type": "threads.get_by_id", "params": {"thread_id": thread_id}}
        response = await http.post(server.url, json=get, headers={"X-Forwarded-User": dave})
        assert response.status_code == 404
        response = await http.post(server.url, json=LIST, headers={"X-Forwarded-User": dave})
        assert response.json()["data"] == []
        response = await http.post(server.url, json=LIST, headers={"X-Forwarded-User": carol})
        assert [t["id"] for t in response.json()["data"]] == [thread_id]


async def test_custom_auth_header(
    database_url: str, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    settings = auth_settings(database_url, tmp_path, auth="header", auth_header="X-Remote-User")
    for server in started(LiveServer(settings)):
        response = await http.post(server.url, json=LIST, headers={"X-Forwarded-User": "eve"})
        assert_unauthorized(response, "X-Remote-User")
        response = await http.post(server.url, json=LIST, headers={"X-Remote-User": new_sub("f")})
        assert response.status_code == 200


# -- the CLI refuses an open, unauthenticated server --------------------------------------------


def cli_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WORKBENCH_", "OPENAI_")) and k != "DATABASE_URL"}  # fmt: skip
    return {**env, "DATABASE_URL": database_url, "WORKBENCH_AUTH": "none", **extra}


def run_serve(
    database_url: str, tmp_path: Path, host: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workbench", "serve", "--host", host, "--port", str(free_port())],
        env=cli_env(database_url, WORKBENCH_DATA_DIR=str(tmp_path), **extra),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "example.internal"])
def test_serve_refuses_open_bind_without_auth(host: str, database_url: str, tmp_path: Path) -> None:
    result = run_serve(database_url, tmp_path, host)
    assert result.returncode == 2, result.stderr
    assert f"refusing to listen on {host} without authentication" in result.stderr
    assert "WORKBENCH_ALLOW_INSECURE_BIND" in result.stderr


def test_serve_with_insecure_bind_allowed_goes_ahead(database_url: str, tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: the server gets past the refusal,
    # starts up, and only then fails to bind, so nothing is ever exposed.
    result = run_serve(database_url, tmp_path, "192.0.2.1", WORKBENCH_ALLOW_INSECURE_BIND="true")
    assert "refusing" not in result.stderr
    assert "listening on 192.0.2.1 with WORKBENCH_AUTH=none" in result.stderr
    assert "Application startup complete" in result.stderr
    assert "bind on address ('192.0.2.1'" in result.stderr
    assert result.returncode not in (0, 2), result.stderr


def test_serve_on_loopback_starts(database_url: str, tmp_path: Path) -> None:
    """The control for the refusals above: the same command on loopback serves."""
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workbench",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=cli_env(database_url, WORKBENCH_DATA_DIR=str(tmp_path)),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 30
        status = None
        while status is None and time.monotonic() < deadline and process.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code
            except httpx.TransportError:
                time.sleep(0.1)
        assert status == 200, log.read_text()
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("localhost", True),
        ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("192.0.2.1", False),
        ("example.com", False), ("", False), ("localhost.evil.com", False),
    ],
)  # fmt: skip
def test_loopback(host: str, loopback: bool) -> None:
    assert _loopback(host) is loopback
