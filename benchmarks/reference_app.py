"""The reference service as a deployable module, configured from the environment.

``uvicorn benchmarks.reference_app:app`` serves it; ``handler`` is its Lambda entry point.
``REFERENCE_MODEL_PATH`` names the joblib file, ``REFERENCE_DATABASE_URL`` (optional) the
audit database, ``API_BASE_PATH`` the API Gateway stage prefix that Mangum strips.

Deployed the usual way in AWS, it downloads the joblib file from S3 with boto3
(``REFERENCE_MODEL_URI=s3://bucket/key``) and reads the database password from Secrets
Manager (``REFERENCE_DATABASE_SECRET_ARN`` with ``REFERENCE_DATABASE_HOST``,
``REFERENCE_DATABASE_PORT`` and ``REFERENCE_DATABASE_NAME``) at import.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from urllib.parse import quote

from mangum import Mangum

from benchmarks.reference import create_reference_app, load_reference, reference_engine


def _model_path() -> str:
    uri = os.environ.get("REFERENCE_MODEL_URI")
    if not uri:
        return os.environ["REFERENCE_MODEL_PATH"]
    import boto3

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    target = Path(tempfile.gettempdir()) / "reference-model.joblib"
    boto3.client("s3").download_file(bucket, key, str(target))
    return str(target)


def _database_url() -> str | None:
    secret_arn = os.environ.get("REFERENCE_DATABASE_SECRET_ARN")
    if not secret_arn:
        return os.environ.get("REFERENCE_DATABASE_URL")
    import boto3

    secret = json.loads(boto3.client("secretsmanager")
                        .get_secret_value(SecretId=secret_arn)["SecretString"])
    user, password = quote(secret["username"], safe=""), quote(secret["password"], safe="")
    host = os.environ["REFERENCE_DATABASE_HOST"]
    port = os.environ.get("REFERENCE_DATABASE_PORT", "5432")
    return (f"postgresql+pg8000://{user}:{password}@{host}:{port}/"
            f"{os.environ['REFERENCE_DATABASE_NAME']}")


model = load_reference(_model_path())
engine = reference_engine(_database_url())
app = create_reference_app(model, engine)
handler = Mangum(app, lifespan="off", api_gateway_base_path=os.environ.get("API_BASE_PATH", "/"))
