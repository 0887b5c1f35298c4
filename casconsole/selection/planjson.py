"""The plan as JSON: `Plan.to_json()` as one object, and `write_json` for `cas-sync --dry-run
--json`, which writes the same document piece by piece as it is produced.

At 500,000 records the document lists every file name (included, excluded with its reason,
to download) and every record with unmet dependencies: tens of megabytes, and hundreds more as
Python objects. Streamed, no more than CHUNK entries of a list are held at a time (encoded by
msgspec), and the lists themselves come from iterators over the plan's own lists, in C.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import compress, islice
from operator import attrgetter, not_
from typing import IO, Any

import msgspec

from casconsole.conda.repodata import Record
from casconsole.redact import redact_url
from casconsole.selection.filters import Decision

# the plan and its subdirs are `Any` here: plan.py imports this module (its to_json)
Plan = SubdirPlan = Any

CHUNK = 10_000  # entries of a list or object encoded at a time

_INCLUDED, _FN = attrgetter("included"), attrgetter("fn")


class _Items:
    """A JSON array (`pairs` false) or object (`pairs` true) whose entries `make()` iterates.
    `again`: the same entries are written again later (to download = included, on a first
    sync), and the encoded chunks are kept for that."""

    def __init__(self, make: Callable[[], Iterable[Any]], pairs: bool = False, again: bool = False):
        self.make, self.pairs, self.again = make, pairs, again
        self.encoded: list[bytes] | None = None

    def value(self) -> list | dict:
        return dict(self.make()) if self.pairs else list(self.make())


def excluded_items(records: Sequence[Record], decisions: Sequence[Decision]) -> Iterator[tuple[str, str]]:
    """(file name, reason) of each dropped record: the reason made once per distinct decision."""
    dropped = list(map(not_, map(_INCLUDED, decisions)))
    drops = list(compress(decisions, dropped))
    reasons = {key: d.reason for key, d in dict(zip(map(id, drops), drops)).items()}
    files = map(_FN, compress(records, dropped))
    return zip(files, map(reasons.__getitem__, map(id, drops)))


def subdir_parts(sp: SubdirPlan) -> Iterator[tuple[str, Any]]:
    """The keys of one subdir's JSON, in order, each with its value or an `_Items`."""
    kept = sp.included()
    download = sp.download(kept)
    check = sp._check
    yield "source", redact_url(sp.repodata.source)
    yield "funnel", dataclasses.asdict(sp.funnel)
    yield "prune_withheld", sp.prune_withheld
    included = _Items(lambda: map(_FN, kept), again=download is kept)
    yield "included", included
    yield "excluded", _Items(lambda: excluded_items(sp.records, sp.decisions), pairs=True)
    yield "download", included if download is kept else _Items(lambda: map(_FN, download))
    yield "delete", sp.delete()
    yield "download_bytes", sp.funnel.download_bytes  # kept current by every change of decision
    broken = check.broken(sp.subdir) if check is not None else None
    yield "broken", _Items(lambda: broken.by_record(sp.records) if broken is not None else (), pairs=True)
    yield (
        "broken_by",
        [{"cause": g.cause, "records": g.records, "specs": g.specs} for g in sp.broken_groups()],
    )


def plan_parts(plan: Plan) -> Iterator[tuple[str, Any]]:
    """The keys of the plan's JSON before `subdirs`, in order."""
    settings = plan.settings
    yield "remote_url", redact_url(settings.remote_url)
    yield "mirror_dir", str(settings.mirror_dir)
    yield "channel", settings.channel_name
    yield "warnings", plan.warnings()
    yield "missing_platforms", {subdir: redact_url(why) for subdir, why in plan.missing.items()}
    yield "unmatched", {key: plan.unmatched.get(key, []) for key in ("blacklist", "whitelist")}


def _value(value: Any) -> Any:
    return value.value() if isinstance(value, _Items) else value


def subdir_json(sp: SubdirPlan) -> dict[str, Any]:
    return {key: _value(value) for key, value in subdir_parts(sp)}


def plan_json(plan: Plan) -> dict[str, Any]:
    out = dict(plan_parts(plan))
    out["subdirs"] = {subdir: subdir_json(sp) for subdir, sp in plan.subdirs.items()}
    return out


def write_json(
    plan: Plan,
    out: IO[bytes],
    extra: dict[str, Any] | None = None,
    more: Callable[[IO[bytes]], None] | None = None,
) -> None:
    """Write `plan_json(plan)` to `out`, a piece at a time: a line per key of the plan and of
    each subdir, the long lists CHUNK entries at a time; then the keys of `extra` (the pypi
    section's plan). `more(out)` writes the members of subdirs planned elsewhere (the other
    half of a split plan, each written by `write_subdir_json`) after this plan's own."""
    encode = msgspec.json.Encoder().encode
    out.write(b"{")
    for key, value in plan_parts(plan):
        out.write(encode(key) + b": " + encode(value) + b",\n")
    out.write(b'"subdirs": {')
    for n, sp in enumerate(plan.subdirs.values()):
        out.write(b",\n" if n else b"\n")
        write_subdir_json(sp, out, encode)
    if more is not None:
        out.write(b",\n" if plan.subdirs else b"\n")
        more(out)
    out.write(b"}")
    for key, value in (extra or {}).items():
        out.write(b",\n" + encode(key) + b": " + encode(value))
    out.write(b"}\n")


def write_subdir_json(sp: SubdirPlan, out: IO[bytes], encode: Callable[[Any], bytes] | None = None) -> None:
    """One member of the plan's `subdirs`: `"name": {...}`, its long lists a chunk at a time."""
    encode = encode or msgspec.json.Encoder().encode
    out.write(encode(sp.subdir) + b": {")
    for m, (key, value) in enumerate(subdir_parts(sp)):
        out.write(b",\n " if m else b"\n ")
        out.write(encode(key) + b": ")
        if isinstance(value, _Items):
            _write_items(out, encode, value)
        else:
            out.write(encode(value))
    out.write(b"}")


def _write_items(out: IO[bytes], encode, items: _Items) -> None:
    out.write(b"{" if items.pairs else b"[")
    if items.encoded is not None:  # written once already
        out.write(b",".join(items.encoded))
    else:
        kept: list[bytes] | None = [] if items.again else None
        entries = iter(items.make())
        first = True
        while chunk := list(islice(entries, CHUNK)):
            if not first:
                out.write(b",")
            first = False
            encoded = encode(dict(chunk) if items.pairs else chunk)[1:-1]
            out.write(encoded)
            if kept is not None:
                kept.append(encoded)
        items.encoded = kept
    out.write(b"}" if items.pairs else b"]")
