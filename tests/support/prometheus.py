"""Reading Ray's Prometheus endpoint in tests."""

from __future__ import annotations

import re
import urllib.request


def scrape(port: int) -> str:
    """The metrics page of a local Ray, or "" while it is not up yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def series(text: str, name: str) -> list[dict[str, str]]:
    """Label sets of every sample of `name` (Ray prefixes `ray_`; counters may get `_total`)."""
    found = []
    for line in text.splitlines():
        match = re.match(rf"^ray_{name}(?:_total|_bucket|_count|_sum)?\{{(.*)\}} ", line)
        if match:
            found.append(dict(re.findall(r'(\w+)="([^"]*)"', match.group(1))))
    return found
