"""Markdown building blocks of the model cards: values, tables, front matter, config block."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

from mplus.export.files import _is_machine_path


def _plain(x):
    """A config node (dataclass, OmegaConf node, mapping) as plain dicts and lists."""
    if x is None:
        return None
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return dataclasses.asdict(x)
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(x, DictConfig | ListConfig):
            return OmegaConf.to_container(x, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    return x


def _portable(v):
    """Values as a card shows them: an absolute local path becomes its last part."""
    if _is_machine_path(v):
        return f"<local>/{Path(v).name}"
    if isinstance(v, list | tuple):
        return [_portable(x) for x in v]
    if isinstance(v, dict):
        return {k: _portable(x) for k, x in v.items()}
    return v


def _fmt(v) -> str:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, str):
        return repr(v) if v != v.strip() or "\n" in v else v
    return json.dumps(_portable(v)) if isinstance(v, list | dict) else str(v)


def _cell(v) -> str:
    return _fmt(v).replace("|", "\\|")


def _flatten(d: dict, prefix: str = "", skip: tuple = ()) -> dict:
    flat = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if key in skip:
            continue
        if isinstance(v, dict) and v:
            flat.update(_flatten(v, key + ".", skip))
        else:
            flat[key] = _portable(v)
    return flat


def _table(rows: dict, head: tuple[str, str] = ("setting", "value")) -> str:
    lines = [f"| {head[0]} | {head[1]} |", "|---|---|"]
    lines += [f"| `{k}` | {_cell(v)} |" for k, v in rows.items()]
    return "\n".join(lines)


def _front_matter(tags: list[str], hub: str | None, datasets: list[str], pipeline: str) -> str:
    lines = ["---", "library_name: transformers", f"pipeline_tag: {pipeline}"]
    if hub:
        lines.append(f"base_model: {hub}")
    if datasets:
        lines += ["datasets:", *(f"- {d}" for d in datasets)]
    lines += ["tags:", *(f"- {t}" for t in tags), "---", ""]
    return "\n".join(lines)


def _yaml_block(algo: dict) -> str:
    return "```json\n" + json.dumps(_portable(algo), indent=2, sort_keys=True) + "\n```"
