"""Who is asking: authentication, and the request context every store call is scoped by.

``WORKBENCH_AUTH`` picks how a request proves its user:

* ``none`` — everyone is the one local user (``WORKBENCH_LOCAL_USER``). For a laptop: the
  server refuses to listen beyond loopback in this mode unless explicitly forced.
* ``jwt`` — ``Authorization: Bearer <token>``, checked with an HS256 secret or against a JWKS
  URL; expiry is enforced and ``sub`` becomes the user id.
* ``header`` — a trusted reverse proxy authenticates and puts the user id in a header. Only
  safe when nothing but that proxy can reach the server.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import jwt
from starlette.requests import HTTPConnection

from workbench.config import Settings
from workbench.errors import ApiError

_MAX_USER_ID_LENGTH = 256


@dataclass(frozen=True, slots=True)
class RequestContext:
    user_id: str
    # Where absolute URLs (downloads, previews) point: WORKBENCH_PUBLIC_URL, else the
    # request's own base URL.
    base_url: str = "http://127.0.0.1:8000"

    def __post_init__(self) -> None:
        if not self.user_id:
            raise ValueError("RequestContext needs a non-empty user_id")


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._jwks = (
            jwt.PyJWKClient(settings.jwt_jwks_url, cache_keys=True, lifespan=300)
            if settings.auth == "jwt" and settings.jwt_jwks_url
            else None
        )

    async def __call__(self, request: HTTPConnection) -> RequestContext:
        return RequestContext(await self._user(request), self.base_url(request))

    def base_url(self, request: HTTPConnection) -> str:
        """Where absolute URLs point: WORKBENCH_PUBLIC_URL, else the request's base URL."""
        return self._settings.public_url or str(request.base_url).rstrip("/")

    async def _user(self, request: HTTPConnection) -> str:
        match self._settings.auth:
            case "none":
                return self._settings.local_user
            case "header":
                user = request.headers.get(self._settings.auth_header, "").strip()
                if not user:
                    raise _unauthorized(f"missing the {self._settings.auth_header} header")
                return _checked_user_id(user)
            case "jwt":
                return _checked_user_id(await self._verify(request))

    async def _verify(self, request: HTTPConnection) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("send 'Authorization: Bearer <token>'")
        token = token.strip()
        settings = self._settings
        try:
            if self._jwks is not None:
                signing_key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
                key: object = signing_key.key
                algorithms = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"]
            else:
                assert settings.jwt_secret is not None
                key, algorithms = settings.jwt_secret.get_secret_value(), ["HS256"]
            claims = jwt.decode(
                token,
                key,  # type: ignore[arg-type]
                algorithms=algorithms,
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": settings.jwt_audience is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorized("the token has expired") from None
        except jwt.PyJWKClientError as error:
            raise _unauthorized(f"no key to check the token with ({error})") from None
        except jwt.InvalidTokenError as error:
            raise _unauthorized(f"invalid token ({error})") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise _unauthorized("the token has no 'sub' claim")
        return subject


def _checked_user_id(user: str) -> str:
    if len(user) > _MAX_USER_ID_LENGTH:
        raise _unauthorized("user id too long")
    return user


def _unauthorized(reason: str) -> ApiError:
    return ApiError(401, "unauthorized", f"Authentication failed: {reason}.")
