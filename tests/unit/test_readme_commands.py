"""Every README command marked runnable runs and prints what the README says, so the README cannot rot.

Convention: a fenced block whose info string is `bash runnable` is run, as one bash script with
`set -euo pipefail` and stderr merged into stdout, from the repository root with the virtualenv's
`bin` first on PATH. Blocks tagged plain `bash` are shown to readers and never run (e.g.
`make demo`, `ray up`). Mark only commands that are quick, need no network and no cloud account,
and leave nothing behind.

The `# ` comment lines right after a command are its expected output (stdout and stderr together,
line for line); a command without them must only succeed. A failing command's exit code is shown
the same way:

    ```bash runnable
    orchestrator config check config/orchestrator.example.yaml > /dev/null
    ORCHESTRATOR_SCALING__MAX_WORKERS=-1 orchestrator config check || echo "exit code $?"
    # scaling.max_workers: '-1' is below the minimum 0
    # exit code 2
    ```
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
_FENCE = re.compile(r"^(?P<indent>[ ]{0,3})(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)$")


@dataclass(frozen=True)
class Step:
    """One command of a runnable block and the output the README promises (None: not checked)."""

    command: str
    expected: tuple[str, ...] | None


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


def steps(script: str) -> list[Step]:
    """The block's commands (a `\\`-continued line joins the next), each with the `# ` lines after it."""
    found: list[Step] = []
    command: list[str] = []
    expected: list[str] = []

    def close() -> None:
        if command:
            found.append(Step("\n".join(command), tuple(expected) if expected else None))
        command.clear()
        expected.clear()

    continued = False
    for line in script.splitlines():
        if continued:
            command.append(line)
        elif line.startswith("#"):
            if command:  # comment lines before the first command are prose
                expected.append(line.removeprefix("#").removeprefix(" "))
        elif line.strip():
            close()
            command.append(line)
        continued = line.endswith("\\")
    close()
    return found


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


def test_comment_lines_after_a_command_are_its_expected_output() -> None:
    script = "\n".join(
        [
            "# prose before any command",
            "quiet > /dev/null",
            'loud || echo "exit code $?"',
            "# the message",
            "#",
            "# exit code 2",
            "long \\",
            "  --flag",
            "# done",
        ]
    )
    assert steps(script) == [
        Step("quiet > /dev/null", None),
        Step('loud || echo "exit code $?"', ("the message", "", "exit code 2")),
        Step("long \\\n  --flag", ("done",)),
    ]


def run_block(script: str, cwd: Path, env: dict[str, str]) -> tuple[int, list[Step], list[list[str]]]:
    """Run the block as one script; returns its exit code, its steps and each step's output lines."""
    marker = f"@@readme-step-{uuid.uuid4().hex}@@"
    block_steps = steps(script)
    parts = ["set -euo pipefail", "exec 2>&1"]
    for step in block_steps:
        parts += [f"printf '\\n%s\\n' '{marker}'", step.command]
    result = subprocess.run(
        ["bash", "-c", "\n".join(parts)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        check=False,
    )
    chunks = result.stdout.split(f"\n{marker}\n")[1:]
    outputs = [chunk.rstrip("\n").splitlines() for chunk in chunks]
    return result.returncode, block_steps, outputs


def check_block(script: str, cwd: Path, env: dict[str, str]) -> list[str]:
    """Every way the block's real run differs from the README: a failed command or a different output."""
    code, block_steps, outputs = run_block(script, cwd, env)
    problems = []
    if code != 0:
        failed = block_steps[len(outputs) - 1].command if outputs else "(before the first command)"
        tail = "\n".join(outputs[-1][-20:]) if outputs else ""
        problems.append(f"exit {code} at: {failed}\n{tail}")
    for step, output in zip(block_steps, outputs, strict=False):
        if step.expected is not None and [line.rstrip() for line in output] != [e.rstrip() for e in step.expected]:
            said = "\n".join(f"# {line}" for line in step.expected)
            shown = "\n".join(f"# {line}" for line in output)
            problems.append(f"{step.command}\nREADME says:\n{said}\nit prints:\n{shown}")
    return problems


def test_the_check_fails_on_a_wrong_output_or_exit_code(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "")}
    assert check_block('echo hi\n# hi\n(exit 2) || echo "exit code $?"\n# exit code 2', tmp_path, env) == []
    (wrong_output,) = check_block("echo hi\n# hello", tmp_path, env)
    assert "README says:\n# hello\nit prints:\n# hi" in wrong_output
    (wrong_code,) = check_block('(exit 3) || echo "exit code $?"\n# exit code 2', tmp_path, env)
    assert "exit code 3" in wrong_code
    (failed,) = check_block("true\nfalse\necho never", tmp_path, env)
    assert failed.startswith("exit 1 at: false")
    (stderr_counts,) = check_block("echo oops >&2\n# fine", tmp_path, env)
    assert "# oops" in stderr_counts


def _readme_blocks() -> list[tuple[int, str]]:
    if not README.exists():
        return []
    return runnable_blocks(README.read_text())


def test_readme_has_runnable_commands() -> None:
    assert README.exists(), "README.md is missing"
    blocks = _readme_blocks()
    assert blocks, "README.md has no ```bash runnable block: mark the commands a newcomer can try safely"
    assert any(step.expected for _, script in blocks for step in steps(script)), "no README command shows its output"


@pytest.mark.parametrize(("line", "script"), _readme_blocks(), ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_readme_command_runs(line: int, script: str, tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # No real service is reached from CI: drop credentials and settings a developer may have exported.
    for key in ("DATABASE_URL", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "RUNPOD_API_KEY", "ORCHESTRATOR_CONFIG"):
        env.pop(key, None)
    for key in [k for k in env if k.startswith("ORCHESTRATOR_")]:
        env.pop(key)
    env["HOME"] = str(tmp_path)
    problems = check_block(script, ROOT, env)
    assert not problems, f"README.md block at line {line} does not do what it says:\n\n" + "\n\n".join(problems)
