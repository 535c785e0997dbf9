"""Structured logging and CloudWatch metrics shared by the Lambda handlers.

Powertools' Logger writes one JSON object per line to stdout, under Lambda and under
uvicorn alike; Metrics writes CloudWatch Embedded Metric Format (EMF) records to the same
stream, which CloudWatch turns into metrics without an API call. The service name and
namespace come from ``POWERTOOLS_SERVICE_NAME`` and ``POWERTOOLS_METRICS_NAMESPACE``.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics

SERVICE_NAME = os.environ.get("POWERTOOLS_SERVICE_NAME", "fraud-scoring")
METRICS_NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "FraudScoring")

logger = Logger(service=SERVICE_NAME)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE_NAME)
