"""``python -m autoretrain.selector``: the read-only ranking server (see
:mod:`autoretrain.webhook.serving.selector`)."""

from __future__ import annotations

import sys

from autoretrain.webhook.serving.selector import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
