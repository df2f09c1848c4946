"""Who is asking: the client address a door reports, and what a session is bound to.

The address comes from the socket's peer unless ``client_ip_header`` names a header that a
proxy you trust sets (``X-Forwarded-For``); then the entry ``trusted_proxies`` from the right
is the client's (each proxy appends the address it saw; entries further left are whatever the
client chose to send, and are never believed).
"""

from __future__ import annotations

import hashlib
import ipaddress

MAX_HEADER = 2048


def client_address(peer: str, header: str | None = None, trusted_proxies: int = 1) -> str:
    """The client's address as text: from ``header`` when given and well-formed, else ``peer``."""
    if header:
        # the right-hand end is the proxies': a cut keeps it, and drops the entry it splits
        entries = [entry.strip() for entry in header[-MAX_HEADER:].split(",")]
        if len(header) > MAX_HEADER:
            del entries[0]
        if len(entries) >= trusted_proxies:
            candidate = _address(entries[-trusted_proxies])
            if candidate is not None:
                return candidate
    return _address(peer) or ""


def _address(text: str) -> str | None:
    """A bare IP address out of ``1.2.3.4``, ``1.2.3.4:5678``, ``[::1]:80`` or ``::1``; None otherwise."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def address_prefix(address: str, v4_bits: int, v6_bits: int) -> str:
    """The network a client address is in (``203.0.113.0/24``); "" for no usable address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    bits = v4_bits if ip.version == 4 else v6_bits
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


def binding_digest(user_agent: str | None, prefix: str | None) -> str:
    """What a session stores of its binding: a digest, so the store holds no address."""
    material = f"ua\x00{user_agent if user_agent is not None else '-'}\x00ip\x00{prefix if prefix is not None else '-'}"
    return hashlib.sha256(b"session_mw binding\x00" + material.encode("utf-8", "replace")).hexdigest()[:32]
