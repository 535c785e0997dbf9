"""The small HTML page at ``GET /``: paste a transaction, see the decision.

The page's one script is inline and allowed by its SHA-256 in the Content-Security-Policy,
so no other script can run on the page.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from typing import Any

_SCRIPT = """
const form = document.getElementById("score-form");
const output = document.getElementById("result");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  output.textContent = "Scoring...";
  let body;
  try {
    body = JSON.parse(document.getElementById("transaction").value);
  } catch (error) {
    output.textContent = "Invalid JSON: " + error.message;
    return;
  }
  const response = await fetch("predict", {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) {
    output.textContent = "HTTP " + response.status + "\\n" + JSON.stringify(answer, null, 2);
    return;
  }
  const lines = [
    "decision:           " + (answer.is_fraud ? "FRAUD" : "genuine"),
    "stage used:         " + answer.stage,
    "final probability:  " + answer.fraud_probability.toFixed(6),
    "stage-1 probability: " + answer.stage1_probability.toFixed(6),
    "stage-2 probability: " + (answer.stage2_probability === null
      ? "not escalated" : answer.stage2_probability.toFixed(6)),
    "degraded:           " + answer.degraded + (answer.degraded_reason
      ? " (" + answer.degraded_reason + ")" : ""),
    "manual review:      " + answer.manual_review,
    "model version:      " + answer.model_version,
    "transaction id:     " + answer.transaction_id,
  ];
  output.textContent = lines.join("\\n");
});
"""

SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode()

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; "
    f"script-src 'sha256-{SCRIPT_HASH}'; "
    "style-src 'unsafe-inline'; "
    "connect-src 'self'; "
    "img-src 'self' data:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Fraud scoring</title>
<style>
  body {{ font-family: system-ui, sans-serif; max-width: 58rem; margin: 2rem auto; }}
  textarea {{ width: 100%; height: 22rem; font-family: monospace; }}
  pre {{ background: #f4f4f4; padding: 1rem; min-height: 6rem; }}
  button {{ font-size: 1rem; padding: .4rem 1.2rem; margin: .5rem 0; }}
</style>
</head>
<body>
<h1>Fraud scoring</h1>
<p>Model {version}. Band [{low:.4f}, {high:.4f}) goes to stage 2; decision threshold
{threshold:.4f}. Edit the transaction and score it; the schema is at
<a href="metadata">metadata</a>, the API at <a href="docs">docs</a>.</p>
<form id="score-form">
<textarea id="transaction" spellcheck="false">{example}</textarea>
<button type="submit">Score</button>
</form>
<pre id="result"></pre>
<script>{script}</script>
</body>
</html>
"""


def render_page(
    *, version: str, low: float, high: float, threshold: float, example: dict[str, Any]
) -> str:
    """Return the page, prefilled with ``example`` as a POST /predict body.

    The body has no ``transaction_id``, so the service generates one per request and an
    edited transaction is scored anew instead of being rejected as a reused id.
    """
    body = json.dumps({"features": example}, indent=2)
    return _TEMPLATE.format(
        version=html.escape(version),
        low=low,
        high=high,
        threshold=threshold,
        example=html.escape(body),
        script=_SCRIPT,
    )
