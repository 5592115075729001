"""Renders the configuration reference and the example config file from the pydantic models.

The models' `Field(description=...)` are the only source of truth: `docs/config-reference.md` and
`config/orchestrator.example.yaml` are generated from them, and a test fails when either committed
file differs from what this module renders. After changing a field, run:

    python -m orchestrator.configdoc          # rewrite both files
    python -m orchestrator.configdoc --check  # exit 1 if either is stale (what CI does)
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import types
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import annotated_types
import yaml
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from config.settings import OrchestratorSettings

__all__ = ["EXAMPLE_PATH", "REFERENCE_PATH", "Leaf", "leaves", "main", "render_example", "render_reference"]

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_PATH = ROOT / "docs" / "config-reference.md"
EXAMPLE_PATH = ROOT / "config" / "orchestrator.example.yaml"
ENV_PREFIX = "ORCHESTRATOR_"
_WRAP = 96  # comment width in the YAML file; keeps lines under ruff's 120 when quoted in docs


@dataclass(frozen=True)
class Leaf:
    """One setting: its dotted path, its type in words, its default and what it is for."""

    path: tuple[str, ...]
    type_name: str
    default: Any
    description: str
    constraints: str
    secret: bool

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + "__".join(part.upper() for part in self.path)


def _section_model(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        names = [_type_name(arg) for arg in typing.get_args(annotation) if arg is not type(None)]
        optional = type(None) in typing.get_args(annotation)
        return " or ".join(names) + (" or null" if optional else "")
    if origin is list:
        (item,) = typing.get_args(annotation)
        return f"list of {_type_name(item)}"
    if origin is dict:
        key, value = typing.get_args(annotation)
        return f"map of {_type_name(key)} to {_type_name(value)}"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "one of " + ", ".join(f"`{member.value}`" for member in annotation)
    if annotation is SecretStr:
        return "secret string"
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "path"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(annotation, str(annotation))


def _constraints(info: FieldInfo) -> str:
    words = []
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "min length", "max_length": "max length"}
    for meta in info.metadata:
        for attr, symbol in symbols.items():
            value = getattr(meta, attr, None)
            if value is not None and isinstance(meta, annotated_types.BaseMetadata):
                words.append(f"{symbol} {value}")
        pattern = getattr(meta, "pattern", None)
        if pattern:
            words.append(f"matches `{pattern}`")
    return ", ".join(words)


def _plain(value: Any) -> Any:
    """A default as YAML/JSON would show it."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, SecretStr):
        return None
    if isinstance(value, BaseModel):
        return {k: _plain(v) for k, v in value}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


def leaves(model: type[BaseModel] = OrchestratorSettings, prefix: tuple[str, ...] = ()) -> list[Leaf]:
    """Every setting of the model tree, depth first, in declaration order."""
    out: list[Leaf] = []
    for name, info in model.model_fields.items():
        section = _section_model(info.annotation)
        if section is not None:
            out.extend(leaves(section, (*prefix, name)))
            continue
        out.append(
            Leaf(
                path=(*prefix, name),
                type_name=_type_name(info.annotation),
                default=_plain(info.get_default(call_default_factory=True)),
                description=info.description or "",
                constraints=_constraints(info),
                secret=_is_secret(info.annotation),
            )
        )
    return out


_Section = tuple[tuple[str, ...], type[BaseModel], str | None]


def _sections(model: type[BaseModel] = OrchestratorSettings, prefix: tuple[str, ...] = ()) -> list[_Section]:
    """(path, model, description) for the root and every nested section, depth first."""
    out: list[_Section] = [(prefix, model, None)] if not prefix else []
    for name, info in model.model_fields.items():
        section = _section_model(info.annotation)
        if section is not None:
            out.append(((*prefix, name), section, info.description))
            out.extend(_sections(section, (*prefix, name)))
    return out


