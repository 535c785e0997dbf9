"""AWS service clients from one botocore session per process.

``boto3.client(...)`` returns the same botocore client class, but importing boto3 also
imports s3transfer (about 35 ms of a cold start, measured in the benchmarks), which the
service never uses. One shared session also loads the endpoint and credential data once
for all clients. A botocore session is not thread-safe, so client creation is locked;
the clients themselves are.
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_session: Any = None


def create_client(service_name: str, **kwargs: Any) -> Any:
    """Create a botocore client for ``service_name`` (``"s3"``, ``"lambda"``, ...).

    Keyword arguments are those of ``botocore.session.Session.create_client``
    (``endpoint_url``, ``config``, ``region_name``).
    """
    global _session
    with _lock:
        if _session is None:
            import botocore.session

            _session = botocore.session.get_session()
        return _session.create_client(service_name, **kwargs)
