"""Signed URLs: what the MAC binds, expiry, and the key kept across restarts."""

from __future__ import annotations

import json
import re
import stat
import time
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
from pydantic import ValidationError

from workbench.config import Settings
from workbench.files.signing import (
    SECRET_KEY_FILE,
    SignatureStatus,
    UrlSigner,
    load_or_create_secret,
)

SECRET = b"s" * 32
NOW = 1_700_000_000.0
BASE = "https://chat.example.com"
PATH = "/files/workspaces/thr_1/out/report final.csv"


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def parts(url: str) -> tuple[str, dict[str, str]]:
    split = urlsplit(url)
    return unquote(split.path), dict(parse_qsl(split.query))


def signer(clock: Clock | None = None, ttl: int = 600) -> UrlSigner:
    return UrlSigner(SECRET, ttl, clock=clock or Clock())


def test_signed_url_is_absolute_and_names_no_owner() -> None:
    url = signer().sign(BASE + "/", PATH, "alice@example.com")
    assert url.startswith(BASE + "/files/workspaces/thr_1/out/report%20final.csv?")
    path, query = parts(url)
    assert path == PATH
    assert set(query) == {"exp", "sig"}
    assert query["exp"] == str(int(NOW) + 600)
    assert "alice" not in url
    assert signer().check(PATH, "alice@example.com", query["exp"], query["sig"]) == (
        SignatureStatus.VALID
    )


def test_every_signed_field_matters() -> None:
    url = signer().sign(BASE, PATH, "alice", params={"inline": "1"})
    path, query = parts(url)
    exp, sig = query["exp"], query["sig"]
    check = signer().check
    assert check(path, "alice", exp, sig, {"inline": "1"}) is SignatureStatus.VALID
    assert check(path + "x", "alice", exp, sig, {"inline": "1"}) is SignatureStatus.INVALID
    assert check(path, "bob", exp, sig, {"inline": "1"}) is SignatureStatus.INVALID
    assert check(path, "alice", str(int(exp) + 1), sig, {"inline": "1"}) is (
        SignatureStatus.INVALID
    )
    assert check(path, "alice", exp, sig, None) is SignatureStatus.INVALID
    assert check(path, "alice", exp, sig, {"inline": "0"}) is SignatureStatus.INVALID
    assert check(path, "alice", exp, sig, {"inline": "1", "x": "y"}) is SignatureStatus.INVALID
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    assert check(path, "alice", exp, flipped, {"inline": "1"}) is SignatureStatus.INVALID
    other_key = UrlSigner(b"t" * 32, 600, clock=Clock())
    assert other_key.check(path, "alice", exp, sig, {"inline": "1"}) is SignatureStatus.INVALID


def test_fields_cannot_be_shifted_into_each_other() -> None:
    # A naive "path|owner" message would let path "/a|b" + owner "c" collide with "/a" + "b|c".
    url = signer().sign(BASE, "/a|b", "c")
    _, query = parts(url)
    assert signer().check("/a", "b|c", query["exp"], query["sig"]) is not SignatureStatus.VALID


@pytest.mark.parametrize(
    ("exp", "sig"),
    [
        (None, "abc"),
        ("123", None),
        ("", ""),
        ("soon", "abc"),
        ("+99999999999", "abc"),
        ("١٢٣", "abc"),  # Arabic-Indic digits: int() accepts them, the format must not
        ("9999999999", "é\udcff"),  # non-ASCII and lone surrogates in the signature
    ],
)
def test_malformed_values_are_invalid_not_errors(exp: str | None, sig: str | None) -> None:
    assert signer().check(PATH, "alice", exp, sig) is SignatureStatus.INVALID


