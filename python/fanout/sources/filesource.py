"""The file source: a process that plays a media file as RTP over UDP, paced in real
time and looped, for the Streaming plugin's ``live`` and ``ondemand`` mountpoints.

    python -m fanout.sources.filesource FILE --host 127.0.0.1 --video-port 5004 --audio-port 5002

Any container and codec PyAV (FFmpeg) reads. A stream whose codec is the one the
mountpoint offers goes out as it is in the file (H.264 in Annex B form, its parameter
sets before each keyframe; Opus as is); any other is decoded and encoded again (video
to ``--video-codec``, H.264 or VP8; audio to Opus, 48 kHz stereo, 20 ms packets).
Packets are sent when their decoding time is due, the clock starting when the process
does; at the end of the file it starts again, the RTP timestamps going on.

A port of 0 leaves that stream out. The process writes nothing to stdout and logs
errors to stderr; a file it cannot play exits it with status 2 and one line that says
why. It exits with status 0 on SIGTERM or SIGINT, or with ``--exit-with-parent`` when
its parent process goes away.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from types import FrameType
from typing import Any

import av
import av.container
import av.stream
from av.audio.fifo import AudioFifo
from av.audio.resampler import AudioResampler
from av.bitstream import BitStreamFilterContext

from fanout.sources.h264 import H264Packetizer
from fanout.sources.opus import OPUS_CLOCK_RATE
from fanout.sources.rtp import RtpStream
from fanout.sources.testsource import Destination
from fanout.sources.vp8 import Vp8Packetizer

logger = logging.getLogger("fanout.sources.filesource")

VIDEO_CLOCK_RATE = 90_000
OPUS_FRAME_SAMPLES = 960  # 20 ms at 48 kHz
PARENT_CHECK_INTERVAL = 1.0
MAX_LATENESS = 0.25  # behind by more (a stall): the clock moves on instead of bursting
# A file whose every stream is read through in less than this (a file of one frame) is
# still played as if it lasted this long, so that the loop does not spin.
MIN_LOOP_SECONDS = 0.04
VIDEO_CODECS = ("h264", "vp8")
FILE_ERROR_STATUS = 2


class FileSourceError(Exception):
    """A file the source cannot play; the message says why, for a log line or a reply."""


@dataclass(frozen=True)
class FileProbe:
    """What a file has for a mountpoint: its first audio and video streams' codecs (None: none)."""

    audio_codec: str | None
    video_codec: str | None
    duration: float | None  # seconds, if the container says


def probe(path: str, *, audio: bool, video: bool) -> FileProbe:
    """Open ``path`` and check it has what the mountpoint takes: an audio stream if ``audio``,
    a video stream if ``video``, with a decoder for each, and packets to read. Raises
    FileSourceError otherwise (a missing file, not a media file, no such stream, truncated)."""
    container = _open(path)
    try:
        wanted = _wanted_streams(container, path, audio=audio, video=video)
        for stream in wanted:
            if stream.codec_context is None or av.codec.Codec(stream.codec_context.name, "r") is None:
                raise FileSourceError(f"{path}: no decoder for its {stream.type} codec")
        missing = set(wanted)
        try:
            for packet in container.demux(list(wanted)):
                if packet.size:
                    missing.discard(packet.stream)
                if not missing:
                    break
        except av.FFmpegError as error:
            raise FileSourceError(f"{path}: cannot be read ({_reason(error)})") from None
        if missing:
            kinds = " and ".join(sorted(stream.type for stream in missing))
            raise FileSourceError(f"{path}: its {kinds} stream has no packets (a truncated file?)")
        audio_stream = next((stream for stream in wanted if stream.type == "audio"), None)
        video_stream = next((stream for stream in wanted if stream.type == "video"), None)
        duration = container.duration / av.time_base if container.duration else None
        return FileProbe(
            audio_codec=audio_stream.codec_context.name if audio_stream else None,
            video_codec=video_stream.codec_context.name if video_stream else None,
            duration=duration,
        )
    finally:
        container.close()


def _open(path: str) -> av.container.InputContainer:
    if not os.path.isfile(path):
        raise FileSourceError(f"{path}: no such file")
    try:
        return av.open(path, "r")
    except av.FFmpegError as error:
        raise FileSourceError(f"{path}: not a media file fanout can read ({_reason(error)})") from None


def _reason(error: av.FFmpegError) -> str:
    return error.strerror or str(error)


