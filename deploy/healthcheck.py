"""Container health check for the driftloop image (no curl in python:3.11-slim).

Usage: python healthcheck.py [URL]. The URL defaults to $DRIFTLOOP_HEALTHCHECK_URL, then to
the serving app's /healthz on 127.0.0.1:$DRIFTLOOP_SERVING_PORT (8000). Exit 0 on a 2xx answer
within 4 seconds, 1 otherwise (Docker's HEALTHCHECK contract).
"""

import os
import sys
import urllib.request


def main(argv: list[str]) -> int:
    port = os.environ.get("DRIFTLOOP_SERVING_PORT", "8000")
    url = (argv[1] if len(argv) > 1 else None) or os.environ.get(
        "DRIFTLOOP_HEALTHCHECK_URL", f"http://127.0.0.1:{port}/healthz"
    )
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if 200 <= response.status < 300 else 1
    except OSError as exc:
        sys.stderr.write(f"unhealthy: {url}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
