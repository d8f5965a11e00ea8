"""AE-title and host rules: the only hand-written validation in DICOM Lab.

PS3.5 §6.2 (AE value representation): at most 16 characters of the default
character repertoire (printable ASCII), no backslash, no control characters;
leading and trailing spaces are not significant, so two titles are compared
after stripping them, and case is kept and significant.
"""

from __future__ import annotations

import ipaddress
import re
import socket

from .errors import AETitleError, ValidationError

AE_MAX_LENGTH = 16

# Patterns are applied with fullmatch: ``$`` alone lets a trailing newline through.
_HOSTNAME_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
# PS3.5 §9.1: components of ASCII digits, no leading zero (except "0"), dots between, at most 64.
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
UID_MAX_LENGTH = 64


def check_ae_title(value: object, field: str = "ae_title") -> str:
    """Return the significant AE title (spaces stripped) or raise AETitleError.

    The messages are shown as they are on the web page and in the API.
    """
    if not isinstance(value, str):
        raise AETitleError("An AE title must be text.", field)
    if "\\" in value:
        raise AETitleError("AE titles cannot contain a backslash (\\).", field)
    for ch in value:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise AETitleError(
                "AE titles cannot contain control characters (tab, new line...).", field
            )
        if ord(ch) > 0x7E:
            raise AETitleError(
                f"AE titles use plain ASCII letters, digits, spaces and punctuation; {ch!r} is not allowed.",
                field,
            )
    if len(value) > AE_MAX_LENGTH:
        raise AETitleError(
            f"AE titles are at most {AE_MAX_LENGTH} characters ({len(value)} given).", field
        )
    stripped = value.strip(" ")
    if not stripped:
        raise AETitleError("An AE title cannot be empty or only spaces.", field)
    return stripped




def same_ae_title(a: str, b: str) -> bool:
    """PS3.5 comparison: case-sensitive, leading/trailing spaces not significant."""
    return a.strip(" ") == b.strip(" ")


def near_miss(title: str, known: "list[str] | set[str]") -> str | None:
    """A registered title that differs from ``title`` only by case, if any."""
    t = title.strip(" ").casefold()
    for k in sorted(known):
        if k.strip(" ").casefold() == t and k.strip(" ") != title.strip(" "):
            return k
    return None


def check_host(value: object, field: str = "host") -> str:
    """An IPv4/IPv6 literal or an RFC 1123 host name; returns it normalised."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("Give an IP address or a host name.", field)
    v = value.strip()
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        pass
    name = v[:-1] if v.endswith(".") else v
    if len(name) > 253 or not all(_HOSTNAME_LABEL.fullmatch(p) for p in name.split(".")):
        raise ValidationError(
            f"{value!r} is neither an IP address nor a valid host name "
            "(letters, digits and hyphens, separated by dots).",
            field,
        )
    if re.fullmatch(r"[0-9.]+", name):
        raise ValidationError(f"{value!r} is not a valid IPv4 address.", field)
    return name.lower()


def check_uid(value: object, field: str = "uid") -> str:
    """A DICOM UID (PS3.5 §9.1), checked against the whole string; returned unchanged."""
    if not isinstance(value, str) or not value:
        raise ValidationError("A UID is text: digits and dots.", field)
    if len(value) > UID_MAX_LENGTH or not _UID.fullmatch(value):
        raise ValidationError(
            f"{value!r} is not a valid DICOM UID (digits and dots, no leading zeros, at most {UID_MAX_LENGTH}).",
            field,
        )
    return value


def check_port(value: object, field: str = "port") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("A port is a whole number from 1 to 65535.", field)
    if not 1 <= value <= 65535:
        raise ValidationError(f"A port is a whole number from 1 to 65535 ({value} given).", field)
    return value


def resolve_host(host: str) -> set[str]:
    """Every address ``host`` resolves to now (an IP literal resolves to itself).

    Called at check time, so a node registered by name follows the name.
    Raises OSError when the name does not resolve.
    """
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return {str(ipaddress.ip_address(str(info[4][0]).split("%")[0])) for info in infos}


def same_address(peer: str, addresses: set[str]) -> bool:
    """True when ``peer`` is one of ``addresses`` (IPv4-mapped IPv6 counts as IPv4)."""
    try:
        ip = ipaddress.ip_address(peer.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip) in addresses