def _wanted_streams(
    container: av.container.InputContainer, path: str, *, audio: bool, video: bool
) -> list[av.stream.Stream]:
    streams: list[av.stream.Stream] = []
    for kind, wanted, found in (("audio", audio, container.streams.audio), ("video", video, container.streams.video)):
        if not wanted:
            continue
        if not found:
            raise FileSourceError(f"{path}: no {kind} stream")
        streams.append(found[0])
    return streams


class _Output:
    """One RTP stream out of one stream of the file."""

    def __init__(self, stream: av.stream.Stream, port: int, payload_type: int) -> None:
        self.stream = stream
        self.port = port
        self.rtp = RtpStream(payload_type)

    def packets(self, packet: av.Packet, offset: float) -> list[bytes]:
        """The RTP packets for one packet of the file; ``offset``: seconds the loops so far lasted."""
        raise NotImplementedError

    def restart(self) -> None:
        """The file starts again."""


class _H264PassThrough(_Output):
    """H.264 as the file has it, in Annex B form (an MP4's length-prefixed units converted,
    its SPS and PPS put before every keyframe)."""

    def __init__(self, stream: av.stream.Stream, port: int, payload_type: int) -> None:
        super().__init__(stream, port, payload_type)
        self.packetizer = H264Packetizer()
        self.filter: BitStreamFilterContext | None = None
        self._new_filter()

    def _new_filter(self) -> None:
        self.filter = BitStreamFilterContext("h264_mp4toannexb", self.stream)

    def restart(self) -> None:
        self._new_filter()

    def packets(self, packet: av.Packet, offset: float) -> list[bytes]:
        assert self.filter is not None
        out = []
        for filtered in self.filter.filter(packet):
            timestamp = _timestamp(filtered.pts, filtered.time_base, offset, VIDEO_CLOCK_RATE)
            out += self.rtp.packetize(self.packetizer.packetize(bytes(filtered)), timestamp, marker_on_last=True)
        return out


class _VideoTranscode(_Output):
    """Video of another codec, decoded and encoded to ``codec`` (H.264 with libx264, VP8 with libvpx)."""

    def __init__(self, stream: av.stream.Stream, port: int, payload_type: int, codec: str) -> None:
        super().__init__(stream, port, payload_type)
        self.codec = codec
        self.packetizer: H264Packetizer | Vp8Packetizer = H264Packetizer() if codec == "h264" else Vp8Packetizer()
        self.encoder: Any = None
        self.frames = 0

    def _encoder(self, frame: av.VideoFrame) -> Any:
        if self.encoder is None or (self.encoder.width, self.encoder.height) != (frame.width, frame.height):
            encoder: Any = av.CodecContext.create("libx264" if self.codec == "h264" else "libvpx", "w")
            encoder.width, encoder.height = frame.width - frame.width % 2, frame.height - frame.height % 2
            encoder.pix_fmt = "yuv420p"
            encoder.time_base = Fraction(1, VIDEO_CLOCK_RATE)
            encoder.bit_rate = 2_000_000
            encoder.gop_size = 60
            encoder.thread_count = 1
            if self.codec == "h264":
                encoder.profile = "Constrained Baseline"
                encoder.options = {"preset": "veryfast", "tune": "zerolatency", "bf": "0", "repeat-headers": "1"}
            else:
                encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "auto-alt-ref": "0"}
            encoder.open()
            self.encoder = encoder
        return self.encoder

    def packets(self, packet: av.Packet, offset: float) -> list[bytes]:
        out = []
        decoder: Any = self.stream.codec_context
        for frame in decoder.decode(packet):
            if frame.pts is None:
                continue
            encoder = self._encoder(frame)
            timestamp = _timestamp(frame.pts, frame.time_base, offset, VIDEO_CLOCK_RATE)
            converted = frame.reformat(encoder.width, encoder.height, "yuv420p")
            converted.pts = timestamp
            converted.time_base = encoder.time_base
            for encoded in encoder.encode(converted):
                payloads = self.packetizer.packetize(bytes(encoded))
                out += self.rtp.packetize(payloads, timestamp, marker_on_last=True)
        return out

    def restart(self) -> None:
        self.stream.codec_context.flush_buffers()


class _OpusPassThrough(_Output):
    def packets(self, packet: av.Packet, offset: float) -> list[bytes]:
        timestamp = _timestamp(packet.pts, packet.time_base, offset, OPUS_CLOCK_RATE)
        return self.rtp.packetize([bytes(packet)], timestamp, marker_on_last=False)


