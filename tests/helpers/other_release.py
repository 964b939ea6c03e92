"""``python tests/helpers/other_release.py VERSION ARGS...``: ``pyrocluster ARGS`` as a release that
speaks worker-protocol VERSION would run it (what a cluster meets in the middle of an upgrade)."""

from __future__ import annotations

import sys

from pyrocluster.nameserver import registry

if __name__ == "__main__":
    registry.PROTOCOL_VERSION = int(sys.argv.pop(1))
    from pyrocluster.cli import main

    main()
