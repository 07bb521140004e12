"""The reference files made from the code, so that they cannot drift: each node's params file in config/ (from its
ParamTable). `python -m dares_ros.tools.reference` writes them all again; test_reference fails, naming this command,
when one differs from what the code makes."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the source checkout
COMMAND = "python -m dares_ros.tools.reference"


def node_tables() -> dict:
    """{executable: its ParamTable}, in the order the docs list the nodes."""
    from ..depth_node import PARAMETERS as DEPTH
    from ..fusion_node import PARAMETERS as FUSION
    from ..odometry_node import PARAMETERS as ODOMETRY

    return {"dares_depth_node": DEPTH, "dares_odometry_node": ODOMETRY, "dares_fusion_node": FUSION}


def reference_files() -> dict[Path, str]:
    """{path relative to the checkout: the text the code makes}."""
    from ..params import config_name

    return {Path("config") / config_name(name): table.config_yaml(name) for name, table in node_tables().items()}


def main() -> int:
    from dares_core.files import atomic_file

    for path, text in reference_files().items():
        with atomic_file(ROOT / path) as tmp:
            tmp.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
