"""Turn expected user-facing failures into one clear line on stderr and exit status 2."""

from __future__ import annotations

import contextlib
import sys


@contextlib.contextmanager
def user_errors():
    from rwkvjax.hub import HubError
    from rwkvjax.params import CheckpointError
    try:
        yield
    except (CheckpointError, HubError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
