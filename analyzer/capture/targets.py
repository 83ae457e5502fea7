"""Which referral targets a proxy follows: the target policy of `proxy` and `mitm` reverse mode.

A server's `XFR`/`RNG` names where the client goes next. A proxy that follows
it opens a listener of its own that relays there, so without a policy the
server decides which listeners open and what they reach: under `--listen
0.0.0.0` a line `XFR 2 SB 127.0.0.1:<port> CKI x` would expose a
loopback-only service of the analyst's machine to the network.

`TargetPolicy.check(host, port)` returns None when a target may be followed,
else the reason it is refused. A target is followed when it is:

- in the upstream's own network: the /24 (IPv4) or /64 (IPv6) of each address
  the upstream has (an upstream given by name: each address it resolves to at
  start, and the name itself);
- or named by `--allow-target` (`CIDR`, `ADDRESS[:PORT]`, `HOST[:PORT]`, repeatable);
- or anything at all with `--allow-any-target`;

and, when it is a loopback, link-local or unspecified address (0.0.0.0 and
:: reach this machine), only when the upstream itself is on loopback, or when
`--allow-target` names it explicitly (`--allow-any-target` does not cover
this machine). A host name is compared as a name (it is not resolved here:
resolving would let DNS pick the address after the check); once the proxy has
connected to a followed name, `check_resolved` refuses it if DNS sent it to this
machine's own loopback or link-local address.

A refused target is forwarded as the server sent it: the client goes there
directly, outside the proxy, and the proxy reports `proxy.target_refused`.
No I/O except resolving the upstream's name once, at construction.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from analyzer.msnp.facts import format_address, parse_address

IPv4_PREFIX = 24
IPv6_PREFIX = 64


def ip_of(host: str):
    """`host` as an IP address (IPv4-mapped IPv6 as IPv4, a zone id dropped), or None for a name."""
    text = host.strip("[]").split("%", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def this_machine(address) -> bool:
    """Loopback, link-local or unspecified: an address that reaches this machine or its link only."""
    return address.is_loopback or address.is_link_local or address.is_unspecified


def own_network(address):
    prefix = IPv4_PREFIX if address.version == 4 else IPv6_PREFIX
    return ipaddress.ip_network(f"{address}/{prefix}", strict=False)


@dataclass(frozen=True, slots=True)
class Allowed:
    """One `--allow-target` entry: a network (an address is a /32 or /128) or a host name, and maybe a port."""
    text: str
    network: object | None
    name: str | None
    port: int | None

    def matches(self, address, name: str | None, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.network is not None:
            return address is not None and address.version == self.network.version and address in self.network
        return name is not None and name == self.name


def parse_allowed(text: str) -> Allowed:
    """`CIDR`, `ADDRESS[:PORT]`, `[V6]:PORT` or `HOST[:PORT]`; ValueError with a one-line reason."""
    text = text.strip()
    if not text:
        raise ValueError("empty --allow-target")
    if "/" in text:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"--allow-target {text!r}: not a CIDR network (e.g. 203.0.113.0/24)") from None
        return Allowed(text, network, None, None)
    address = ip_of(text)
    if address is not None:  # a bare address (IPv6 too): no port
        return Allowed(text, ipaddress.ip_network(address), None, None)
    parsed = parse_address(text)
    if parsed is None or any(c.isspace() for c in parsed.host):
        raise ValueError(f"--allow-target {text!r}: expected CIDR, ADDRESS[:PORT] or HOST[:PORT]")
    port = parsed.port if (":" in text.rpartition("]")[2]) else None
    address = ip_of(parsed.host)
    if address is not None:
        return Allowed(text, ipaddress.ip_network(address), None, port)
    return Allowed(text, None, _name(parsed.host), port)


def _name(host: str) -> str:
    return host.lower().rstrip(".")


def resolve(host: str) -> list:
    """The addresses `host` (a name or an address) has now; [] when it cannot be resolved."""
    address = ip_of(host)
    if address is not None:
        return [address]
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    found = []
    for info in infos:
        address = ip_of(info[4][0])
        if address is not None and address not in found:
            found.append(address)
    return found


class TargetPolicy:
    def __init__(self, upstream: tuple[str, int], allow: list[str] | tuple = (), allow_any: bool = False,
                 upstream_addresses: list | None = None) -> None:
        """`allow` holds `--allow-target` texts (ValueError on a bad one); `upstream_addresses`
        defaults to resolving the upstream's host now."""
        self.upstream = upstream
        self.allow_any = allow_any
        self.allowed = [parse_allowed(text) for text in allow]
        self.upstream_addresses = list(upstream_addresses) if upstream_addresses is not None \
            else resolve(upstream[0])
        self.upstream_name = None if ip_of(upstream[0]) is not None else _name(upstream[0])
        self.networks = []
        for address in self.upstream_addresses:
            network = own_network(address)
            if network not in self.networks:
                self.networks.append(network)
        self.loopback_upstream = any(a.is_loopback for a in self.upstream_addresses)

    def describe(self) -> str:
        """One line: which targets are followed."""
        if self.allow_any:
            what = ["any target"]
        else:
            what = [str(n) for n in self.networks] + ([self.upstream_name] if self.upstream_name else [])
        what += [a.text for a in self.allowed]
        text = "target policy: follow " + ", ".join(what or ["the upstream only"])
        if not self.loopback_upstream:
            text += "; never this machine's loopback or link-local addresses unless --allow-target names them"
        return text

    def check(self, host: str, port: int) -> str | None:
        """None when a referral to (host, port) may be followed; else why not."""
        address = ip_of(host)
        name = None if address is not None else _name(host)
        explicit = any(a.matches(address, name, port) for a in self.allowed)
        if address is not None and this_machine(address) and not self.loopback_upstream and not explicit:
            return (f"{format_address(host, port)} is this machine's own (loopback, link-local or unspecified) "
                    f"address and the upstream is not on loopback")
        if explicit or self.allow_any:
            return None
        if address is not None:
            if any(address.version == n.version and address in n for n in self.networks):
                return None
            where = ", ".join(str(n) for n in self.networks) or "(unresolved)"
            return f"{format_address(host, port)} is outside the upstream's network {where} (--allow-target to follow it)"
        if name is not None and name == self.upstream_name:
            return None
        return f"host name {host!r} is not the upstream's and not named by --allow-target"

    def check_resolved(self, host: str, port: int, reached: str) -> str | None:
        """A target followed by name turned out to be `reached`: refuse this machine's own addresses.

        The name was allowed as a name; what it resolves to is up to DNS, so a
        loopback or link-local answer is refused as `check` refuses such an address,
        unless `--allow-target` names the host or that address.
        """
        address = ip_of(reached)
        if address is None or ip_of(host) is not None or not this_machine(address) or self.loopback_upstream:
            return None
        if any(a.matches(address, _name(host), port) or a.matches(address, None, port) for a in self.allowed):
            return None
        return (f"{format_address(host, port)} resolved to {reached}, this machine's own address, "
                f"and the upstream is not on loopback")


class Refused(str):
    """A route's reason for leaving a referral alone, with the anomaly it raises."""

    anomaly = "proxy.target_refused"

    def __new__(cls, text: str, anomaly: str = "proxy.target_refused") -> "Refused":
        self = super().__new__(cls, text)
        self.anomaly = anomaly
        return self
