"""The errors a user makes, as one exception family.

``python -m mplus.train`` reports a :class:`UserError` as one line naming the key, path or step
and exits with status 2; any other exception is a bug and keeps its traceback. The message is the
whole report, so it names what to change (``"<key>=<value>: <what is wrong>"``).

Light on purpose (standard library only): every entry point imports it before torch.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "DataError", "ModelFilesError", "UserError"]


class UserError(Exception):
    """A mistake in what the user gave (a config value, a path, a file); the message names it."""


class CheckpointError(UserError):
    """``ckpt_path`` is missing, unreadable, unsafe to load, or from another stage."""


class DataError(UserError, ValueError):
    """The data gives nothing to train on, or a data file cannot be read (file and line named).

    Also a ``ValueError``: code that caught the data errors as ``ValueError`` keeps working.
    """


class ModelFilesError(UserError, OSError):
    """A model folder or hub id that cannot be loaded as configured (e.g. only pickled weights).

    Also an ``OSError``, what ``from_pretrained`` raises for a model it cannot find.
    """
