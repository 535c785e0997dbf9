"""Where bundle files are read from: a local directory or an S3 prefix.

An S3 location ``s3://bucket/prefix`` is resolved in one of two ways. When
``prefix/manifest.json`` exists it is a bundle. Otherwise ``prefix/ACTIVE.json`` names
the active version, whose files are under ``prefix/versions/<version>/``. Publishing
uploads a whole version first and rewrites ``ACTIVE.json`` last. A single S3 PUT is
atomic, so readers see either the old bundle or the new one, never a half-uploaded one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from fraudscore.exceptions import BundleError

logger = logging.getLogger(__name__)

ACTIVE_POINTER_NAME = "ACTIVE.json"
VERSIONS_FOLDER = "versions"

# A missing key fails GetObject with NoSuchKey but HeadObject with a bare 404, because a
# HEAD response has no body to carry an error code.
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class BundleStore(Protocol):
    """Read access to the files of one bundle."""

    location: str

    def read(self, name: str) -> bytes:
        """Return the content of the bundle file ``name``; raise BundleError if missing."""
        ...


class DirectoryStore:
    """Bundle files in a local directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.location = str(self.path)

    def read(self, name: str) -> bytes:
        target = self.path / name
        if target.parent != self.path:
            raise BundleError(f"{self.location}: file name {name!r} leaves the bundle directory")
        try:
            return target.read_bytes()
        except FileNotFoundError as exc:
            raise BundleError(f"{target}: bundle file not found") from exc
        except OSError as exc:
            raise BundleError(f"{target}: cannot read bundle file: {exc}") from exc


class S3Store:
    """Bundle files under one S3 prefix."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self.location = f"s3://{bucket}/{self.prefix}"

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def read(self, name: str) -> bytes:
        content = self.read_if_exists(name)
        if content is None:
            raise BundleError(f"{self.location}/{name}: bundle file not found")
        return content

    def read_if_exists(self, name: str) -> bytes | None:
        """Return the content of ``name``, or None when S3 has no such key."""
        if "/" in name or name in {"", ".", ".."}:
            raise BundleError(f"{self.location}: file name {name!r} leaves the bundle prefix")
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(name))
            return bytes(response["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NOT_FOUND_CODES:
                return None
            raise BundleError(f"{self.location}/{name}: cannot read from S3: {exc}") from exc
        except BotoCoreError as exc:
            raise BundleError(f"{self.location}/{name}: cannot read from S3: {exc}") from exc

    def exists(self, name: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(name))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NOT_FOUND_CODES:
                return False
            raise BundleError(f"{self.location}/{name}: cannot read from S3: {exc}") from exc
        except BotoCoreError as exc:
            raise BundleError(f"{self.location}/{name}: cannot read from S3: {exc}") from exc
        return True


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/prefix`` into bucket and prefix (without slashes at the ends)."""
    if not uri.startswith("s3://"):
        raise BundleError(f"not an S3 URI: {uri!r}")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise BundleError(f"S3 URI has no bucket: {uri!r}")
    return bucket, prefix.strip("/")


def open_store(uri: str, *, s3_client: Any = None) -> BundleStore:
    """Return the store for ``uri``: a directory path or ``s3://bucket/prefix``.

    For S3, an ``ACTIVE.json`` pointer under the prefix is followed to the version it
    names when the prefix contains no ``manifest.json`` itself.
    """
    if not uri.startswith("s3://"):
        return DirectoryStore(uri)

    bucket, prefix = parse_s3_uri(uri)
    if s3_client is None:
        from fraudscore.aws_clients import create_client

        s3_client = create_client("s3")
    store = S3Store(bucket, prefix, s3_client)
    if store.exists("manifest.json"):
        return store
    return S3Store(bucket, _active_version_prefix(store), s3_client)


def _active_version_prefix(store: S3Store) -> str:
    raw = store.read_if_exists(ACTIVE_POINTER_NAME)
    if raw is None:
        raise BundleError(
            f"{store.location}: no bundle found, because the prefix has neither manifest.json "
            f"nor {ACTIVE_POINTER_NAME}. Publish a bundle there with `python -m training "
            f"publish`, or set MODEL_URI to a {VERSIONS_FOLDER}/<version> prefix"
        )
    try:
        pointer = json.loads(raw)
        version = pointer["version"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(
            f"{store.location}/{ACTIVE_POINTER_NAME}: invalid pointer, expected a JSON object "
            f'like {{"version": "<bundle version>"}}: {type(exc).__name__}: {exc}'
        ) from exc
    if not isinstance(version, str) or not version or "/" in version or version in {".", ".."}:
        raise BundleError(f"{store.location}/{ACTIVE_POINTER_NAME}: invalid version {version!r}")
    logger.info("active bundle version under %s is %s", store.location, version)
    return store.key(f"{VERSIONS_FOLDER}/{version}")