class _AudioTranscode(_Output):
    """Audio of another codec (AAC, MP3, PCM...), decoded, resampled to 48 kHz stereo and
    encoded to Opus in 20 ms packets."""

    def __init__(self, stream: av.stream.Stream, port: int, payload_type: int) -> None:
        super().__init__(stream, port, payload_type)
        self.resampler = AudioResampler(format="s16", layout="stereo", rate=OPUS_CLOCK_RATE)
        self.fifo = AudioFifo()
        self.encoder: Any = av.CodecContext.create("libopus", "w")
        self.encoder.sample_rate = OPUS_CLOCK_RATE
        self.encoder.layout = "stereo"
        self.encoder.format = "s16"
        self.encoder.bit_rate = 96_000
        self.encoder.options = {"frame_duration": "20", "application": "audio"}
        self.encoder.open()
        self.loop_start: int | None = None  # the loop's first RTP timestamp
        self.samples = 0  # encoded in this loop

    def packets(self, packet: av.Packet, offset: float) -> list[bytes]:
        if self.loop_start is None:
            self.loop_start = round(offset * OPUS_CLOCK_RATE)
        out = []
        decoder: Any = self.stream.codec_context
        for frame in decoder.decode(packet):
            for resampled in self.resampler.resample(frame):
                resampled.pts = None
                self.fifo.write(resampled)
        while self.fifo.samples >= OPUS_FRAME_SAMPLES:
            samples = self.fifo.read(OPUS_FRAME_SAMPLES)
            assert samples is not None
            samples.pts = self.samples
            samples.time_base = Fraction(1, OPUS_CLOCK_RATE)
            timestamp = self.loop_start + self.samples
            self.samples += OPUS_FRAME_SAMPLES
            for encoded in self.encoder.encode(samples):
                out += self.rtp.packetize([bytes(encoded)], timestamp, marker_on_last=False)
        return out

    def restart(self) -> None:
        self.stream.codec_context.flush_buffers()
        self.fifo = AudioFifo()
        self.resampler = AudioResampler(format="s16", layout="stereo", rate=OPUS_CLOCK_RATE)
        self.loop_start = None
        self.samples = 0


def _timestamp(pts: int | None, time_base: Fraction | None, offset: float, clock_rate: int) -> int:
    seconds = float(pts * time_base) if pts is not None and time_base is not None else 0.0
    return round((seconds + offset) * clock_rate)


class FileSource:
    """Plays the file until :meth:`stop`; ``run`` is the blocking loop."""

    def __init__(
        self,
        path: str,
        host: str,
        *,
        video_port: int = 0,
        audio_port: int = 0,
        video_codec: str = "h264",
        video_pt: int = 96,
        audio_pt: int = 111,
    ) -> None:
        if not video_port and not audio_port:
            raise ValueError("neither a video nor an audio port to send to")
        if video_codec not in VIDEO_CODECS:
            raise ValueError(f"video codec {video_codec!r}, expected one of {', '.join(VIDEO_CODECS)}")
        self.path = path
        self.container = _open(path)
        streams = _wanted_streams(self.container, path, audio=bool(audio_port), video=bool(video_port))
        self.outputs: list[_Output] = []
        for stream in streams:
            name = stream.codec_context.name
            if stream.type == "video":
                if name == video_codec == "h264":
                    self.outputs.append(_H264PassThrough(stream, video_port, video_pt))
                else:
                    self.outputs.append(_VideoTranscode(stream, video_port, video_pt, video_codec))
            elif name == "opus":
                self.outputs.append(_OpusPassThrough(stream, audio_port, audio_pt))
            else:
                self.outputs.append(_AudioTranscode(stream, audio_port, audio_pt))
        self.destination = Destination(host)
        self.stopping = False
        self.loops = 0

    def stop(self) -> None:
        self.stopping = True

    def _passes(self) -> Iterator[tuple[av.Packet, _Output, float, float]]:
        """Every packet of the file, again and again, with its output, its due time in seconds
        from the start of the first pass, and what to add to its time in the file to get there
        (the loops so far)."""
        by_stream = {output.stream.index: output for output in self.outputs}
        offset = 0.0
        while True:
            first: float | None = None
            last = 0.0
            read = False
            for packet in self.container.demux([output.stream for output in self.outputs]):
                if packet.size == 0 or packet.time_base is None:
                    continue  # the demuxer's flush packets
                stamp = packet.dts if packet.dts is not None else packet.pts
                if stamp is None:
                    continue
                seconds = float(stamp * packet.time_base)
                if first is None:
                    first = seconds
                end = seconds + float((packet.duration or 0) * packet.time_base)
                last = max(last, end)
                read = True
                yield packet, by_stream[packet.stream.index], max(offset + seconds - first, offset), offset - first
            if not read:
                raise FileSourceError(f"{self.path}: nothing left to read")
            offset += max(last - (first or 0.0), MIN_LOOP_SECONDS)
            self.loops += 1
            self.container.seek(0)
            for output in self.outputs:
                output.restart()

    def run(self, parent: int | None = None) -> None:
        """Send until :meth:`stop` (or until the process's parent is no longer ``parent``).
        Raises FileSourceError if the file cannot be read on."""
        start = time.monotonic()
        next_parent_check = start + PARENT_CHECK_INTERVAL
        try:
            for packet, output, due, shift in self._passes():
                if self.stopping:
                    break
                now = time.monotonic()
                if due - (now - start) > 0:
                    time.sleep(due - (now - start))
                elif (now - start) - due > MAX_LATENESS:
                    start = now - due  # a stall: go on from here rather than burst
                try:
                    packets = output.packets(packet, shift)
                except av.FFmpegError as error:  # one broken packet: it is skipped
                    logger.debug("%s: packet skipped: %s", self.path, error)
                    continue
                self.destination.send(packets, output.port)
                if parent is not None and now >= next_parent_check:
                    next_parent_check = now + PARENT_CHECK_INTERVAL
                    if os.getppid() != parent:
                        break
        except av.FFmpegError as error:
            raise FileSourceError(f"{self.path}: cannot be read on ({_reason(error)})") from None
        finally:
            self.destination.close()
            self.container.close()


