"""Where the Hydra configs are: ``conf/`` (``train``, ``eval`` and their groups) and ``sweeps/``.

The repository keeps them at its top level beside ``mplus/``; a wheel ships them inside the
package as ``mplus/conf`` and ``mplus/sweeps`` (``pyproject.toml`` maps the folders there). Both
places are looked up here, the package's first, so ``python -m mplus.train``, ``mplus.eval`` and
``mplus.plan`` run from any directory whether mplus is installed from a wheel, installed editable
or run inside a checkout.

``python -m mplus.config_paths [conf|sweeps]`` prints the folder, e.g. for a sweep from a wheel
install: ``python -m mplus.train -m --config-dir $(python -m mplus.config_paths sweeps)
--config-name kl_short``.
"""

from __future__ import annotations

import sys
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
# a file each folder must hold, so an unrelated top-level conf/ in site-packages is not taken
_MARKERS = {"conf": "train.yaml", "sweeps": "kl_short.yaml"}


def _find(name: str) -> Path:
    places = (_PACKAGE / name, _PACKAGE.parent / name)  # wheel install, then checkout/editable
    for d in places:
        if (d / _MARKERS[name]).is_file():
            return d
    raise FileNotFoundError(
        f"mplus configs not found: no {_MARKERS[name]} in {' or '.join(map(str, places))} "
        "(reinstall mplus: pip install <checkout> or pip install -e <checkout>)"
    )


def config_dir() -> str:
    """Absolute path of the ``conf/`` folder (the primary config dir of train, eval and plan)."""
    return str(_find("conf"))


def sweeps_dir() -> str:
    """Absolute path of the ``sweeps/`` folder (for ``--config-dir``)."""
    return str(_find("sweeps"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    which = argv[0] if argv else "conf"
    if which not in _MARKERS or len(argv) > 1:
        print("usage: python -m mplus.config_paths [conf|sweeps]", file=sys.stderr)
        return 2
    print(config_dir() if which == "conf" else sweeps_dir())
    return 0


if __name__ == "__main__":
    sys.exit(main())
