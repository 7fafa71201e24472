"""Entry point: ``python -m mplus.analyze <multirun dir or run dirs> [--sort METRIC] ...``."""

from mplus.analyze import main

if __name__ == "__main__":
    raise SystemExit(main())
