"""cas-server: serve the mirror over HTTP, print its nginx configuration, manage tokens."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from casconsole.cli.common import add_version_argument, entry_point
from casconsole.layout import PYPI_DIR, channel_name_problem
from casconsole.serve.condarc import Condarc, is_loopback
from casconsole.serve.nginx import nginx_config
from casconsole.serve.supervisor import ServerOptions, private_channel_problems, serve
from casconsole.serve.tokens import add_token, read_tokens, revoke_tokens
from casconsole.settings import Settings, SettingsError, load_settings, parse_text_value

EPILOG = """\
examples:
  cas-server                          serve mirror_dir on 127.0.0.1:8080
  cas-server --host 0.0.0.0           serve on every interface
  cas-server --tls-cert cert.pem --tls-key key.pem
                                      serve HTTPS
  cas-server token add internal-pkgs  create a token; clients use
                                      http://HOST:8080/t/<token>/internal-pkgs
  cas-server token add internal-pkgs --upload
                                      a token that may also upload packages
                                      (cas-upload FILE --channel internal-pkgs ...)
  cas-server --nginx-config > /etc/nginx/cas.conf
  cas-server --condarc > condarc      the .condarc for the mirror's users
                                      (public_url, client_channels, ...)
  cas-server --pip-conf > pip.conf    the pip.conf for its PyPI side (/pypi/simple/)
