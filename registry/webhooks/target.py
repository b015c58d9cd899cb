"""Where a webhook may send: http(s) URLs whose every address is public.

The name is resolved once per attempt; every address it gives is checked, and the
connection goes to a checked address (registry/webhooks/sender.py pins it), so a DNS
answer that changes between check and connect (rebinding) can never redirect a delivery
to the registry's own network.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services (AWS, GCP, Azure: 169.254.169.254; AWS over IPv6).
METADATA = frozenset({ipaddress.ip_address("169.254.169.254"),
                      ipaddress.ip_address("fd00:ec2::254")})


class TargetRefused(Exception):
    """A URL a webhook may not be sent to; the message says why."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # as in the URL: the Host header and the TLS server name
    port: int
    path: str  # with its query
    address: IPAddress  # the checked address to connect to


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (tests stub this)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[IPAddress, None] = {}
    for info in infos:
        seen[ipaddress.ip_address(str(info[4][0]).split("%")[0])] = None
    return list(seen)


def refusal(address: IPAddress) -> str | None:
    """Why a webhook may not reach `address`; None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA:
        return "a cloud metadata address"
    for flag, what in (("is_loopback", "loopback"), ("is_unspecified", "unspecified"),
                       ("is_link_local", "link-local"), ("is_multicast", "multicast"),
                       ("is_private", "private (or unique-local)"),
                       ("is_reserved", "reserved")):
        if getattr(address, flag):
            return what
    if not address.is_global:
        return "not a public address"
    return None


def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path with query); TargetRefused for anything but a plain
    http(s) URL with a host."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"url {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused(f"url {url!r}: only http:// and https:// URLs can receive "
                            "webhooks")
    if not parts.hostname:
        raise TargetRefused(f"url {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused(f"url {url!r}: credentials in the URL are not supported; "
                            "verify the signature instead")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path


def check_target(url: str, allow_private: bool) -> Target:
    """Resolve the URL's host once and check every address; the first one to connect to."""
    scheme, host, port, path = split_url(url)
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise TargetRefused(f"{host!r} does not resolve: {exc}") from None
    if not addresses:
        raise TargetRefused(f"{host!r} does not resolve to any address")
    if not allow_private:
        for address in addresses:
            why = refusal(address)
            if why is not None:
                raise TargetRefused(
                    f"{host!r} resolves to {address}, {why}: webhooks only go to public "
                    "addresses (set DELTAHUB_WEBHOOK_ALLOW_PRIVATE=true to allow private "
                    "targets on a trusted network)")
    return Target(scheme, host, port, path, addresses[0])
