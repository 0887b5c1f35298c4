"""cas-installer: not yet available."""

from __future__ import annotations

import argparse
import sys

from casconsole.cli.common import add_version_argument


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cas-installer", description=__doc__)
    add_version_argument(parser)
    parser.parse_known_args(argv)
    print("cas-installer: not yet available", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
