"""The nginx configuration that serves the same tree as cas-server, for sites that want nginx.

nginx cannot check the hashed tokens of private channels itself (it has no SHA-256 of a
variable, and the plain tokens are never stored), so private channels go through
`auth_request`: nginx asks a cas-server on loopback whether `/t/<token>/<channel>/` may be
served (cas-server answers `/.cas/auth` with 204 or 403), and answers 404 otherwise. Tokens
added or revoked with `cas-server token` apply to nginx at once, with no reload.

Uploads (`PUT`) are passed whole to that cas-server, streamed as they arrive (no buffering in
nginx), with nginx's own limits set to the settings' `upload_max_size` and `upload_timeout`:
cas-server checks the token's rights, writes, checks and indexes, as when it serves alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

from casconsole.errors import ServerError
from casconsole.layout import KNOWN_SUBDIRS
from casconsole.serve.health import HEALTH_PATH
from casconsole.serve.site import AUTH_PATH, CONTENT_TYPES

_SAFE_PATH = re.compile(r"^/[^\"'\\$;{}\s#]*$")
_SAFE_CHANNEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class NginxConfigError(ServerError):
    """Something nginx's syntax cannot express safely; `str()` is the message."""


def _listen(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def nginx_config(
    root: Path,
    host: str,
    port: int,
    private_channels: Sequence[str] = (),
    auth_backend: str = "127.0.0.1:8081",
    *,
    access_log: str = "/var/log/nginx/access.log",
    error_log: str | None = None,
    pid: str | None = None,
    gzip_static: bool = False,
    worker_processes: str = "auto",
    channel: str | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    upload_max_size: int = 4 << 30,
    upload_timeout: float = 120.0,
) -> str:
    """A complete nginx.conf (usable with `nginx -c`); its `server` block can be lifted out.

    `channel` (the mirrored channel) is served at the root URL too, `/<subdir>/...`; with
    `tls_cert` and `tls_key` the server block listens with TLS.
    """
    root_s = str(Path(root).absolute())
    paths = [("mirror folder", root_s), ("access log", access_log)]
    if tls_cert is not None and tls_key is not None:
        paths.append(("TLS certificate", str(Path(tls_cert).absolute())))
        paths.append(("TLS key", str(Path(tls_key).absolute())))
    for what, value in paths:
        if not _SAFE_PATH.match(value):
            raise NginxConfigError(f"{what} {value!r}: quotes, spaces, $ or ; cannot go in nginx config")
    for ch in [*private_channels, *([channel] if channel else [])]:
        if not _SAFE_CHANNEL.match(ch):
            raise NginxConfigError(f"channel name {ch!r} cannot go in an nginx location")
    root_s = root_s.rstrip("/") or "/"
    timeout = max(1, math.ceil(upload_timeout))

    out = [
        "# nginx configuration serving the casconsole mirror, as `cas-server` does.\n",
        "# Use it whole (nginx -c FILE) or copy the server block into an http block.\n",
        "#\n# Uploads (PUT /t/<token>/<channel>/<subdir>/<file>) are passed to the cas-server on\n"
        f"# {auth_backend}, which checks the token, stores, checks and indexes the package: keep\n"
        "# it running with the same mirror and settings (if it is down, uploads get 502).\n",
    ]
    if private_channels:
        out.append(
            "#\n# Private channels are served only under /t/<token>/. nginx cannot check the\n"
            "# hashed tokens, so it asks cas-server (auth_request): keep one running on\n"
            f"#     cas-server --host {auth_backend.rpartition(':')[0]}"
            f" --port {auth_backend.rpartition(':')[2]}\n"
            "# with the same mirror and settings. If it is down, private requests fail (500),\n"
            "# never open. The root pages answer 404 here: nginx's listing cannot hide\n"
            "# private channel names.\n"
        )
    out.append(f"\nworker_processes {worker_processes};\n")
    if error_log:
        out.append(f"error_log {error_log};\n")
    if pid:
        out.append(f"pid {pid};\n")
    out.append(_http_head(access_log, gzip_static) + "    server {\n")
    subdirs = "|".join(sorted(KNOWN_SUBDIRS))
    mirrored_private = channel is not None and channel in private_channels
    if tls_cert is not None and tls_key is not None:
        out.append(
            f"        listen {_listen(host, port)} ssl;\n"
            f'        ssl_certificate "{Path(tls_cert).absolute()}";\n'
            f'        ssl_certificate_key "{Path(tls_key).absolute()}";\n'
            "        ssl_protocols TLSv1.2 TLSv1.3;\n"
        )
    else:
        out.append(f"        listen {_listen(host, port)};\n")
    out.append(
        f'        root "{root_s}";\n'
        "        autoindex on;\n"
        "        autoindex_exact_size on;\n"
        "        # the error log would name the request, token and all, for every missing file\n"
        "        log_not_found off;\n"
        "        # GET and HEAD, and PUT for uploads, as cas-server (return logs no error line, deny\n"
        "        # would); every PUT goes to the cas-server on loopback, which judges it\n"
        "        if ($request_method !~ ^(GET|HEAD|PUT)$) {\n            return 405;\n        }\n"
        "        if ($request_method = PUT) {\n            rewrite ^ /.cas-upload last;\n        }\n"
        "        # a page's links must not carry a /t/<token>/ URL to another site\n"
        "        add_header Referrer-Policy no-referrer always;\n"
        "        # no symlink below the mirror folder is followed: nginx cannot tell whether one\n"
        "        # leads into a private channel (cas-server follows those that stay public)\n"
        f'        disable_symlinks on from="{root_s}";\n\n'
        "        # uploads: streamed to cas-server as they arrive, the same URL, nginx's limits set to\n"
        "        # upload_max_size and upload_timeout (a stall, not the whole upload); the answer\n"
        "        # comes once the package is indexed\n"
        "        location = /.cas-upload {\n"
        "            internal;\n"
        f"            client_max_body_size {upload_max_size};\n"
        f"            client_body_timeout {timeout}s;\n"
        "            proxy_request_buffering off;\n"
        "            proxy_http_version 1.1;\n"
        '            proxy_set_header Connection "";\n'
        "            proxy_set_header Host $host;\n"
        f"            proxy_send_timeout {timeout}s;\n"
        f"            proxy_read_timeout {max(timeout, 300)}s;\n"
        f"            proxy_pass http://{auth_backend}$request_uri;\n"
        "        }\n"
        "        # the health URL is answered by the cas-server on loopback (as for tokens)\n"
        f"        location = {HEALTH_PATH} {{\n"
        f"            proxy_pass http://{auth_backend}{HEALTH_PATH};\n"
        "        }\n"
        "        # nothing under a dot-name: .cas/tokens.json, writers' temporary files\n"
        "        location ~ /\\. {\n            return 404;\n        }\n"
    )
    if private_channels:
        names = "|".join(re.escape(c) for c in private_channels)
        out.append("        location = / {\n            return 404;\n        }\n")
        out.append("        location ~ ^/+t/+[^/]+/*$ {\n            return 404;\n        }\n")
        for ch in private_channels:
            out.append(
                f"        location ^~ /{ch}/ {{\n            return 404;\n        }}\n"
                f"        location = /{ch} {{\n            return 404;\n        }}\n"
            )
        out.append(
            f"        location ~ ^/t/[^/]+/({names})(/.*)?$ {{\n"
            "            auth_request /.cas-auth;\n"
            "            error_page 401 403 =404 @cas_not_found;\n"
            f'            alias "{root_s}/$1$2";\n'
            "        }\n"
        )
        if mirrored_private:
            out.append(
                "        # the root URL is the mirrored channel, private too\n"
                f"        location ~ ^/({subdirs})(/.*)?$ {{\n            return 404;\n        }}\n"
                f"        location ~ ^/t/[^/]+/({subdirs})(/.*)?$ {{\n"
                "            auth_request /.cas-auth;\n"
                "            error_page 401 403 =404 @cas_not_found;\n"
                f'            alias "{root_s}/{channel}/$1$2";\n'
                "        }\n"
            )
        out.append(
            "        location = /.cas-auth {\n"
            "            internal;\n"
            f"            proxy_pass http://{auth_backend}{AUTH_PATH};\n"
            "            proxy_pass_request_body off;\n"
            '            proxy_set_header Content-Length "";\n'
            "            proxy_set_header X-Original-URI $request_uri;\n"
            "        }\n"
            "        location @cas_not_found {\n            return 404;\n        }\n"
        )
    if channel is not None and not mirrored_private:
        out.append(
            f"        # the root URL is the mirrored channel, {channel}\n"
            f"        location ~ ^(/t/[^/]+)?/({subdirs})(/.*)?$ {{\n"
            f'            alias "{root_s}/{channel}/$2$3";\n'
            "        }\n"
        )
    out.append(
        "        # public channels answer under /t/<any token>/ too\n"
        "        location ~ ^/t/[^/]+(/.*)?$ {\n"
        f'            alias "{root_s}$1";\n'
        "        }\n"
        "    }\n"
        "}\n"
    )
    return "".join(out)


def _types() -> str:
    types: dict[str, list[str]] = {}
    for ext, ctype in CONTENT_TYPES.items():
        types.setdefault(ctype.split(";")[0], []).append(ext[1:])
    return "".join(f"        {ctype} {' '.join(exts)};\n" for ctype, exts in types.items())


def _http_head(access_log: str, gzip_static: bool) -> str:
    """events, and the http block up to its server: types, compression, the token-free log."""
    type_lines = _types()
    out: list[str] = []
    out.append(
        "events {\n    worker_connections 4096;\n}\n\n"
        "http {\n"
        "    types {\n" + type_lines + "    }\n"
        "    default_type application/octet-stream;\n"
        "    sendfile on;\n"
        "    tcp_nopush on;\n"
        "    keepalive_timeout 60s;\n"
    )
    if gzip_static:
        out.append(
            "    # repodata.json.gz beside each repodata.json, kept fresh by whoever writes it\n"
            "    gzip_static on;\n"
        )
    else:
        out.append(
            "    # JSON compressed per request (cas-server compresses once per file version;\n"
            "    # gzip_static would need .gz files that the mirror does not keep). Clients\n"
            "    # prefer repodata.json.zst, a plain file here.\n"
            "    gzip on;\n"
            "    gzip_types application/json;\n"
            "    gzip_min_length 1024;\n"
        )
    out.append(
        "    gzip_vary on;\n"
        "    # the access log never shows a token: /t/<token>/ is hidden, the Referer is left out,\n"
        "    # and runs of 32+ token characters (a token sent elsewhere) are shown as <token>\n"
        "    map $request_uri $cas_uri {\n"
        '        "~*^(?<cas_p>(/|%2f)+(t|%74)(/|%2f)+)[^/]*(?<cas_r>.*)$" "${cas_p}<token>${cas_r}";\n'
        "        default $request_uri;\n"
        "    }\n"
        "    map $cas_uri $cas_log_uri {\n"
        '        "~^(?<cas_a>.*?)[A-Za-z0-9_-]{32,}(?<cas_b>.*)$" "${cas_a}<token>${cas_b}";\n'
        "        default $cas_uri;\n"
        "    }\n"
        "    map $http_user_agent $cas_log_agent {\n"
        '        "~^(?<cas_c>.*?)[A-Za-z0-9_-]{32,}(?<cas_d>.*)$" "${cas_c}<token>${cas_d}";\n'
        "        default $http_user_agent;\n"
        "    }\n"
        "    log_format cas '$remote_addr - - [$time_local] \"$request_method $cas_log_uri "
        "$server_protocol\" '\n"
        '                   \'$status $body_bytes_sent "-" "$cas_log_agent" $request_time\';\n'
        f"    access_log {access_log} cas;\n\n"
    )
    return "".join(out)


_BACKEND = "            proxy_pass http://cas_backend;\n"


def nginx_bucket_config(
    bucket,
    settings,
    auth_backend: str,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    *,
    access_log: str = "/var/log/nginx/access.log",
    error_log: str | None = None,
    pid: str | None = None,
    cache_dir: str = "/var/cache/nginx/cas",
    worker_processes: str = "auto",
) -> str:
    """nginx in front of a bucket mirror (`bucket`: its storage.s3.S3Config): public channels
    are proxied from the bucket (read without credentials: the bucket must let anyone read
    them, docs/scale-out.md) and kept in nginx's cache; private channels, folder pages and the
    health URL go to the cas-server on `auth_backend`, which holds the credentials and checks
    the tokens. Package files get a year of max-age (immutable), index files a minute and
    their ETag, so caches revalidate them."""
    import urllib.parse

    channel = settings.channel_name
    private = list(settings.private_channels)
    endpoint = bucket.endpoint or f"https://s3.{bucket.region}.amazonaws.com"
    parts = urllib.parse.urlsplit(endpoint)
    host = parts.netloc if bucket.path_style else f"{bucket.bucket}.{parts.netloc}"
    server = host if parts.port else f"{host}:{443 if parts.scheme == 'https' else 80}"
    origin = f"{parts.scheme}://cas_bucket"
    base = f"/{bucket.bucket}" if bucket.path_style else ""
    base += f"/{bucket.prefix}" if bucket.prefix else ""
    for what, value in (
        ("access log", access_log),
        ("cache folder", cache_dir),
        ("bucket path", base or "/"),
    ):
        if not _SAFE_PATH.match(value):
            raise NginxConfigError(f"{what} {value!r}: quotes, spaces, $ or ; cannot go in nginx config")
    if not re.match(r"^[A-Za-z0-9.:\[\]-]+$", host):
        raise NginxConfigError(f"endpoint host {host!r} cannot go in nginx config")
    for ch in [*private, channel]:
        if not _SAFE_CHANNEL.match(ch):
            raise NginxConfigError(f"channel name {ch!r} cannot go in an nginx location")
    subdirs = "|".join(sorted(KNOWN_SUBDIRS))
    tls_name = ""
    if parts.scheme == "https":  # the bucket's certificate names its host
        tls_name = (
            f"            proxy_ssl_server_name on;\n            proxy_ssl_name {host.rsplit(':', 1)[0]};\n"
        )
    out = [
        "# nginx in front of the casconsole mirror in the bucket "
        f"{bucket.url} ({endpoint}).\n"
        "# Public channels come from the bucket, read without credentials: let anyone read\n"
        "# their prefixes (and nothing else: not .cas/, not a private channel). Private\n"
        "# channels, folder pages and the health URL go to cas-server on loopback, which\n"
        f"# has the credentials: cas-server --host {auth_backend.rpartition(':')[0]}"
        f" --port {auth_backend.rpartition(':')[2]} with the same settings.\n"
        f"\nworker_processes {worker_processes};\n",
    ]
    if error_log:
        out.append(f"error_log {error_log};\n")
    if pid:
        out.append(f"pid {pid};\n")
    out.append(_http_head(access_log, False))
    cache_header = (
        "    # cache headers: package files are never rewritten under their name (a rebuild is a\n"
        "    # new name); index files change with every sync: a minute, then revalidated by ETag\n"
        "    map $uri $cas_cache_control {\n"
        '        "~\\.(conda|tar\\.bz2)$" "public, max-age=31536000, immutable";\n'
        '        "~/(current_)?repodata[^/]*$" "public, max-age=60";\n'
        '        "~/channeldata\\.json$" "public, max-age=60";\n'
        '        default "public, max-age=300";\n'
        "    }\n"
        f"    proxy_cache_path {cache_dir} levels=1:2 keys_zone=cas_bucket:32m max_size=20g inactive=30d\n"
        "                     use_temp_path=off;\n"
        "    upstream cas_backend {\n"
        f"        server {auth_backend};\n"
        "        keepalive 16;\n"
        "    }\n"
        "    upstream cas_bucket {\n"
        f"        server {server};\n"
        "        keepalive 32;\n"
        "    }\n\n"
        "    server {\n"
    )
    out.append(cache_header)
    if tls_cert is not None and tls_key is not None:
        out.append(
            f"        listen {_listen(settings.server_host, settings.server_port)} ssl;\n"
            f'        ssl_certificate "{Path(tls_cert).absolute()}";\n'
            f'        ssl_certificate_key "{Path(tls_key).absolute()}";\n'
            "        ssl_protocols TLSv1.2 TLSv1.3;\n"
        )
    else:
        out.append(f"        listen {_listen(settings.server_host, settings.server_port)};\n")
    out.append(
        "        log_not_found off;\n"
        "        if ($request_method !~ ^(GET|HEAD)$) {\n            return 405;\n        }\n"
        "        add_header Referrer-Policy no-referrer always;\n"
        "        proxy_http_version 1.1;\n"
        '        proxy_set_header Connection "";\n\n'
        "        # nothing under a dot-name: .cas/ (lock, tokens, records), writers' temporaries\n"
        "        location ~ /\\. {\n            return 404;\n        }\n"
        "        # the health URL, folder pages and private channels: cas-server, with credentials\n"
        f"        location = {HEALTH_PATH} {{\n{_BACKEND}        }}\n"
        f"        location ~ /$ {{\n{_BACKEND}        }}\n"
    )
    if private:
        names = "|".join(re.escape(c) for c in private)
        out.append(f"        location ~ ^/t/[^/]+/({names})(/.*)?$ {{\n{_BACKEND}        }}\n")
        for ch in private:
            out.append(f"        location ^~ /{ch}/ {{\n            return 404;\n        }}\n")
        if channel in private:
            out.append(
                f"        location ~ ^/t/[^/]+/({subdirs})(/.*)?$ {{\n{_BACKEND}        }}\n"
                f"        location ~ ^/({subdirs})(/.*)?$ {{\n            return 404;\n        }}\n"
            )
    bucket_location = (
        "            proxy_pass {origin}{base}{path};\n"
        f"            proxy_set_header Host {host};\n" + tls_name + "            proxy_cache cas_bucket;\n"
        "            proxy_cache_key $uri;\n"
        "            proxy_cache_valid 200 60s;\n"
        "            proxy_cache_revalidate on;  # If-None-Match to the bucket: a 304 keeps the copy\n"
        "            proxy_cache_lock on;\n"
        "            proxy_hide_header Cache-Control;\n"
        "            proxy_hide_header Set-Cookie;\n"
        "            proxy_ignore_headers Set-Cookie Cache-Control Expires;\n"
        "            proxy_hide_header x-amz-request-id;\n"
        "            proxy_hide_header x-amz-id-2;\n"
        "            add_header Cache-Control $cas_cache_control always;\n"
        "            add_header Referrer-Policy no-referrer always;\n"
        "            proxy_intercept_errors on;  # a missing key is 403 or 404 from a bucket\n"
        "            error_page 403 404 =404 @cas_missing;\n"
    )
    if channel not in private:
        out.append(
            f"        # the root URL is the mirrored channel, {channel}\n"
            f"        location ~ ^(/t/[^/]+)?/(?<cas_rest>({subdirs})(/.*)?)$ {{\n"
            + bucket_location.format(origin=origin, base=base, path=f"/{channel}/$cas_rest")
            + "        }\n"
        )
    out.append(
        "        # public channels answer under /t/<any token>/ too\n"
        "        location ~ ^/t/[^/]+(?<cas_path>/.*)$ {\n"
        + bucket_location.format(origin=origin, base=base, path="$cas_path")
        + "        }\n"
        "        location / {\n"
        + bucket_location.format(origin=origin, base=base, path="$uri")
        + "        }\n"
        "        location @cas_missing {\n            return 404;\n        }\n"
        "    }\n}\n"
    )
    return "".join(out)
