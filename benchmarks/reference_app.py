"""The reference service as a deployable module, configured from the environment.

``uvicorn benchmarks.reference_app:app`` serves it; ``handler`` is its Lambda entry point.
``REFERENCE_MODEL_PATH`` names the joblib file, ``REFERENCE_DATABASE_URL`` (optional) the
audit database, ``API_BASE_PATH`` the API Gateway stage prefix that Mangum strips.
"""

from __future__ import annotations

import os

from mangum import Mangum

from benchmarks.reference import create_reference_app, load_reference, reference_engine

model = load_reference(os.environ["REFERENCE_MODEL_PATH"])
engine = reference_engine(os.environ.get("REFERENCE_DATABASE_URL"))
app = create_reference_app(model, engine)
handler = Mangum(app, lifespan="off", api_gateway_base_path=os.environ.get("API_BASE_PATH", "/"))
