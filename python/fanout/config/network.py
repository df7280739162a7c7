"""The host's IPv4 interfaces, for binding by interface name and for the ICE candidates; the
host's IPv6 addresses (``media.ipv6``); the IPv4 form of a v4-mapped address a dual-stack socket reports."""

from __future__ import annotations

import array
import fcntl
import ipaddress
import socket
import struct
from dataclasses import dataclass

SIOCGIFCONF = 0x8912
SIOCGIFFLAGS = 0x8913
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFREQ_SIZE = 40  # struct ifreq on 64-bit Linux
MAX_INTERFACES = 128
IF_INET6 = "/proc/net/if_inet6"
IPV6_SCOPE_GLOBAL = 0x00  # /proc/net/if_inet6's scope column (RFC 4291 global and ULA addresses)
IFA_F_TENTATIVE_OR_DEPRECATED = 0x40 | 0x20


@dataclass(frozen=True)
class InterfaceAddress:
    name: str  # "eth0"
    address: str  # "192.0.2.2"
    up: bool
    loopback: bool


def interface_addresses() -> list[InterfaceAddress]:
    """Every IPv4 address configured on an interface (Linux SIOCGIFCONF)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        buffer = array.array("B", bytes(IFREQ_SIZE * MAX_INTERFACES))
        address, _ = buffer.buffer_info()
        request = struct.pack("iL", len(buffer), address)
        length = struct.unpack("iL", fcntl.ioctl(sock.fileno(), SIOCGIFCONF, request))[0]
        data = buffer.tobytes()[:length]
        found: list[InterfaceAddress] = []
        for offset in range(0, length, IFREQ_SIZE):
            name = data[offset : offset + 16].split(b"\0", 1)[0].decode()
            ip = socket.inet_ntoa(data[offset + 20 : offset + 24])
            flags_request = struct.pack("16sH", name.encode(), 0) + bytes(IFREQ_SIZE - 18)
            flags = struct.unpack("16sH", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, flags_request)[:18])[1]
            found.append(InterfaceAddress(name, ip, bool(flags & IFF_UP), bool(flags & IFF_LOOPBACK)))
        return found


def detect_advertised_ips() -> list[str]:
    """The addresses of the host's up, non-loopback interfaces; ``127.0.0.1`` if there are none."""
    addresses = [entry.address for entry in interface_addresses() if entry.up and not entry.loopback]
    return addresses or ["127.0.0.1"]


def detect_advertised_ipv6_ips(path: str = IF_INET6) -> list[str]:
    """The host's global (and unique local) IPv6 addresses; ``::1`` if there are none."""
    found: list[str] = []
    try:
        with open(path) as lines:
            for line in lines:
                fields = line.split()
                if len(fields) < 6 or int(fields[3], 16) != IPV6_SCOPE_GLOBAL:
                    continue
                if int(fields[4], 16) & IFA_F_TENTATIVE_OR_DEPRECATED:
                    continue
                found.append(str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))))
    except FileNotFoundError:  # no IPv6 in this kernel
        return []
    return found or ["::1"]


def unmapped(ip: str) -> str:
    """``ip`` with a v4-mapped IPv6 address (``::ffff:192.0.2.1``, as a dual-stack socket reports
    IPv4 peers) written as the IPv4 address it maps; any other address as it is."""
    if ip.startswith("::ffff:") and "." in ip:
        return ip[len("::ffff:") :]
    return ip


def is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def address_of_interface(name: str) -> str | None:
    """The first IPv4 address of the interface called ``name``, None if it has none."""
    for entry in interface_addresses():
        if entry.name == name:
            return entry.address
    return None