def filesource_command(
    path: str,
    host: str,
    *,
    video_port: int = 0,
    audio_port: int = 0,
    video_codec: str = "h264",
    video_pt: int = 96,
    audio_pt: int = 111,
    exit_with_parent: bool = True,
) -> list[str]:
    """The command that runs the file source with this Python, sending to ``host``."""
    command = [
        sys.executable, "-m", "fanout.sources.filesource", path,
        "--host", host,
        "--video-port", str(video_port),
        "--audio-port", str(audio_port),
        "--video-codec", video_codec,
        "--video-pt", str(video_pt),
        "--audio-pt", str(audio_pt),
    ]  # fmt: skip
    if exit_with_parent:
        command.append("--exit-with-parent")
    return command


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fanout.sources.filesource", description="Play a media file as RTP over UDP, looped."
    )
    parser.add_argument("file", help="the media file (any container and codec FFmpeg reads)")
    parser.add_argument("--host", default="127.0.0.1", help="where to send (default: %(default)s)")
    parser.add_argument("--video-port", type=int, default=0, help="UDP port for video RTP; 0 sends no video")
    parser.add_argument("--audio-port", type=int, default=0, help="UDP port for Opus RTP; 0 sends no audio")
    parser.add_argument("--video-codec", choices=VIDEO_CODECS, default="h264", help="the codec the video goes out in")
    parser.add_argument("--video-pt", type=int, default=96, help="video RTP payload type")
    parser.add_argument("--audio-pt", type=int, default=111, help="Opus RTP payload type")
    parser.add_argument("--exit-with-parent", action="store_true", help="exit when the parent process goes away")
    arguments = parser.parse_args(argv)
    if not arguments.video_port and not arguments.audio_port:
        parser.error("give --video-port, --audio-port or both")
    for name in ("video_port", "audio_port"):
        if not 0 <= getattr(arguments, name) < 65536:
            parser.error(f"--{name.replace('_', '-')} must be a UDP port")
    for name in ("video_pt", "audio_pt"):
        if not 0 <= getattr(arguments, name) < 128:
            parser.error(f"--{name.replace('_', '-')} must be from 0 to 127")
    return arguments


def main(argv: Sequence[str] | None = None) -> None:
    parent = os.getppid()
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr, format="filesource: %(message)s")
    arguments = parse_arguments(argv)
    try:
        source = FileSource(
            arguments.file,
            arguments.host,
            video_port=arguments.video_port,
            audio_port=arguments.audio_port,
            video_codec=arguments.video_codec,
            video_pt=arguments.video_pt,
            audio_pt=arguments.audio_pt,
        )
    except FileSourceError as error:
        logger.error("%s", error)
        sys.exit(FILE_ERROR_STATUS)
    except OSError as error:
        logger.error("cannot send to %s: %s", arguments.host, error)
        sys.exit(1)

    def stop(signal_number: int, frame: FrameType | None) -> None:
        source.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        source.run(parent if arguments.exit_with_parent else None)
    except FileSourceError as error:
        logger.error("%s", error)
        sys.exit(FILE_ERROR_STATUS)


if __name__ == "__main__":
    main()