def _md_value(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return f"`{text}`"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_reference() -> str:
    """docs/config-reference.md."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m orchestrator.configdoc` from config/settings.py. Do not edit by hand. -->",
        "",
        "Settings come from, later wins: the defaults below, a YAML file (given to the command, e.g.",
        "`--config FILE`, or named by `$ORCHESTRATOR_CONFIG`; see `config/orchestrator.example.yaml`),",
        "the standard variables of the",
        "services (`DATABASE_URL`, `SUPABASE_URL`, `SUPABASE_SERVICE_ROLE_KEY`, `RUNPOD_API_KEY`,",
        "`RUNPOD_API_BASE_URL`, `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`,",
        "`OTEL_SERVICE_NAME`), then `ORCHESTRATOR_*` variables (`__` between levels, e.g.",
        "`ORCHESTRATOR_SCALING__MAX_WORKERS=8`). An unknown key is an error. Secrets belong in the",
        "environment or a secret store, never in the file; `orchestrator config check` shows them as `***`.",
        "",
    ]
    all_leaves = leaves()
    for path, model, description in _sections():
        title = ".".join(path) if path else "top level"
        lines.append(f"## `{title}`" if path else "## Top level")
        lines.append("")
        doc = description or ""
        model_doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
        summary = " ".join(part for part in (doc, model_doc if model_doc != doc else "") if part)
        if summary:
            lines += [summary, ""]
        lines += [
            "| Key | Type | Default | Allowed | Environment variable | Description |",
            "|---|---|---|---|---|---|",
        ]
        for leaf in all_leaves:
            if leaf.path[:-1] != path:
                continue
            default = "unset" if leaf.default is None and leaf.secret else _md_value(leaf.default)
            description = leaf.description + (" Secret." if leaf.secret else "")
            lines.append(
                f"| `{leaf.path[-1]}` | {_md_cell(leaf.type_name)} | {_md_cell(default)} | "
                f"{_md_cell(leaf.constraints)} | `{leaf.env_var}` | {_md_cell(description)} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}" for line in textwrap.wrap(text, _WRAP - len(indent))]


def _yaml_value(value: Any, indent: str) -> list[str]:
    """`key: value` continuation lines: scalars inline, non-empty lists and maps as blocks."""
    if isinstance(value, list | dict) and value:
        dumped = yaml.safe_dump(value, default_flow_style=False, sort_keys=False, allow_unicode=True).rstrip()
        return ["", *[f"{indent}  {line}" for line in dumped.splitlines()]]
    dumped = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000).strip()
    dumped = dumped.removesuffix("...").strip()
    return [f" {dumped}"]


def _render_model(model: type[BaseModel], path: tuple[str, ...], indent: str) -> list[str]:
    lines: list[str] = []
    for name, info in model.model_fields.items():
        section = _section_model(info.annotation)
        if lines:
            lines.append("")
        if section is not None:
            title = info.description or ""
            model_doc = (section.__doc__ or "").strip().splitlines()[0] if section.__doc__ else ""
            lines += _comment(" ".join(p for p in (title, model_doc) if p), indent)
            lines.append(f"{indent}{name}:")
            lines += _render_model(section, (*path, name), indent + "  ")
            continue
        leaf = next(leaf for leaf in leaves(model, path) if leaf.path == (*path, name))
        text = leaf.description
        if leaf.constraints:
            text += f" Allowed: {leaf.constraints}."
        text += f" Env: {leaf.env_var}."
        if leaf.secret:
            text += " SECRET: set it in the environment or a secret store, never in this file."
        lines += _comment(text, indent)
        value_lines = _yaml_value(leaf.default, indent)
        lines.append(f"{indent}{name}:{value_lines[0]}".rstrip())
        lines += value_lines[1:]
    return lines


def render_example() -> str:
    """config/orchestrator.example.yaml: every setting at its default, each with its description."""
    header = [
        "# Example orchestrator configuration: every setting, at its default, with what it does.",
        "# Generated by `python -m orchestrator.configdoc` from config/settings.py. Do not edit by hand:",
        "# copy it (e.g. to orchestrator.yaml), keep only what you change, and check it with",
        "#   orchestrator config check orchestrator.yaml",
        "# Later wins: defaults, this file, standard variables (DATABASE_URL, RUNPOD_API_KEY, OTEL_*),",
        "# then ORCHESTRATOR_* variables. Secrets come from the environment, never from this file.",
        "",
    ]
    return "\n".join(header + _render_model(OrchestratorSettings, (), "")) + "\n"


def _targets() -> dict[Path, str]:
    return {REFERENCE_PATH: render_reference(), EXAMPLE_PATH: render_example()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.configdoc", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file is stale; write nothing")
    args = parser.parse_args(argv)
    stale = []
    for path, text in _targets().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if args.check and stale:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is stale: run `python -m orchestrator.configdoc`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
