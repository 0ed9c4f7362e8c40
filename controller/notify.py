"""Optional outgoing notifications: Slack-compatible JSON (``{"text": ...}``) per decision."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import httpx

log = logging.getLogger(__name__)


@dataclass
class Notifier:
    client: httpx.Client
    url: str | None
    attempts: int = 3
    backoff: float = 1.0

    def send(self, text: str) -> bool:
        """Post ``text``; retried a few times, never raises (a notification never blocks)."""
        if not self.url:
            return False
        for attempt in range(1, self.attempts + 1):
            try:
                response = self.client.post(self.url, json={"text": text}, timeout=10)
                if response.status_code < 300:
                    return True
                log.warning("notification answered %s: %s", response.status_code,
                            response.text[:200])
            except httpx.HTTPError as exc:
                log.warning("notification failed (attempt %d): %s", attempt, exc)
            if attempt < self.attempts:
                time.sleep(self.backoff * attempt)
        return False


@dataclass
class ServingReloader:
    """``POST {serving_url}/admin/reload``; failure is logged, never blocks (serving polls)."""

    client: httpx.Client
    url: str | None
    token: str | None
    attempts: int = 3
    backoff: float = 1.0

    def reload(self) -> bool:
        if not self.url:
            return False
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        for attempt in range(1, self.attempts + 1):
            try:
                response = self.client.post(f"{self.url.rstrip('/')}/admin/reload",
                                            headers=headers, timeout=30)
                if response.status_code < 300:
                    return True
                log.warning("serving reload answered %s", response.status_code)
            except httpx.HTTPError as exc:
                log.warning("serving reload failed (attempt %d): %s", attempt, exc)
            if attempt < self.attempts:
                time.sleep(self.backoff * attempt)
        return False
