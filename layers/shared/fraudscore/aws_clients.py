"""AWS service clients from one botocore session per process.

``boto3.client(...)`` returns the same botocore client class, but importing boto3 also
imports s3transfer (about 35 ms of a cold start, measured in the benchmarks), which the
service never uses. One shared session also loads the endpoint and credential data once
for all clients. A botocore session is not thread-safe, so client creation is locked;
the clients themselves are.

The session's data loader returns ``SERVICES`` as the list of available services.
botocore's own loader lists every directory of its data folder (about 420 services,
each with its versions) before it loads the first service model, to tell an unknown
service name from a known one. Measured with ``python -S -s -B`` and botocore from the
build output on the benchmark machine, creating the first (Lambda) client took 69 to 75 ms
with botocore's loader and 43 ms with this one.

The loader also parses the model files into plain dicts. botocore's own file loader
builds an ``OrderedDict`` for every JSON object, which made parsing its 1.2 MB endpoint
file 2.5 times slower (15.5 ms against 6.1 ms on the benchmark machine); dicts keep
insertion order too. A search of botocore 1.44's source found no ``OrderedDict`` type
check and no call of an ``OrderedDict``-only method on loaded data.
"""

from __future__ import annotations

import gzip
import json
import os
import threading
from typing import Any

# Every service the functions call.
SERVICES = frozenset({"lambda", "s3", "secretsmanager", "sqs"})

_lock = threading.Lock()
_session: Any = None


def create_client(service_name: str, **kwargs: Any) -> Any:
    """Create a botocore client for ``service_name`` (``"s3"``, ``"lambda"``, ...).

    Keyword arguments are those of ``botocore.session.Session.create_client``
    (``endpoint_url``, ``config``, ``region_name``).

    Raises
    ------
    ValueError
        If ``service_name`` is not in ``SERVICES``.
    """
    if service_name not in SERVICES:
        raise ValueError(f"no AWS client for {service_name!r}: the service uses only "
                         f"{', '.join(sorted(SERVICES))}; add it to aws_clients.SERVICES")
    global _session
    with _lock:
        if _session is None:
            _session = _new_session()
        return _session.create_client(service_name, **kwargs)


class PlainJSONFileLoader:
    """File loader for botocore's model files (``.json`` or ``.json.gz``), as plain dicts.

    It has the two methods that botocore calls on its file loader (checked against
    botocore 1.44's ``loaders.py``). ``file_path`` is a path without the extension. As in
    botocore, ``.json`` comes before ``.json.gz``, and a missing file gives ``None``.
    """

    EXTENSIONS = ((".json", open), (".json.gz", gzip.open))

    def exists(self, file_path: str) -> bool:
        return any(os.path.isfile(file_path + extension) for extension, _ in self.EXTENSIONS)

    def load_file(self, file_path: str) -> Any:
        for extension, opener in self.EXTENSIONS:
            full_path = file_path + extension
            if not os.path.isfile(full_path):
                continue
            with opener(full_path, "rb") as stream:
                data = json.loads(stream.read().decode("utf-8"))
            if data is not None:
                return data
        return None


def make_data_loader(extra_search_paths: list[str] | None = None) -> Any:
    """Return a botocore data loader that lists ``SERVICES`` and reads plain dicts.

    ``extra_search_paths`` are model folders searched before botocore's own, as
    ``AWS_DATA_PATH`` gives them.
    """
    import botocore.loaders

    class KnownServicesLoader(botocore.loaders.Loader):
        """botocore's data loader with a fixed list of services instead of a folder scan."""

        def list_available_services(self, type_name: str) -> list[str]:
            # A listed service whose model is missing still fails, with DataNotFoundError.
            return sorted(SERVICES)

    return KnownServicesLoader(extra_search_paths=extra_search_paths,
                               file_loader=PlainJSONFileLoader())


def _new_session() -> Any:
    import botocore.session

    session = botocore.session.get_session()
    # AWS_DATA_PATH adds model folders, as botocore's own loader factory reads it.
    data_path = session.get_config_variable("data_path")
    extra_paths = [os.path.expanduser(os.path.expandvars(path))
                   for path in data_path.split(os.pathsep)] if data_path else None
    session.register_component("data_loader", make_data_loader(extra_paths))
    return session
