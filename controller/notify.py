"""Optional outgoing notifications: Slack-compatible JSON (``{"text": ...}``) per decision."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

log = logging.getLogger(__name__)


def post_with_retries(post: Callable[[], httpx.Response], *, what: str, attempts: int,
                      backoff: float, show_body: bool = False) -> bool:
    """Call ``post`` up to ``attempts`` times, sleeping ``backoff * attempt`` seconds between
    tries, until it answers below 300; True then, False when every try failed. HTTP errors
    and refusals are logged, never raised: what calls this must not block on it."""
    for attempt in range(1, attempts + 1):
        try:
            response = post()
            if response.status_code < 300:
                return True
            if show_body:
                log.warning("%s answered %s: %s", what, response.status_code, response.text[:200])
            else:
                log.warning("%s answered %s", what, response.status_code)
        except httpx.HTTPError as exc:
            log.warning("%s failed (attempt %d): %s", what, attempt, exc)
        if attempt < attempts:
            time.sleep(backoff * attempt)
    return False


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
        url = self.url
        return post_with_retries(lambda: self.client.post(url, json={"text": text}, timeout=10),
                                 what="notification", attempts=self.attempts,
                                 backoff=self.backoff, show_body=True)


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
        url = f"{self.url.rstrip('/')}/admin/reload"
        return post_with_retries(lambda: self.client.post(url, headers=headers, timeout=30),
                                 what="serving reload", attempts=self.attempts,
                                 backoff=self.backoff)
