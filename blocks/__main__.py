"""Register modelferry's block types with the Prefect server: `python -m blocks`.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m blocks      # or: make blocks

Runs `prefect block register -m MODULE` for every module in `BLOCK_MODULES`, so the UI's
"Add block" page offers them; saving blocks of these types registers them too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from blocks import BLOCK_MODULES


def main() -> int:
    """Register each module's block types; stop at the first that fails."""
    prefect = Path(sys.executable).with_name("prefect")
    # `blocks` is a folder of the project, not an installed package: let prefect import it.
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    for module in BLOCK_MODULES:
        done = subprocess.run(
            [str(prefect), "block", "register", "-m", module], env=env, check=False
        )
        if done.returncode != 0:
            print(f"registering the block types of {module} failed", file=sys.stderr)
            return done.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
