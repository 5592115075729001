"""Every README command marked runnable runs, so the README cannot rot.

Convention: a fenced block whose info string is `bash runnable` is run, as one bash script with
`set -euo pipefail`, from the repository root with the virtualenv's `bin` first on PATH. Blocks
tagged plain `bash` are shown to readers and never run (e.g. `make demo`, `ray up`). Mark only
commands that are quick, need no network and no cloud account, and leave nothing behind.

    ```bash runnable
    orchestrator config check config/orchestrator.example.yaml
    ```
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
_FENCE = re.compile(r"^(?P<indent>[ ]{0,3})(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)$")


def runnable_blocks(markdown: str) -> list[tuple[int, str]]:
    """(line number, script) of every fenced block tagged `bash runnable` (or `sh runnable`)."""
    blocks: list[tuple[int, str]] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, words = match["fence"], match["info"].split()
        start = i + 1
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(match["indent"]) :] if lines[i].startswith(match["indent"]) else lines[i])
            i += 1
        i += 1  # the closing fence
        if len(words) >= 2 and words[0] in ("bash", "sh", "shell", "console") and "runnable" in words[1:]:
            script = "\n".join(line.removeprefix("$ ") for line in body)
            blocks.append((start, script))
    return blocks


def test_parser_finds_only_runnable_blocks() -> None:
    text = "\n".join(
        [
            "# T",
            "```bash",
            "make demo",
            "```",
            "```bash runnable",
            "orchestrator --help",
            "$ orchestrator explain --help",
            "```",
            "````sh runnable",
            "echo '```'",
            "````",
        ]
    )
    assert runnable_blocks(text) == [(5, "orchestrator --help\norchestrator explain --help"), (9, "echo '```'")]


def _readme_blocks() -> list[tuple[int, str]]:
    if not README.exists():
        return []
    return runnable_blocks(README.read_text())


def test_readme_has_runnable_commands() -> None:
    assert README.exists(), "README.md is missing"
    assert _readme_blocks(), "README.md has no ```bash runnable block: mark the commands a newcomer can try safely"


@pytest.mark.parametrize(("line", "script"), _readme_blocks(), ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_readme_command_runs(line: int, script: str, tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # No real service is reached from CI: drop credentials a developer may have exported.
    for key in ("DATABASE_URL", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "RUNPOD_API_KEY"):
        env.pop(key, None)
    env["HOME"] = str(tmp_path)
    result = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        f"README.md block at line {line} failed (exit {result.returncode}):\n{script}\n"
        f"--- stdout ---\n{result.stdout[-2000:]}\n--- stderr ---\n{result.stderr[-2000:]}"
    )
