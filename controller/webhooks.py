"""MLflow registry webhooks (MLflow 3.3+, experimental, SQL backends): what a delivery is and
how it is checked.

MLflow posts ``{"entity", "action", "timestamp", "data"}`` with the headers
``X-MLflow-Delivery-Id`` (a UUID), ``X-MLflow-Timestamp`` (Unix seconds) and, when the webhook
has a secret, ``X-MLflow-Signature: v1,<base64 HMAC-SHA256>`` over
``<delivery id>.<timestamp>.<body>`` (mlflow/webhooks/delivery.py). ``verify`` checks all of
it: the signature in constant time, the timestamp within a tolerance of the controller's
clock, and the delivery id not seen before (a repeat is answered, never acted on twice).
The events driftloop reads are ``model_version_alias.created`` (``data``: name, alias,
version) and ``model_version_alias.deleted`` (name, alias); every other event is ignored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

SIGNATURE_HEADER: Final = "X-MLflow-Signature"
TIMESTAMP_HEADER: Final = "X-MLflow-Timestamp"
DELIVERY_HEADER: Final = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION: Final = "v1"
ALIAS_ENTITY: Final = "model_version_alias"
MAX_DELIVERY_ID: Final = 200


class WebhookRefused(Exception):
    """The delivery is not MLflow's (401: signature, stale) or not readable (400)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """``v1,<base64>``: the signature MLflow sends for this delivery."""
    content = delivery_id.encode() + b"." + timestamp.encode() + b"." + body
    digest = hmac.new(secret.encode(), content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


@dataclass(frozen=True)
class AliasEvent:
    """One alias move MLflow reported: ``version`` None when the alias was deleted."""

    delivery_id: str
    model: str
    alias: str
    version: int | None
    at: datetime                      # the delivery's timestamp (when MLflow sent it)


class SeenDeliveries:
    """Delivery ids seen within the tolerance window, bounded; thread-safe."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, delivery_id: str, at: float, keep: float) -> bool:
        """True the first time ``delivery_id`` is seen (and it is remembered until ``at +
        keep``); False for a repeat."""
        with self._lock:
            while self._seen and (next(iter(self._seen.values())) < at
                                  or len(self._seen) >= self.limit):
                self._seen.popitem(last=False)
            if delivery_id in self._seen:
                return False
            self._seen[delivery_id] = at + keep
            return True


def _header(headers: dict[str, str], name: str) -> str:
    value = headers.get(name.lower(), "")
    if not value:
        raise WebhookRefused(400, f"no {name} header: not an MLflow webhook delivery")
    return value


def verify(headers: dict[str, str], body: bytes, *, secret: str | None, now: datetime,
           tolerance: float) -> tuple[str, datetime]:
    """The delivery's id and time once its signature and timestamp are right (headers
    lower-cased). Refused: 401 for no secret configured, a missing or wrong signature or a
    stale timestamp; 400 for a missing or malformed header."""
    if not secret:
        raise WebhookRefused(401, "DRIFTLOOP_CONTROLLER_MLFLOW_WEBHOOK_SECRET is not set: "
                             "every delivery is refused")
    delivery_id = _header(headers, DELIVERY_HEADER)
    stamp = _header(headers, TIMESTAMP_HEADER)
    if len(delivery_id) > MAX_DELIVERY_ID or not stamp.isdigit() or len(stamp) > 12:
        raise WebhookRefused(400, f"malformed {DELIVERY_HEADER} or {TIMESTAMP_HEADER}")
    sent = headers.get(SIGNATURE_HEADER.lower(), "")
    expected = signature(secret, delivery_id, stamp, body)
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise WebhookRefused(401, f"missing or wrong {SIGNATURE_HEADER}")
    at = datetime.fromtimestamp(int(stamp), UTC)
    if abs((now - at).total_seconds()) > tolerance:
        raise WebhookRefused(401, f"stale delivery: {TIMESTAMP_HEADER} {stamp} is more than "
                             f"{tolerance:g} s from now")
    return delivery_id, at


def parse(body: bytes, delivery_id: str, at: datetime) -> AliasEvent | None:
    """The alias move a verified body reports; None for an event driftloop does not read.
    A body that is not MLflow's shape is a 400."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookRefused(400, "the body is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
        raise WebhookRefused(400, "the body has no data object")
    if data.get("entity") != ALIAS_ENTITY or data.get("action") not in ("created", "deleted"):
        return None
    d = data["data"]
    name, alias, version = d.get("name"), d.get("alias"), d.get("version")
    if not isinstance(name, str) or not name or not isinstance(alias, str) or not alias:
        raise WebhookRefused(400, "data.name and data.alias must be non-empty strings")
    if data["action"] == "deleted":
        return AliasEvent(delivery_id, name, alias, None, at)
    if not isinstance(version, str | int) or isinstance(version, bool) \
            or not str(version).isdigit() or len(str(version)) > 10:
        raise WebhookRefused(400, "data.version must be a version number")
    return AliasEvent(delivery_id, name, alias, int(version), at)
