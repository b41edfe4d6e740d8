"""Attachments on S3: moto in server mode on a loopback port, the server on ``blob_backend=s3``.

Two-phase uploads go straight to the bucket through a presigned PUT; a message naming the
attachment confirms the bytes arrived (and are what was declared). Direct uploads stream
through the server into a multipart upload.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiobotocore.session import get_session
from moto.server import ThreadedMotoServer
from pydantic import ValidationError

from tests.live import (
    LiveServer,
    ScriptedOpenAI,
    free_port,
    provider_settings,
    responses_step,
    running,
    stream_events,
    title_step,
)
from tests.test_uploads import (
    PNG,
    attachments_of,
    create_attachment,
    create_with,
    direct,
    download_url,
    error_of,
    no_errors,
    user_contents,
)
from workbench.agent.response_events import Text
from workbench.config import Settings
from workbench.context import RequestContext

MB = 1024 * 1024
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@dataclass
class Bucket:
    endpoint: str
    name: str

    def client(self) -> Any:
        return get_session().create_client(
            "s3", endpoint_url=self.endpoint, region_name=REGION, **CREDENTIALS
        )

    async def keys(self) -> list[str]:
        async with self.client() as s3:
            listing = await s3.list_objects_v2(Bucket=self.name)
            return sorted(entry["Key"] for entry in listing.get("Contents", []))

    async def get(self, key: str) -> bytes:
        async with self.client() as s3:
            response = await s3.get_object(Bucket=self.name, Key=key)
            async with response["Body"] as body:
                data: bytes = await body.read()
                return data

    async def head(self, key: str) -> dict[str, Any]:
        async with self.client() as s3:
            head: dict[str, Any] = await s3.head_object(Bucket=self.name, Key=key)
            return head

    async def multipart_uploads(self) -> list[dict[str, Any]]:
        async with self.client() as s3:
            listing = await s3.list_multipart_uploads(Bucket=self.name)
            uploads: list[dict[str, Any]] = listing.get("Uploads", [])
            return uploads


@pytest.fixture
async def bucket(moto_url: str) -> AsyncIterator[Bucket]:
    bucket = Bucket(moto_url, f"workbench-{secrets.token_hex(4)}")
    async with bucket.client() as s3:
        await s3.create_bucket(Bucket=bucket.name)
    yield bucket


def s3_options(bucket: Bucket, prefix: str = "uploads/") -> dict[str, Any]:
    return {
        "blob_backend": "s3",
        "s3_bucket": bucket.name,
        "s3_endpoint_url": bucket.endpoint,
        "s3_region": REGION,
        "s3_access_key_id": CREDENTIALS["aws_access_key_id"],
        "s3_secret_access_key": CREDENTIALS["aws_secret_access_key"],
        "s3_prefix": prefix,
    }


@pytest.fixture
def s3_live(database_url: str, tmp_path: Path, bucket: Bucket) -> Iterator[LiveServer]:
    settings = Settings(
        database_url=database_url, data_dir=tmp_path / "data", kernel_pool_size=0,
        _env_file=None, **s3_options(bucket),
    )  # fmt: skip
    with running(LiveServer(settings)) as live:
        yield live


async def presigned_put(
    http: httpx.AsyncClient, created: dict[str, Any], data: bytes
) -> httpx.Response:
    descriptor = created["upload_descriptor"]
    assert descriptor["method"] == "PUT"
    return await http.put(descriptor["url"], content=data, headers=descriptor["headers"])


async def test_two_phase_goes_straight_to_the_bucket_and_the_model_gets_it(
    database_url: str,
    tmp_path: Path,
    bucket: Bucket,
    scripted_openai: ScriptedOpenAI,
    http: httpx.AsyncClient,
) -> None:
    settings = provider_settings(
        database_url, tmp_path / "data", scripted_openai, **s3_options(bucket)
    )
    scripted_openai.script(responses_step([Text("A chart.")]), title_step("Chart"))
    with running(LiveServer(settings)) as live:
        created = await create_attachment(http, live, "chart.png", len(PNG), "image/png")
        descriptor = created["upload_descriptor"]
        assert descriptor["url"].startswith(f"{bucket.endpoint}/{bucket.name}/uploads/")
        assert created["id"] in descriptor["url"]
        assert descriptor["headers"] == {"Content-Type": "image/png"}
        assert "X-Amz-Signature=" in descriptor["url"]

        response = await presigned_put(http, created, PNG)

        assert response.status_code == 200, response.text
        staged, final = f"uploads/incoming/{created['id']}", f"uploads/{created['id']}"
        assert await bucket.keys() == [staged]
        events = await stream_events(http, live.url, create_with("What is it?", created["id"]))
        no_errors(events)
        # Confirmed: moved out of the presigned URL's reach, so bytes PUT there later (it
        # stays valid until it expires) never replace what was checked.
        assert await bucket.keys() == [final]
        assert await bucket.get(final) == PNG
        assert (await bucket.head(final))["ContentType"] == "image/png"
        assert (await presigned_put(http, created, b"<html>" + PNG[6:])).status_code == 200
        assert await bucket.get(final) == PNG
        owner = RequestContext(live.settings.local_user, live.base)
        stored = await attachments_of(live).store.load_attachment(created["id"], owner)
        assert stored.metadata == {**(stored.metadata or {}), "state": "uploaded", "size": len(PNG)}
        assert stored.upload_descriptor is None
        preview = await http.get(created["preview_url"])
        assert preview.status_code == 200, preview.text
        assert preview.content == PNG and preview.headers["content-type"] == "image/png"

    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    images = [p for p in user_contents(scripted_openai.streamed[0]) if p["type"] == "input_image"]
    assert [p["image_url"] for p in images] == [data_url]
    assert not (tmp_path / "data" / "blobs").exists()


@pytest.mark.parametrize("real", [len(PNG) - 10, len(PNG) + 10])
async def test_a_put_of_another_length_is_not_accepted(
    s3_live: LiveServer, bucket: Bucket, http: httpx.AsyncClient, real: int
) -> None:
    created = await create_attachment(http, s3_live, "chart.png", len(PNG), "image/png")
    data = (PNG * 2)[:real]

    response = await presigned_put(http, created, data)

    if response.status_code == 200:  # moto does not check the signed length; S3 does
        response = await http.post(s3_live.url, json=create_with("Here", created["id"]))
        error_of(response, 400, "size_mismatch")
    else:
        assert response.status_code == 403, response.text
    assert await bucket.keys() == []


async def test_bytes_put_to_the_bucket_must_be_the_declared_type(
    s3_live: LiveServer, bucket: Bucket, http: httpx.AsyncClient
) -> None:
    """The bucket takes whatever it is sent: the content check happens on confirmation."""
    data = b"not a picture at all"
    created = await create_attachment(http, s3_live, "chart.png", len(data), "image/png")
    assert (await presigned_put(http, created, data)).status_code == 200

    response = await http.post(s3_live.url, json=create_with("Here", created["id"]))

    error_of(response, 400, "content_mismatch")
    assert await bucket.keys() == []


async def test_a_message_before_the_put_is_refused(
    s3_live: LiveServer, bucket: Bucket, http: httpx.AsyncClient
) -> None:
    created = await create_attachment(http, s3_live, "a.txt", 3, "text/plain")
    response = await http.post(s3_live.url, json=create_with("Here", created["id"]))
    error_of(response, 400, "upload_incomplete")
    assert (await presigned_put(http, created, b"abc")).status_code == 200
    response = await http.post(s3_live.url, json=create_with("Here", created["id"]))
    assert response.status_code == 200


async def test_direct_upload_streams_a_multipart_upload_into_the_bucket(
    s3_live: LiveServer, bucket: Bucket, http: httpx.AsyncClient
) -> None:
    data = b"".join(hashlib.sha256(str(n).encode()).hexdigest().encode() for n in range(600_000))
    data = data[: 20 * MB + 12345]  # three parts of 8 MiB, the last one short

    async def body() -> AsyncIterator[bytes]:
        boundary = b"--b0undary\r\n"
        yield boundary + b'Content-Disposition: form-data; name="file"; filename="big.txt"\r\n'
        yield b"Content-Type: text/plain\r\n\r\n"
        for start in range(0, len(data), 1_000_003):
            yield data[start : start + 1_000_003]
        yield b"\r\n--b0undary--\r\n"

    response = await http.post(
        s3_live.base + "/files/upload",
        content=body(),
        headers={"Content-Type": "multipart/form-data; boundary=b0undary"},
    )

    assert response.status_code == 200, response.text
    attachment = response.json()
    key = f"uploads/{attachment['id']}"
    assert await bucket.keys() == [key]
    head = await bucket.head(key)
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload of three parts
    assert await bucket.multipart_uploads() == []
    downloaded = await http.get(download_url(s3_live, attachment["id"], "local"))
    assert downloaded.status_code == 200
    assert downloaded.headers["content-length"] == str(len(data))
    assert hashlib.sha256(downloaded.content).digest() == hashlib.sha256(data).digest()


async def test_a_refused_direct_upload_leaves_no_object_and_no_open_multipart_upload(
    database_url: str, tmp_path: Path, bucket: Bucket, http: httpx.AsyncClient
) -> None:
    settings = Settings(
        database_url=database_url, data_dir=tmp_path / "data", kernel_pool_size=0,
        _env_file=None, upload_max_mb=9, **s3_options(bucket),
    )  # fmt: skip
    with running(LiveServer(settings)) as live:
        response = await direct(live=live, http=http, name="big.txt", data=b"x" * (10 * MB),
                                mime_type="text/plain")  # fmt: skip
        error_of(response, 413, "file_too_large")
        response = await direct(http, live, "fake.png", b"text, not a png", "image/png")
        error_of(response, 400, "content_mismatch")
    assert await bucket.keys() == []
    assert await bucket.multipart_uploads() == []


async def test_deleting_removes_the_objects(
    s3_live: LiveServer, bucket: Bucket, http: httpx.AsyncClient
) -> None:
    one = (await direct(http, s3_live, "one.txt", b"one", "text/plain")).json()
    two = (await direct(http, s3_live, "two.txt", b"two", "text/plain")).json()
    three = await create_attachment(http, s3_live, "three.txt", 5, "text/plain")
    assert (await presigned_put(http, three, b"three")).status_code == 200
    assert len(await bucket.keys()) == 3

    response = await http.post(
        s3_live.url,
        json={"type": "attachments.delete", "params": {"attachment_id": one["id"]}},
    )
    assert response.status_code == 200, response.text
    assert await bucket.keys() == sorted(
        [f"uploads/incoming/{three['id']}", f"uploads/{two['id']}"]
    )

    events = await stream_events(http, s3_live.url, create_with("Here", two["id"], three["id"]))
    no_errors(events)
    response = await http.post(
        s3_live.url,
        json={"type": "threads.delete", "params": {"thread_id": events[0].thread.id}},
    )
    assert response.status_code == 200, response.text
    assert await bucket.keys() == []
    error_of(await http.get(download_url(s3_live, two["id"], "local")), 404, "not_found")


def test_s3_uploads_are_capped_at_what_one_copy_request_takes(bucket: Bucket) -> None:
    with pytest.raises(ValidationError, match="at most 5120"):
        Settings(_env_file=None, upload_max_mb=6000, **s3_options(bucket))


async def test_a_confirmation_after_the_bytes_were_already_promoted_goes_through(
    s3_live: LiveServer, bucket: Bucket, http: httpx.AsyncClient
) -> None:
    """An earlier confirmation moved the bytes but failed before recording it (or a second
    message named the same upload at once): the next one finds them in place."""
    created = await create_attachment(http, s3_live, "a.txt", 3, "text/plain")
    assert (await presigned_put(http, created, b"abc")).status_code == 200
    staged, final = f"uploads/incoming/{created['id']}", f"uploads/{created['id']}"
    async with bucket.client() as s3:  # what the earlier confirmation did
        await s3.copy_object(
            Bucket=bucket.name, Key=final, CopySource={"Bucket": bucket.name, "Key": staged}
        )
        await s3.delete_object(Bucket=bucket.name, Key=staged)

    events = await stream_events(http, s3_live.url, create_with("Here", created["id"]))

    no_errors(events)
    assert await bucket.keys() == [final]
