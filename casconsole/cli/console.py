"""casconsole: the administration console (`--demo` runs it against a generated upstream)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import platformdirs

from casconsole.cli.common import add_settings_arguments, add_version_argument, cli_layer
from casconsole.errors import EXIT_USAGE
from casconsole.layout import BucketURL


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="casconsole", description=__doc__)
    parser.add_argument(
        "--demo", action="store_true", help="generate a demo upstream channel, serve it on 127.0.0.1, use it"
    )
    add_version_argument(parser)
    add_settings_arguments(parser)
    return parser


def demo_environment(base: Path | None = None) -> tuple[dict[str, str], object]:
    """Start the demo upstream; the environment that makes the console use it, and the server.

    The demo's settings file stands in for the user file, so the console's saves go there and
    the administrator's own `~/.cas-mirror` is never touched.
    """
    from casconsole.demo import DemoServer, generate_channel, write_demo_config

    base = base or platformdirs.user_cache_path("casconsole") / "demo"
    print("casconsole: preparing the demo upstream channel...", file=sys.stderr, flush=True)
    server = DemoServer(generate_channel(base / "upstream")).start()
    config = write_demo_config(base / "cas-mirror.yaml", server.url, base / "mirror")
    env = {**os.environ, "CAS_MIRROR_USER_CONFIG": str(config)}
    return env, server


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = None
    server = None
    if args.demo:
        env, server = demo_environment()
    try:
        # the console opens even when the settings have problems: the Config screen shows them
        # where they are, and the rest works on the values that are good
        from casconsole.settings import read_layers

        cli = cli_layer(args)
        layers = read_layers(args.config, env=env, cli=cli)
        mirror = [layer.values["mirror_dir"] for layer in layers if "mirror_dir" in layer.values][-1]
        if isinstance(mirror, BucketURL):  # its screens look at folders: said before it draws
            print(
                f"casconsole: error: mirror_dir is a bucket ({mirror}): the console works on a mirror "
                "folder; with a bucket use cas-sync, cas-index and cas-server (docs/scale-out.md)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        from casconsole.console.app import run_app  # Textual is loaded only for the console itself

        return run_app(config_file=args.config, env=env, cli=cli, layers=layers)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
