"""Publishing a bundle to S3 under a new version prefix, then switching ACTIVE.json."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from fraudscore.bundle import MANIFEST_NAME, load_bundle
from fraudscore.exceptions import BundleError
from fraudscore.storage import (
    ACTIVE_POINTER_NAME,
    VERSIONS_FOLDER,
    DirectoryStore,
    S3Store,
    parse_s3_uri,
)

logger = logging.getLogger(__name__)


def publish_bundle(
    bundle_dir: str | Path, destination: str, *, activate: bool = True, s3_client: Any = None
) -> str:
    """Upload ``bundle_dir`` to ``destination`` (``s3://bucket/prefix``); return its S3 URI.

    The local bundle is verified first. Files go to ``prefix/versions/<version>/`` with the
    manifest uploaded last. The uploaded copy is then loaded and verified from S3, and only
    after that is ``prefix/ACTIVE.json`` rewritten. A failure at any step leaves the
    previously active version in place.

    Raises
    ------
    BundleError
        If the local bundle is invalid, an upload fails (naming the S3 key), or the
        uploaded copy does not verify.
    """
    bundle = load_bundle(DirectoryStore(bundle_dir))
    bucket, prefix = parse_s3_uri(destination)
    if s3_client is None:
        import boto3

        s3_client = boto3.client("s3")

    root = S3Store(bucket, prefix, s3_client)
    version_prefix = root.key(f"{VERSIONS_FOLDER}/{bundle.version}")
    names = [*bundle.manifest["files"], MANIFEST_NAME]
    for name in names:
        body = (Path(bundle_dir) / name).read_bytes()
        _upload(s3_client, bucket, f"{version_prefix}/{name}", body)
    uploaded = load_bundle(S3Store(bucket, version_prefix, s3_client))
    logger.info("uploaded and verified bundle %s at s3://%s/%s",
                uploaded.version, bucket, version_prefix)

    if activate:
        pointer = {"version": bundle.version,
                   "manifest_sha256": bundle.manifest["manifest_sha256"]}
        _upload(s3_client, bucket, root.key(ACTIVE_POINTER_NAME),
                json.dumps(pointer).encode("utf-8"))
        logger.info("activated bundle %s under s3://%s/%s", bundle.version, bucket, prefix)
    return f"s3://{bucket}/{version_prefix}"


def _upload(s3_client: Any, bucket: str, key: str, body: bytes) -> None:
    content_type = "application/json" if key.endswith(".json") else "application/octet-stream"
    try:
        s3_client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
    except (ClientError, BotoCoreError) as exc:
        raise BundleError(f"s3://{bucket}/{key}: upload failed: {exc}") from exc
