"""An adapter reference the server does not know, explained from what it does know.

`NAME:ALIAS` with an unknown alias gets "did you mean NAME:prod?" and NAME's aliases;
`NAME@VERSION` with no such version gets NAME's versions. The server names close adapter
names itself; the versions and aliases of a name it does know are one listing away.
"""

from __future__ import annotations

import difflib
import itertools
import re
from urllib.parse import unquote, urlsplit

from registry.client import ClientError, DeltahubClient

_REF = re.compile(r"(?P<name>[^@:]+)(?P<sep>[@:])(?P<wanted>.+)")
_SHOWN = 100  # versions listed at most; a name's newest come first


def explain_missing_ref(client: DeltahubClient, exc: ClientError) -> ClientError:
    """`exc` with the versions or aliases of the adapter name it refers to, when it is
    a 404 for `NAME@VERSION` or `NAME:ALIAS` and NAME exists; otherwise `exc` itself."""
    ref = _adapter_ref(exc)
    match = _REF.fullmatch(ref) if ref else None
    if match is None:
        return exc
    name, sep, wanted = match["name"], match["sep"], match["wanted"]
    try:
        versions = list(itertools.islice(client.list_adapters(name=name), _SHOWN))
    except ClientError:
        return exc
    if not versions:
        return exc
    if sep == "@":
        known = ", ".join(str(v["version"]) for v in versions)
        extra, matches = f"; {name} has versions {known}", []
    else:
        aliases = sorted({alias for v in versions for alias in v["aliases"]})
        matches = [f"{name}:{a}" for a in difflib.get_close_matches(wanted, aliases, n=3)]
        extra = "".join((f"; did you mean {' or '.join(repr(m) for m in matches)}?"
                         if matches else "", f" {name}'s aliases: {', '.join(aliases)}"))
    return ClientError(exc.status, exc.error, exc.detail + extra, method=exc.method,
                       url=exc.url, did_you_mean=matches or exc.did_you_mean)


def _adapter_ref(exc: ClientError) -> str | None:
    """The adapter reference of a 404 on `/adapters/<ref>[/...]`, or None."""
    if exc.status != 404 or exc.error != "AdapterNotFound":
        return None
    parts = urlsplit(exc.url).path.split("/")
    if "adapters" not in parts[:-1]:
        return None
    return unquote(parts[parts.index("adapters") + 1])
