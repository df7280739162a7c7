"""What the Streaming plugin knows of each codec: its SDP name, clock and defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CodecInfo:
    name: str  # lower-case key, as in the configuration's ``codec``
    kind: str  # "audio" | "video"
    rtpmap_name: str  # as in a=rtpmap
    clock_rate: int
    channels: int | None = None
    default_fmtp: str | None = None

    @property
    def rtpmap(self) -> str:
        suffix = f"/{self.channels}" if self.channels else ""
        return f"{self.rtpmap_name}/{self.clock_rate}{suffix}"


KNOWN_CODECS: dict[str, CodecInfo] = {
    codec.name: codec
    for codec in (
        CodecInfo("opus", "audio", "opus", 48000, channels=2),
        CodecInfo("multiopus", "audio", "multiopus", 48000, channels=6),
        CodecInfo("pcmu", "audio", "PCMU", 8000),
        CodecInfo("pcma", "audio", "PCMA", 8000),
        CodecInfo("g722", "audio", "G722", 8000),
        CodecInfo("vp8", "video", "VP8", 90000),
        CodecInfo("vp9", "video", "VP9", 90000),
        CodecInfo("av1", "video", "AV1", 90000),
        CodecInfo(
            "h264",
            "video",
            "H264",
            90000,
            default_fmtp="level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        ),
        CodecInfo("h265", "video", "H265", 90000),
    )
}

VIDEO_RTCP_FEEDBACK = ("ccm fir", "nack", "nack pli", "goog-remb")

# The codecs whose temporal layers the engine leaves out (it reads their payload descriptors,
# AV1's OBU extension headers).
TEMPORAL_LAYER_CODECS = ("vp8", "vp9", "av1")


def codec_from_rtpmap(rtpmap: str) -> CodecInfo | None:
    """The codec an ``rtpmap`` value such as ``"VP8/90000"`` or ``"opus/48000/2"`` names."""
    name = rtpmap.split("/", 1)[0].strip().lower()
    return KNOWN_CODECS.get(name)
