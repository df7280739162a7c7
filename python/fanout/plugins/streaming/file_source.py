"""``live`` and ``ondemand`` mountpoints: fanout plays a media file.

The playing happens in a process of its own (:mod:`fanout.sources.filesource`, as the
test source), never in the asyncio loop: it reads, transcodes where needed, paces and
sends RTP to the ports of an engine mountpoint, which fans it out like any RTP source
(keyframe cache, renumbering, one packet copy per viewer in the engine's workers).

``live``: one player for the mountpoint, every viewer at the same moment of the file.
``ondemand``: each viewer starts the file from its beginning, so each has a player of
its own, feeding an engine mountpoint of its own (the "viewer feed", opened when its
PeerConnection is up and closed when it leaves). A viewer feed has the listed
mountpoint's streams, so nothing else in the plugin knows the difference.

A player that exits with an error (the file went away or was cut short since it was
checked) is logged, its viewers get an event (``source_error``), and it is started again
after ``FILE_RESTART_DELAY``; nothing else is disturbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
from collections.abc import Callable

from fanout.plugins.streaming.config import FILE_SOURCE_HOST, MountpointConfig
from fanout.sources.filesource import FileProbe, FileSourceError, filesource_command, probe

logger = logging.getLogger(__name__)

FILE_RESTART_DELAY = 5.0
STOP_TIMEOUT = 2.0
STDERR_LINE_LIMIT = 1000


async def checked_file(config: MountpointConfig) -> FileProbe:
    """The mountpoint's file, probed in a thread: FileSourceError if it cannot be played."""
    assert config.file is not None
    kinds = {stream.kind for stream in config.streams}
    return await asyncio.to_thread(probe, config.file.filename, audio="audio" in kinds, video="video" in kinds)


def player_command(config: MountpointConfig, ports: list[int]) -> list[str]:
    assert config.file is not None
    ports_by_kind = {stream.kind: port for stream, port in zip(config.streams, ports, strict=True)}
    streams = {stream.kind: stream for stream in config.streams}
    return filesource_command(
        config.file.filename,
        FILE_SOURCE_HOST,
        video_port=ports_by_kind.get("video", 0),
        audio_port=ports_by_kind.get("audio", 0),
        video_codec=streams["video"].codec.name if "video" in streams else "h264",
        video_pt=streams["video"].payload_type if "video" in streams else 96,
        audio_pt=streams["audio"].payload_type if "audio" in streams else 111,
    )


class FilePlayer:
    """One file source process feeding ``ports``, started again after an error until :meth:`stop`."""

    def __init__(self, config: MountpointConfig, ports: list[int], on_error: Callable[[str], None]) -> None:
        self.config = config
        self.command = player_command(config, ports)
        self.on_error = on_error
        self.process: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None
        self.starts = 0

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        """Ends the process (from the task, which may finish after this returns)."""
        if self.task is not None:
            self.task.cancel()

    async def stopped(self) -> None:
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)

    async def _run(self) -> None:
        try:
            while True:
                reason = await self._play_once()
                logger.error(
                    "mountpoint %s: playing %s stopped: %s; trying again in %.0f s",
                    self.config.id, self._filename, reason, FILE_RESTART_DELAY,
                )  # fmt: skip
                self.on_error(reason)
                await asyncio.sleep(FILE_RESTART_DELAY)
        finally:
            await self._end_process()

    @property
    def _filename(self) -> str | None:
        return self.config.file.filename if self.config.file is not None else None

    async def _play_once(self) -> str:
        """Runs the player until it exits; why it did."""
        self.process = await asyncio.create_subprocess_exec(
            *self.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.starts += 1
        logger.info("mountpoint %s: file source (pid %d) plays %s", self.config.id, self.process.pid, self._filename)
        assert self.process.stderr is not None
        last_line = ""
        async for line in self.process.stderr:
            text = line.decode("utf-8", "replace").strip()[:STDERR_LINE_LIMIT]
            if text:
                last_line = text.removeprefix("filesource: ")
        status = await self.process.wait()
        self.process = None
        return last_line or f"the player exited with status {status}"

    async def _end_process(self) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


__all__ = ["FILE_RESTART_DELAY", "FilePlayer", "FileSourceError", "checked_file", "player_command"]
