"""Where a bucket's credentials, region and endpoint come from: the settings, the usual AWS
variables, or the usual AWS files, in that order (as every AWS tool reads them).

- settings `s3_access_key_id` / `s3_secret_access_key` / `s3_session_token` (never shown);
- `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`;
- the profile (`s3_profile`, else `AWS_PROFILE`, else `default`) of the shared credentials
  file (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`), then of the config file
  (`AWS_CONFIG_FILE`, else `~/.aws/config`, where it is `[profile NAME]`).

The region: `s3_region`, `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`, else
us-east-1. The endpoint: `s3_endpoint_url`, `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, the
profile's `endpoint_url`, else AWS itself. The files are INI, read with the standard
library's configparser (strict: a duplicate section or key is an error naming the line).

With no credentials anywhere requests go unsigned (a bucket readable by anyone); instance
metadata is never asked (it would wait for a timeout in an air-gapped network).
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from casconsole.errors import SettingsError

DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class Credentials:
    access_key_id: str | None
    secret_access_key: str | None
    session_token: str | None
    region: str
    endpoint: str | None
    source: str  # where they came from, for messages: "settings", "AWS_ACCESS_KEY_ID", a file

    def __repr__(self) -> str:  # a traceback or a debug print never shows the secret
        return f"Credentials(source={self.source!r}, region={self.region!r}, endpoint={self.endpoint!r})"


def _read_ini(path: Path) -> configparser.ConfigParser | None:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as exc:
        line = getattr(exc, "lineno", None) or (
            exc.errors[0][0] if isinstance(exc, configparser.ParsingError) else None
        )
        why = str(exc).splitlines()[0].rpartition("]: ")[2] if line else str(exc).splitlines()[0]
        where = f"{path}:{line}" if line else str(path)
        raise SettingsError(f"{where}: not an AWS settings file ({why})") from None
    return parser


def _section(parser: configparser.ConfigParser | None, name: str) -> dict[str, str] | None:
    if parser is None or not parser.has_section(name):
        return None
    return {k: v.strip() for k, v in parser.items(name)}


def resolve(settings: Any, env: dict[str, str] | None = None) -> Credentials:
    """The credentials, region and endpoint for `settings` (anything with the s3_* keys)."""
    env = dict(os.environ) if env is None else env
    home = Path(env.get("HOME") or Path.home())
    profile = settings.s3_profile or env.get("AWS_PROFILE") or "default"
    named = bool(settings.s3_profile or env.get("AWS_PROFILE"))
    cred_file = Path(env.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws" / "credentials").expanduser()
    config_file = Path(env.get("AWS_CONFIG_FILE") or home / ".aws" / "config").expanduser()
    from_creds = _section(_read_ini(cred_file), profile)
    config_name = profile if profile == "default" else f"profile {profile}"
    from_config = _section(_read_ini(config_file), config_name)
    if named and from_creds is None and from_config is None:
        raise SettingsError(f"s3_profile: no profile {profile!r} in {cred_file} or {config_file}")
    files = {**(from_config or {}), **(from_creds or {})}

    key_id, secret, token, source = None, None, None, ""
    if settings.s3_access_key_id or settings.s3_secret_access_key:
        if not (settings.s3_access_key_id and settings.s3_secret_access_key):
            raise SettingsError("s3_access_key_id and s3_secret_access_key go together")
        key_id, secret, token = (
            settings.s3_access_key_id,
            settings.s3_secret_access_key,
            settings.s3_session_token,
        )
        source = "settings"
    elif env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        key_id, secret, token = (
            env["AWS_ACCESS_KEY_ID"],
            env["AWS_SECRET_ACCESS_KEY"],
            env.get("AWS_SESSION_TOKEN"),
        )
        source = "AWS_ACCESS_KEY_ID"
    elif files.get("aws_access_key_id") and files.get("aws_secret_access_key"):
        key_id, secret = files["aws_access_key_id"], files["aws_secret_access_key"]
        token = files.get("aws_session_token")
        source = (
            f"{cred_file if from_creds and 'aws_access_key_id' in from_creds else config_file} [{profile}]"
        )
    region = (
        settings.s3_region
        or env.get("AWS_REGION")
        or env.get("AWS_DEFAULT_REGION")
        or files.get("region")
        or DEFAULT_REGION
    )
    endpoint = (
        settings.s3_endpoint_url
        or env.get("AWS_ENDPOINT_URL_S3")
        or env.get("AWS_ENDPOINT_URL")
        or files.get("endpoint_url")
    )
    return Credentials(key_id, secret, token or None, region, endpoint.rstrip("/") if endpoint else None,
                       source or "none (unsigned requests)")  # fmt: skip
