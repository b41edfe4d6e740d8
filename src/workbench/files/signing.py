"""Signed, expiring, owner-bound URLs (HMAC-SHA256).

A signed URL is ``{base_url}{path}?[params&]exp=<unix seconds>&sig=<base64url MAC>``. The MAC
covers the path, the owner's user id, the expiry and every extra parameter, so changing any of
them (or adding a parameter) breaks it. The owner is *in* the MAC but never in the URL: the
route serving a URL works out the owner from the path itself (a thread id, say, whose owner is
in the database) and checks the MAC with that owner. A URL signed for one user therefore never
serves anything that belongs to another, and stops working once its thread is gone.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from workbench.config import Settings

logger = logging.getLogger(__name__)

SECRET_KEY_FILE = "secret_key"
RESERVED_PARAMS = frozenset({"exp", "sig"})

# Anything longer than 12 digits is past the year 33000: not an expiry we ever sign.
_EXPIRY = re.compile(r"[0-9]{1,12}")
_FORMAT_VERSION = "v1"
# A URL inside JSON text (Markdown included): quote() escapes every delimiter in the paths
# we sign. Greedy, so a scan never backtracks; our signature, 43 base64url characters,
# always comes last, and what follows it in the match is put back as it was.
_URL = re.compile(r"""https?://[^\s"'<>()\\]+""")
_SIGNATURE = re.compile(r"[?&]sig=[A-Za-z0-9_-]{43}")


class SignatureStatus(enum.Enum):
    VALID = "valid"
    INVALID = "invalid"
    EXPIRED = "expired"


class UrlSigner:
    """Signs and checks URLs; ``clock`` is injectable so tests can sign in the past."""

    def __init__(
        self, secret: bytes, ttl_seconds: int, *, clock: Callable[[], float] = time.time
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the URL signing secret must be at least 16 bytes")
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self._secret = secret
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    def sign(
        self,
        base_url: str,
        path: str,
        owner: str,
        *,
        params: Mapping[str, str] | None = None,
        ttl_seconds: int | None = None,
        expires_at: int | None = None,
    ) -> str:
        """An absolute URL for ``path`` (unencoded, starting with ``/``) valid for ``owner``
        until ``expires_at`` (default: ``ttl_seconds`` from now).

        ``params`` are extra query parameters that change what is served (``inline``, say);
        they are signed too.
        """
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        extra = dict(params or {})
        if RESERVED_PARAMS & extra.keys():
            raise ValueError(f"{sorted(RESERVED_PARAMS)} are reserved query parameters")
        if expires_at is None:
            expires_at = int(self._clock()) + (ttl_seconds or self.ttl_seconds)
        exp = str(expires_at)
        query = urlencode({**extra, "exp": exp, "sig": self._mac(path, owner, exp, extra)})
        return f"{base_url.rstrip('/')}{quote(path)}?{query}"

    def check(
        self,
        path: str,
        owner: str,
        exp: str | None,
        sig: str | None,
        params: Mapping[str, str] | None = None,
    ) -> SignatureStatus:
        """Whether ``sig`` signs exactly this path, owner, expiry and params, and is current.

        The MAC is checked before the expiry, so a tampered expiry reads as an invalid
        signature rather than an expired one.
        """
        if not exp or not sig or not _EXPIRY.fullmatch(exp):
            return SignatureStatus.INVALID
        expected = self._mac(path, owner, exp, dict(params or {}))
        # Bytes, not str: compare_digest refuses non-ASCII str, and the signature comes
        # straight from the query string.
        if not hmac.compare_digest(expected.encode(), sig.encode("utf-8", "surrogateescape")):
            return SignatureStatus.INVALID
        if int(exp) <= self._clock():
            return SignatureStatus.EXPIRED
        return SignatureStatus.VALID

    def refresh_links(
        self, json_text: str, owner: str, base_url: str, prefixes: Iterable[str]
    ) -> str:
        """``json_text`` with each link we signed for ``owner`` under ``prefixes`` renewed,
        once it has less than half its lifetime left or points at another base URL.

        Links live on in saved items (figures, file lists, image previews) and in the model's
        transcript: renewed as they are read, they keep working as long as what they point to
        exists, while each copy handed out still expires. Renewed links expire at the end of
        a half-lifetime step, so every read within a step gives the same URL and a transcript
        reads the same from turn to turn (the provider's prompt cache holds). A link that
        another user or key signed, or that was tampered with, stays as it is.
        """
        starts = tuple(prefixes)
        if "sig=" not in json_text:
            return json_text
        step = max(1, self.ttl_seconds // 2)
        now = int(self._clock())
        expires_at = (now // step + 2) * step  # between half and all of the lifetime away

        def refresh(match: re.Match[str]) -> str:
            text = match.group()
            signature = _SIGNATURE.search(text)
            if signature is None:
                return text
            url, rest = text[: signature.end()], text[signature.end() :]
            split = urlsplit(url)
            path = unquote(split.path)
            if not path.startswith(starts):
                return text
            params = dict(parse_qsl(split.query, keep_blank_values=True))
            exp, sig = params.pop("exp", None), params.pop("sig", None)
            if self.check(path, owner, exp, sig, params) is SignatureStatus.INVALID:
                return text
            here = url.startswith(base_url.rstrip("/") + quote(path) + "?")
            if here and int(exp or 0) - now > step:
                return text
            renewed = self.sign(base_url, path, owner, params=params, expires_at=expires_at)
            # Escaped for the JSON string it goes into: the base URL may come from a Host
            # header, which can hold a quote.
            return json.dumps(renewed)[1:-1] + rest

        return _URL.sub(refresh, json_text)

    def _mac(self, path: str, owner: str, exp: str, params: dict[str, str]) -> str:
        # JSON keeps the fields apart unambiguously (a path may contain any separator).
        message = json.dumps(
            [_FORMAT_VERSION, path, owner, exp, sorted(params.items())], ensure_ascii=False
        )
        digest = hmac.new(self._secret, message.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def load_or_create_secret(settings: Settings) -> bytes:
    """``WORKBENCH_SECRET_KEY``, else the key kept in ``$WORKBENCH_DATA_DIR/secret_key``.

    The file is created on first use (random, mode 0600) so signed URLs outlive a restart.
    Several processes starting at once agree on one key: creation is exclusive, and a loser
    reads the winner's file.
    """
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    path = settings.data_dir / SECRET_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(secrets.token_urlsafe(32) + "\n")
    logger.info("generated a URL signing key in %s", path)
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    # A concurrent creator may not have written its key yet: give it a moment.
    for _ in range(50):
        key = path.read_text(encoding="ascii").strip()
        if key:
            break
        time.sleep(0.01)
    else:
        raise RuntimeError(f"{path} is empty: delete it to generate a new key")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        logger.warning("%s was readable by others (mode %o); setting it to 0600", path, mode)
        path.chmod(0o600)
    return key.encode()
