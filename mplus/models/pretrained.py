"""How mplus calls ``from_pretrained``: dtype names and the safetensors-only policy.

Its own module (torch only, no other mplus import) so that the eval loaders
(:mod:`mplus.eval.common`) share the policy without importing :mod:`mplus.models.builders`, which
imports :mod:`mplus.preflight`, which imports :mod:`mplus.eval.common`: that would be a cycle.
:mod:`mplus.models.builders` re-exports both names.
"""

from __future__ import annotations

import torch

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str):
    return "auto" if name == "auto" else _DTYPES[name]


def from_pretrained_kwargs(
    dtype: str,
    attn_implementation: str,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> dict:
    """``from_pretrained`` arguments for a dtype name and an attention implementation.

    Weights load from safetensors only: a pickled ``pytorch_model.bin`` can run code when it is
    unpickled. ``allow_pickle`` (``model.allow_pickle``) lets a model without safetensors load its
    ``.bin`` weights (transformers then unpickles them with ``torch.load(weights_only=True)``).
    """
    kw = {
        "dtype": torch_dtype(dtype),
        "trust_remote_code": trust_remote_code,
        # None: prefer safetensors, fall back to .bin; True: safetensors or an error
        "use_safetensors": None if allow_pickle else True,
    }
    if attn_implementation != "auto":
        kw["attn_implementation"] = attn_implementation
    return kw
