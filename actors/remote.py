"""The one place where the plain actor classes become Ray actors (STYLE.md 7).

The classes in actors/*.py are plain Python and can be unit-tested without Ray; this module adds
the Ray options (names, restarts, concurrency groups) and nothing else.
"""

from __future__ import annotations
