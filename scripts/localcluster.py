#!/usr/bin/env python3
"""kiln's local multi-cluster Kubernetes control plane: the entry point of
scripts/kiln_localcluster (see its __init__ for what it does and the
commands)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from kiln_localcluster.cli import main  # noqa: E402

if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        # The reader went away (e.g. `status | head`): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
