"""Container healthcheck: exit 0 when the URL given as the only argument answers 2xx.

The slim base image has no curl, and an inline ``python -c "..."`` healthcheck breaks
under podman's Docker API, which splits an exec-form check's arguments on spaces. A file
taking one space-free argument works the same under Docker, podman and Compose. Standard
library only, so it runs in every image (service, page) without the project installed.

A bare path (``/readyz``) is asked of the service's own port, ``BONEFRAC_PORT`` (8000 when
unset), so a container started with another port stays healthy.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 4.0  # under the checks' 5 s timeout, so a hung server reads as unhealthy


def healthy(url: str) -> bool:
    """True when ``url`` answers a 2xx status within the timeout."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def target(argument: str) -> str:
    """The URL to ask: the argument itself, or a bare path on the service's own port."""
    if argument.startswith("/"):
        port = os.environ.get("BONEFRAC_PORT", "").strip() or "8000"
        return f"http://127.0.0.1:{port}{argument}"
    return argument


def main(argv: list[str]) -> int:
    """``python healthcheck.py URL|/PATH``: 0 healthy, 1 not, 2 misused."""
    if len(argv) != 1:
        print("usage: python healthcheck.py URL|/PATH", file=sys.stderr)
        return 2
    return 0 if healthy(target(argv[0])) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
