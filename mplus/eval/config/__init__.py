"""Typed schema of ``conf/eval.yaml`` and its ``eval`` suite group, registered in Hydra's ConfigStore.

``python -m mplus.eval`` composes ``conf/eval.yaml`` (models, dtype, hardware) and one option of
the ``eval`` group (``general``, ``conversation``, ``toxicity``, ``harmlessness``, ``all``), which
only picks ``eval.suites``: every suite's settings are always there, from these dataclasses, so
``eval=all eval.toxicity.k=5`` and ``eval=toxicity eval.limit=10`` both work. Range checks run in
``__post_init__`` (misspelt keys fail at composition); the files and packages the suites need are
checked by :func:`check_local_paths` before any model loads.

A training run reuses :class:`SuitesConfig` through ``evaluation.suites`` / ``evaluation.suite``
(see :func:`suite_settings`).

Imports only :mod:`mplus.config_common` of mplus: :mod:`mplus.config` imports this module, and
:mod:`mplus.eval.common` (which loads models) re-exports :class:`EvalError` and the path helpers
defined here, so no import goes back.
"""

from __future__ import annotations

from mplus.eval.config.paths import EvalError, check_local, looks_like_path  # noqa: F401
from mplus.eval.config.root import (  # noqa: F401
    EvalRunConfig,
    SuitesConfig,
    check_local_paths,
    register_eval_configs,
    suite_settings,
    suite_values,
    validate_eval,
)
from mplus.eval.config.suites import (  # noqa: F401
    GENERAL_METRICS,
    GENERAL_SHOTS,
    SUITES,
    ClassifierConfig,
    ConversationConfig,
    GeneralConfig,
    HarmlessnessConfig,
    JudgeConfig,
    ToxicityConfig,
    _positive_or_none,
    parse_task_spec,
)
