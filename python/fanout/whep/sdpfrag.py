"""``application/trickle-ice-sdpfrag`` bodies (RFC 8840), as WHEP's PATCH carries them."""

from __future__ import annotations

from dataclasses import dataclass, field


class SdpFragError(ValueError):
    """A body that is not a usable SDP fragment; the message says why."""


@dataclass
class SdpFragment:
    """The ICE credentials, candidates and end-of-candidates of a fragment, by media."""

    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    candidates: list[tuple[str | None, str]] = field(default_factory=list)  # (mid, "candidate:...")
    end_of_candidates: bool = False


def parse_sdpfrag(text: str) -> SdpFragment:
    fragment = SdpFragment()
    mid: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise SdpFragError(f"line {number}: not of the form x=value")
        if line.startswith("m="):
            mid = None
            continue
        if not line.startswith("a="):
            continue
        name, _, value = line[2:].partition(":")
        if name == "ice-ufrag":
            fragment.ice_ufrag = value.strip()
        elif name == "ice-pwd":
            fragment.ice_pwd = value.strip()
        elif name == "mid":
            mid = value.strip()
        elif name == "candidate":
            fragment.candidates.append((mid, "candidate:" + value.strip()))
        elif name == "end-of-candidates":
            fragment.end_of_candidates = True
    return fragment
