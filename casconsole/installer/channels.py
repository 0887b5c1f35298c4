"""The installer's channels: where each one is, and its repodata for the platform and noarch.

A channel is given as our channel URL (`http://mirror:8080/internal-pkgs`, a private one as
`http://mirror:8080/t/<token>/internal-pkgs`), a `file://` URL or a folder (relative to the YAML
file). The repodata is fetched by `upstream/`'s one fetcher, through the network policy of the
settings (timeout, retries, TLS, proxy).

The mirror's root URL (`http://<mirror>:8080`, as the FAQ writes it) means the mirrored
channel. The root is taken as a channel when `<url>/<platform>/repodata.json` or a non-empty
`<url>/noarch/repodata.json` is there (a server that answers the mirrored channel at its root);
when neither is, `<url>/<channel_name>` (`pkgs` by default, the settings' `channel_name`) is
tried. The same goes for a folder: the mirror's folder means its mirrored channel.

Tokens never leave the build machine: the URLs written into the installer (conda-meta, history)
show `/t/<TOKEN>/` instead.
"""

from __future__ import annotations

import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from casconsole.conda.repodata import empty_repodata
from casconsole.errors import Cancelled, RepoDataError, RepoDataNotFound
from casconsole.installer.construct import InstallerError, InstallerSpec
from casconsole.upstream.policy import NetworkPolicy
from casconsole.upstream.repodata import Upstream

_TOKEN = re.compile(r"/t/[^/]+/")


def mask_token(url: str) -> str:
    """`http://h/t/abc/chan` -> `http://h/t/<TOKEN>/chan`: what may be written into an installer."""
    return _TOKEN.sub("/t/<TOKEN>/", url, count=1)


class _Records(msgspec.Struct):
    """A repodata file's records, each kept as its raw JSON until it is chosen."""

    packages: dict[str, msgspec.Raw] = {}
    packages_conda: dict[str, msgspec.Raw] = msgspec.field(default_factory=dict, name="packages.conda")


_records_decoder = msgspec.json.Decoder(_Records)


@dataclass
class ChannelData:
    """One channel of the installer, its repodata fetched."""

    given: str  # as written in the YAML
    url: str  # the channel's URL, token included (for fetching)
    local: Path | None  # the folder, for a channel on disk
    repodata: dict[str, bytes | bytearray] = field(default_factory=dict)  # subdir -> JSON
    records: dict[str, dict[str, msgspec.Raw]] = field(default_factory=dict)  # subdir -> fn -> raw

    @property
    def shown(self) -> str:
        """The URL as it may be shown and written into an installer (no token)."""
        return mask_token(self.url)

    def raw_record(self, subdir: str, fn: str) -> dict:
        raw = self.records.get(subdir, {}).get(fn)
        if raw is None:
            raise InstallerError(f"{self.shown}/{subdir}: no record of {fn}")
        record = msgspec.json.decode(raw)
        if not isinstance(record, dict):
            raise InstallerError(f"{self.shown}/{subdir}/{fn}: the record is not an object")
        return record


def channel_candidates(given: str, base: Path, channel_name: str) -> list[str]:
    """Where a channel written as `given` may be: itself, then `<it>/<channel_name>`."""
    scheme = urllib.parse.urlsplit(given).scheme
    if scheme in ("http", "https", "file"):
        location = given.rstrip("/")
    elif scheme and len(scheme) > 1:
        raise InstallerError(
            f"channel {given}: unsupported URL scheme {scheme!r} (use http, https, file or a folder)"
        )
    else:
        location = str((base / Path(given).expanduser()).resolve())
    return [location, f"{location}/{channel_name}"]


def fetch_channels(
    spec: InstallerSpec,
    policy: NetworkPolicy,
    channel_name: str = "pkgs",
    *,
    cancel: threading.Event | None = None,
    on_read=None,
) -> list[ChannelData]:
    """The repodata of every channel for the platform and noarch, in the order given.

    `on_read(channel, subdir, records)` hears of each subdir read."""
    base = spec.source.parent if spec.source is not None else Path.cwd()
    subdirs = [spec.platform, "noarch"]
    channels = []
    for given in spec.channels:
        tried = []
        for location in channel_candidates(given, base, channel_name):
            found = _read_channel(given, location, subdirs, policy, cancel)
            if found is not None:
                break
            tried.append(mask_token(location))
        else:
            where = " nor ".join(f"{t}/{spec.platform}/repodata.json" for t in tried)
            raise InstallerError(
                f"{spec.where('channels')}: channel {mask_token(given)}: no repodata there: neither {where}"
            )
        for subdir in subdirs:
            found.records[subdir] = _decode_records(found, subdir)
            if on_read is not None:
                on_read(found.shown, subdir, len(found.records[subdir]))
        channels.append(found)
    return channels


def _read_channel(
    given: str, location: str, subdirs: list[str], policy: NetworkPolicy, cancel: threading.Event | None
) -> ChannelData | None:
    """The channel at `location`, or None when neither subdir has repodata there."""
    found: dict[str, bytes | bytearray] = {}
    try:
        with Upstream(location, policy, cancel=cancel) as upstream:
            for subdir in subdirs:
                try:
                    fetched = upstream.fetch(subdir)
                except RepoDataNotFound:
                    continue
                if subdir == "noarch" and fetched.data == empty_repodata("noarch"):
                    continue  # the fetcher's stand-in for a missing noarch
                found[subdir] = fetched.data
            local = upstream.local
            url = upstream.base
    except Cancelled:
        raise
    except RepoDataError as exc:
        raise InstallerError(f"channel {mask_token(given)}: {mask_token(str(exc))}") from None
    if not found:
        return None
    data = ChannelData(given, url, local)
    for subdir in subdirs:
        data.repodata[subdir] = found.get(subdir) or empty_repodata(subdir)
    return data


def _decode_records(channel: ChannelData, subdir: str) -> dict[str, msgspec.Raw]:
    try:
        parsed = _records_decoder.decode(channel.repodata[subdir])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InstallerError(f"{channel.shown}/{subdir}/repodata.json: not repodata ({exc})") from None
    return {**parsed.packages, **parsed.packages_conda}