def test_expiry_is_checked_after_the_mac() -> None:
    clock = Clock()
    url = signer(clock, ttl=60).sign(BASE, PATH, "alice")
    _, query = parts(url)
    check = signer(clock).check
    clock.now = NOW + 59
    assert check(PATH, "alice", query["exp"], query["sig"]) is SignatureStatus.VALID
    clock.now = NOW + 60
    assert check(PATH, "alice", query["exp"], query["sig"]) is SignatureStatus.EXPIRED
    assert signer(clock).check(PATH, "alice", query["exp"], query["sig"]) is not (
        SignatureStatus.VALID
    )
    # Stretching the expiry of an expired link breaks the MAC instead of reviving the link.
    assert check(PATH, "alice", str(int(NOW) + 3600), query["sig"]) is SignatureStatus.INVALID


def test_ttl_override_and_argument_checks() -> None:
    _, query = parts(signer().sign(BASE, PATH, "alice", ttl_seconds=5))
    assert query["exp"] == str(int(NOW) + 5)
    with pytest.raises(ValueError, match="reserved"):
        signer().sign(BASE, PATH, "alice", params={"sig": "x"})
    with pytest.raises(ValueError, match="start with '/'"):
        signer().sign(BASE, "files/x", "alice")
    with pytest.raises(ValueError, match="16 bytes"):
        UrlSigner(b"short", 60)


def test_secret_is_created_once_private_and_reused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", _env_file=None)
    first = load_or_create_secret(settings)
    key_file = settings.data_dir / SECRET_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(first) >= 32
    # A restart reads the same key, so URLs signed before it still verify.
    url = UrlSigner(first, 600).sign(BASE, PATH, "alice")
    _, query = parts(url)
    again = load_or_create_secret(Settings(data_dir=tmp_path / "data", _env_file=None))
    assert again == first
    assert UrlSigner(again, 600).check(PATH, "alice", query["exp"], query["sig"]) is (
        SignatureStatus.VALID
    )
    assert load_or_create_secret(Settings(data_dir=tmp_path / "other", _env_file=None)) != first


def test_loose_key_file_is_made_private(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, _env_file=None)
    load_or_create_secret(settings)
    key_file = tmp_path / SECRET_KEY_FILE
    key_file.chmod(0o644)
    load_or_create_secret(settings)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_empty_key_file_is_an_error_not_an_empty_key(tmp_path: Path) -> None:
    (tmp_path / SECRET_KEY_FILE).touch(mode=0o600)
    with pytest.raises(RuntimeError, match="is empty"):
        load_or_create_secret(Settings(data_dir=tmp_path, _env_file=None))


def test_configured_key_wins_and_must_be_strong(tmp_path: Path) -> None:
    key = "k" * 40
    settings = Settings(data_dir=tmp_path, secret_key=key, _env_file=None)
    assert load_or_create_secret(settings) == key.encode()
    assert not (tmp_path / SECRET_KEY_FILE).exists()
    with pytest.raises(ValidationError, match="at least 32 characters"):
        Settings(data_dir=tmp_path, secret_key="short", _env_file=None)


def test_download_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_PUBLIC_URL", "https://chat.example.com/")
    monkeypatch.setenv("WORKBENCH_DOWNLOAD_URL_TTL", "120")
    settings = Settings(_env_file=None)
    assert settings.public_url == "https://chat.example.com"
    assert settings.download_url_ttl == 120
    assert Settings(_env_file=None, public_url=None).download_url_ttl == 120
    with pytest.raises(ValidationError, match="absolute http"):
        Settings(public_url="chat.example.com", _env_file=None)
    with pytest.raises(ValidationError):
        Settings(download_url_ttl=0, _env_file=None)


# -- links in saved items, re-signed as they are read --------------------------------------

DOWNLOADS = ("/files/workspaces/", "/files/attachments/")


