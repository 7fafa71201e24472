"""mplus: direct RLHF (reward model + PPO from the base model), with DPO and SFT baselines.

Heavy libraries (torch, transformers, lightning) are imported by the submodules that need them,
never here.
"""

__version__ = "0.1.0"
