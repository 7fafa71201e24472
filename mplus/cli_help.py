"""``python -m mplus.train --help``: the groups a user picks options from, each option, and where
every key is documented. Hydra's own ``--help`` also lists the typed schemas (``*_schema``) and the
evaluation suites' group, which are not options of a training run; it stays at ``--hydra-help``.
Reads ``conf/`` only (no torch, no Hydra composition), so it answers at once."""

from __future__ import annotations

from pathlib import Path

import yaml

from mplus.config_paths import config_dir

GROUPS = ("model", "data", "algo", "hardware", "logger", "experiment")

NOTES = """\
Keys (key=value): every key with its default and meaning in docs/config.md; the config a command
composes: add --cfg job. The ones people look for first:
  evaluation.reward_model=<exported reward_model/>  score with this reward model (every algorithm;
                                                    RL trains against it instead of training one)
  model=mistral-7b model.name_or_path=<folder>      a local base model (config.json + safetensors)
  hydra.run.dir=<run dir> ckpt_path=last            resume a stopped run where it stopped
  seed=<int>  progress_bar=false  logger.log_every=<steps>
Sweeps: -m --config-dir sweeps --config-name <sweep> (sweeps/README.md). Memory plan before a run:
python -m mplus.plan <the same overrides>. Hydra's own help: --hydra-help."""


def _defaults(conf: Path) -> dict[str, str]:
    entries = yaml.safe_load((conf / "train.yaml").read_text()).get("defaults", [])
    return {k: v for e in entries if isinstance(e, dict) for k, v in e.items()}


def render() -> str:
    """The help text: usage, then ``group: options`` (the default marked ``*``), then the keys."""
    conf = Path(config_dir())
    default = _defaults(conf)
    lines = ["python -m mplus.train [group=option ...] [key=value ...]", "", "Groups:"]
    for group in GROUPS:
        opts = sorted(
            p.stem for p in (conf / group).glob("*.yaml") if not p.stem.endswith("_schema")
        )
        shown = [f"{o}*" if o == default.get(group) else o for o in opts]
        lines.append(f"  {group}: {', '.join(shown)}")
    lines += ["  (* the default; experiment: none by default)", "", NOTES]
    return "\n".join(lines)


def main() -> None:
    print(render())