def test_refresh_links_re_signs_our_links_wherever_they_sit() -> None:
    clock = Clock()
    old = signer(clock, ttl=60)
    link = old.sign(BASE, PATH, "alice")
    preview = old.sign(BASE, "/files/attachments/atc_1", "alice", params={"inline": "1"})
    text = f'{{"src": "{preview}", "markdown": "[report final.csv]({link}) and {link}\\n"}}'
    clock.now = NOW + 3600  # both expired

    fresh = signer(clock).refresh_links(text, "alice", "https://new.example.com", DOWNLOADS)

    assert fresh != text
    urls = re.findall(r"https://[^\s\"()\\\\]+", fresh)
    assert len(urls) == 3
    for url in urls:
        path, query = parts(url)
        assert url.startswith("https://new.example.com/files/")
        params = {k: v for k, v in query.items() if k not in {"exp", "sig"}}
        status = signer(clock).check(path, "alice", query["exp"], query["sig"], params)
        assert status is SignatureStatus.VALID, url
        # Valid for another half to whole lifetime, the same for every read in this step.
        assert int(NOW) + 3600 + 300 < int(query["exp"]) <= int(NOW) + 3600 + 600
    clock.now += 10
    assert signer(clock).refresh_links(text, "alice", "https://new.example.com", DOWNLOADS) == fresh
    assert "inline=1" in fresh
    assert fresh.count("[report final.csv](https://new.example.com/") == 1


def test_refresh_links_leaves_what_it_did_not_sign_for_this_owner() -> None:
    clock = Clock()
    mine = signer(clock)
    bobs = mine.sign(BASE, PATH, "bob")
    other_key = UrlSigner(b"t" * 32, 600, clock=clock).sign(BASE, PATH, "alice")
    upload = mine.sign(BASE, "/files/uploads/atc_1", "alice")  # not a download: left to expire
    valid = mine.sign(BASE, PATH, "alice")
    tampered = valid.replace("exp=", "exp=1")
    unsigned = f"{BASE}/files/workspaces/thr_1/a.txt"
    elsewhere = "https://example.org/page?sig=abc&exp=1"
    for url in (bobs, other_key, upload, tampered, unsigned, elsewhere):
        text = f"see [it]({url}) or {url}"
        assert mine.refresh_links(text, "alice", BASE, DOWNLOADS) == text, url
    assert mine.refresh_links("no links at all", "alice", BASE, DOWNLOADS) == "no links at all"


def test_refresh_links_leaves_links_with_time_left_and_keeps_the_json_valid() -> None:
    clock = Clock()
    fresh_enough = signer(clock, ttl=600).sign(BASE, PATH, "alice")
    clock.now = NOW + 200  # 400 of 600 s left: more than half
    text = json.dumps({"markdown": f"Here: {fresh_enough}. Done"})
    assert signer(clock).refresh_links(text, "alice", BASE, DOWNLOADS) == text

    clock.now = NOW + 400  # 200 s left: renewed, the full stop after it kept
    renewed = signer(clock).refresh_links(text, "alice", 'https://a"b', DOWNLOADS)
    markdown = json.loads(renewed)["markdown"]  # still valid JSON, whatever the base URL
    assert markdown.startswith('Here: https://a"b/files/workspaces/') and markdown.endswith(
        ". Done"
    )
    url = markdown.removeprefix("Here: ").removesuffix(". Done")
    path, query = parts(url)
    assert signer(clock).check(path, "alice", query["exp"], query["sig"]) is SignatureStatus.VALID


def test_refresh_links_moves_links_to_the_current_base_url() -> None:
    link = signer().sign("http://127.0.0.1:8000", PATH, "alice")  # all its lifetime left
    text = json.dumps({"src": link})
    moved = json.loads(signer().refresh_links(text, "alice", BASE, DOWNLOADS))["src"]
    assert moved.startswith(BASE + "/files/workspaces/")
    assert signer().refresh_links(json.dumps({"src": moved}), "alice", BASE, DOWNLOADS) == (
        json.dumps({"src": moved})
    )


def test_refresh_links_is_linear_in_hostile_text() -> None:
    text = json.dumps({"text": "http://" * 200_000 + " sig=" + "https://x?sig=" * 50_000})
    started = time.perf_counter()
    assert signer().refresh_links(text, "alice", BASE, DOWNLOADS) == text
    assert time.perf_counter() - started < 2.0