"""


def _common(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("--config", metavar="FILE", default=default, help="settings file")
    parser.add_argument(
        "--root",
        metavar="DIR",
        default=default,
        help="the mirror folder, or s3://bucket/prefix (default: mirror_dir)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cas-server",
        description="Serve every channel folder of the mirror over HTTP.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # `token add C --upload` is not an abbreviation of --upload-timeout
    )
    _common(parser, None)
    parser.add_argument("--host", help="address to listen on (default: server_host)")
    parser.add_argument("--port", type=int, help="port to listen on (default: server_port)")
    parser.add_argument(
        "--workers", type=int, default=0, metavar="N", help="worker processes (default: one per CPU)"
    )
    parser.add_argument(
        "--access-log",
        default="-",
        metavar="FILE",
        help="append the access log to FILE; '-' standard output (default), 'off' none",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="on SIGTERM, time given to responses in flight (default: 10)",
    )
    parser.add_argument(
        "--gzip-cache",
        type=Path,
        metavar="DIR",
        help="where compressed copies of *.json are kept (default: <mirror>/.cas/cache/gzip; "
        "a temporary folder when that cannot be written)",
    )
    parser.add_argument(
        "--client-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="drop a client that accepts no data, or an idle connection, after this; "
        "a request must arrive within half of it (default: 60)",
    )
    parser.add_argument(
        "--upload-max-size",
        metavar="SIZE",
        help="the largest package taken in an upload: bytes, or 4G, 500M (default: upload_max_size, 4G)",
    )
    parser.add_argument(
        "--upload-timeout",
        metavar="SECONDS",
        help="drop an upload that sends nothing for this long, however long it takes in all "
        "(default: upload_timeout, 120)",
    )
    parser.add_argument(
        "--tls-cert", metavar="FILE", type=Path, help="serve HTTPS with this certificate (PEM, chain first)"
    )
    parser.add_argument("--tls-key", metavar="FILE", type=Path, help="the certificate's private key (PEM)")
    parser.add_argument(
        "--nginx-config",
        action="store_true",
        help="print an nginx configuration serving the same tree, and exit",
    )
    parser.add_argument(
        "--condarc",
        action="store_true",
        help="print the .condarc the mirror's users need (settings public_url and client_*), and exit",
    )
    parser.add_argument(
        "--pip-conf",
        action="store_true",
        help="print the pip.conf for the mirror's PyPI side (/pypi/simple/), and exit",
    )
    parser.add_argument(
        "--auth-backend",
        default=None,
        metavar="HOST:PORT",
        help="with --nginx-config: the cas-server nginx asks about tokens "
        "(default: 127.0.0.1 and the port after --port)",
    )
    add_version_argument(parser)
    sub = parser.add_subparsers(dest="command", title="commands", metavar="token")
    token = sub.add_parser("token", help="manage tokens of private channels")
    tsub = token.add_subparsers(dest="action", metavar="add|list|revoke", required=True)
    add = tsub.add_parser("add", help="create a token for CHANNEL and print it (shown once)")
    add.add_argument("channel", metavar="CHANNEL")
    add.add_argument(
        "--upload",
        action="store_true",
        help="the token may also upload packages into CHANNEL (PUT, cas-upload); indexed at once",
    )
    lst = tsub.add_parser("list", help="list tokens (ids, never the tokens)")
    lst.add_argument("channel", metavar="CHANNEL", nargs="?")
    rev = tsub.add_parser("revoke", help="revoke tokens of CHANNEL by id, or all of them")
    rev.add_argument("channel", metavar="CHANNEL")
    rev.add_argument("ids", metavar="ID", nargs="*", help="token ids from `token list`")
    rev.add_argument("--all", action="store_true", help="revoke every token of CHANNEL")
    for p in (token, add, lst, rev):
        _common(p, argparse.SUPPRESS)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    cli = {}
    if args.root is not None:
        cli["mirror_dir"] = (args.root, "--root")
    if getattr(args, "host", None) is not None:
        cli["server_host"] = (args.host, "--host")
    if getattr(args, "port", None) is not None:
        cli["server_port"] = (args.port, "--port")
    for key in ("upload_max_size", "upload_timeout"):
        if getattr(args, key, None) is not None:
            cli[key] = (parse_text_value(key, getattr(args, key)), f"--{key.replace('_', '-')}")
    return load_settings(args.config, cli=cli)


def _fail(message: str, status: int) -> int:
    print(f"cas-server: {message}", file=sys.stderr)
    return status


def _token(args: argparse.Namespace, settings: Settings) -> int:
    if settings.in_bucket:  # the token object in the bucket, changed conditionally
        from casconsole.storage import open_storage

        mirror = open_storage(settings)
    else:
        mirror = Path(settings.mirror_dir)
    private = set(settings.private_channels)
    if args.action == "add":
        if isinstance(mirror, Path) and not mirror.is_dir():
            return _fail(f"mirror folder {mirror} does not exist", 2)
        problem = channel_name_problem(args.channel)
        if problem:
            return _fail(f"token add: {problem}", 2)
        if args.upload and args.channel == settings.channel_name:
            return _fail(
                f"token add --upload: {args.channel} is the mirrored channel (channel_name), written by "
                "cas-sync from upstream; upload into a channel of your own, e.g. internal-pkgs",
                2,
            )
        token, record = add_token(mirror, args.channel, upload=args.upload)
        print(token)
        print(
            f"token {record.id} for {args.channel}: clients use "
            f"http://HOST:{settings.server_port}/t/{token}/{args.channel}",
            file=sys.stderr,
        )
        opens_pypi = args.channel == PYPI_DIR and bool(settings.pypi.private_projects)
        if opens_pypi:
            print(
                f"cas-server: note: the token opens the private PyPI projects "
                f"({', '.join(settings.pypi.private_projects)}): pip uses "
                f"http://HOST:{settings.server_port}/t/<token>/pypi/simple/",
                file=sys.stderr,
            )
        if args.upload:
            print(
                f"it may upload: cas-upload FILE... --channel {args.channel} "
                f"--server http://HOST:{settings.server_port} --token <token>",
                file=sys.stderr,
            )
        elif args.channel not in private and not opens_pypi:
            print(
                f"cas-server: note: {args.channel} is not in private_channels, so it is public; "
                "the token is only needed once it is listed there",
                file=sys.stderr,
            )
        return 0
    if args.action == "list":
        records = [r for r in read_tokens(mirror) if args.channel in (None, r.channel)]
        if not records:
            print("no tokens", file=sys.stderr)
            return 0
        width = max(len("CHANNEL"), *(len(r.channel) for r in records))
        print(f"{'ID':8}  {'CHANNEL':{width}}  {'RIGHTS':12}  CREATED")
        for r in records:
            print(f"{r.id:8}  {r.channel:{width}}  {r.rights:12}  {r.created}")
        return 0
    # revoke
    if bool(args.ids) == bool(args.all):
        return _fail(f"give token ids (see `cas-server token list {args.channel}`) or --all, not both", 2)
    gone = revoke_tokens(mirror, args.channel, None if args.all else args.ids)
    if not gone:
        print(f"no tokens for {args.channel}", file=sys.stderr)
    for r in gone:
        print(f"revoked {r.id} ({r.channel})")
    return 0


def _print_condarc(settings: Settings) -> int:
    """The clients' .condarc on stdout. On a terminal its secrets (a token in a channel URL, a
    proxy password) are hidden, as in every view; redirected to a file or a pipe, it is whole."""
    condarc = Condarc.from_settings(settings)
    whole = condarc.text()
    on_terminal = sys.stdout.isatty()
    sys.stdout.write(condarc.text(hide_secrets=True) if on_terminal else whole)
    sys.stdout.flush()
    if on_terminal and condarc.text(hide_secrets=True) != whole:
        print(
            "cas-server: note: secrets hidden on a terminal; redirect to a file for the whole text "
            "(cas-server --condarc > condarc)",
            file=sys.stderr,
        )
    if settings.public_url is None and is_loopback(condarc.base_url):
        print(
            f"cas-server: note: public_url is not set, so clients are sent to {condarc.base_url}, "
            "which only this machine reaches; set public_url (e.g. https://conda.example.org)",
            file=sys.stderr,
        )
    return 0


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
    except SettingsError as exc:
        return _fail(str(exc), 2)
    try:
        if args.command == "token":
            return _token(args, settings)
        if args.workers < 0:
            return _fail("--workers: expected a number >= 0", 2)
        if args.grace < 0:
            return _fail("--grace: expected a number of seconds >= 0", 2)
        if args.pip_conf:
            from casconsole.serve.pipconf import pip_conf

            sys.stdout.write(pip_conf(settings, hide_secrets=sys.stdout.isatty()))
            return 0
        if args.condarc:
            if args.nginx_config:
                return _fail("--condarc and --nginx-config: one at a time", 2)
            return _print_condarc(settings)
        if not args.client_timeout > 0:
            return _fail("--client-timeout: expected a number of seconds > 0", 2)
        if (args.tls_cert is None) != (args.tls_key is None):
            return _fail("--tls-cert and --tls-key go together", 2)
        problems, notes = (
            ([], [])
            if settings.in_bucket
            else private_channel_problems(Path(settings.mirror_dir), settings.private_channels)
        )
        if problems:
            return _fail("; ".join(problems), 2)
        for note in notes:
            print(f"cas-server: warning: {note}", file=sys.stderr)
        if args.nginx_config:
            backend = args.auth_backend or f"127.0.0.1:{settings.server_port + 1}"
            host, _, port = backend.rpartition(":")
            if not host or not port.isdigit():
                return _fail(f"--auth-backend: expected HOST:PORT, got {backend!r}", 2)
            if settings.in_bucket:
                from casconsole.serve.nginx import nginx_bucket_config
                from casconsole.storage.s3 import config_of

                print(
                    nginx_bucket_config(config_of(settings), settings, backend, args.tls_cert, args.tls_key),
                    end="",
                )
                return 0
            print(
                nginx_config(
                    settings.mirror_dir,
                    settings.server_host,
                    settings.server_port,
                    settings.private_channels,
                    backend,
                    channel=settings.channel_name,
                    tls_cert=args.tls_cert,
                    tls_key=args.tls_key,
                    upload_max_size=settings.upload_max_size,
                    upload_timeout=settings.upload_timeout,
                ),
                end="",
            )
            return 0
        if args.auth_backend is not None:
            return _fail("--auth-backend goes with --nginx-config", 2)
        bucket = None
        if settings.in_bucket:
            from casconsole.storage.s3 import config_of

            bucket = config_of(settings)
        options = ServerOptions(
            root=settings.mirror_dir if bucket is not None else Path(settings.mirror_dir),
            host=settings.server_host,
            port=settings.server_port,
            private_channels=list(settings.private_channels),
            channel=settings.channel_name,
            pypi_private=list(settings.pypi.private_projects),
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            workers=args.workers,
            access_log=None if args.access_log == "off" else args.access_log,
            grace=args.grace,
            gzip_cache=args.gzip_cache,
            client_timeout=args.client_timeout,
            upload_max_size=settings.upload_max_size,
            upload_timeout=settings.upload_timeout,
            bucket=bucket,
            s3_serve=settings.s3_serve,
            redirect_seconds=settings.s3_redirect_seconds,
        )

        def ready(url: str, workers: int) -> None:
            private = ", ".join(options.private_channels) or "none"
            print(
                f"cas-server: serving {options.root} at {url} "
                f"({workers} worker{'s' if workers > 1 else ''}; private channels: {private})",
                file=sys.stderr,
                flush=True,
            )

        status = serve(options, ready)
        print("cas-server: stopped", file=sys.stderr)
        return status
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
