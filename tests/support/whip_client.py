"""Debian's simple-whip-client (Meetecho's, on GStreamer's webrtcbin) as a test's publisher.

Debian 12 links ``whip-client`` with libsoup 2, while GStreamer's libnice pulls in libsoup 3
(through gupnp-igd), and libsoup 3 aborts a process where it finds libsoup 2's symbols
("libsoup2 symbols detected"). ``soup_check_shim`` builds a preload library that hides
that one symbol from libsoup 3's check (UPnP, the only user of libsoup 3 there, finds no
router in a test namespace); nothing else of the client changes. Even so the two libsoups in
one process now and then corrupt its heap as ICE gathering starts, before the client sends
its offer: glibc aborts it ("munmap_chunk(): invalid pointer"; 1 start in ~20 on a busy
machine). ``restart_if_aborted`` starts it again then, a few times at most: fanout never saw
that client."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

SHIM_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>
typedef int gboolean;
typedef void *gpointer;
gboolean g_module_symbol(void *module, const char *name, gpointer *symbol) {
    static gboolean (*real)(void *, const char *, gpointer *);
    if (!real) real = dlsym(RTLD_NEXT, "g_module_symbol");
    if (name && strcmp(name, "soup_uri_new") == 0) { if (symbol) *symbol = 0; return 0; }
    return real(module, name, symbol);
}
"""
MAX_ABORTS = 3
AUDIO = (
    "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! queue ! opusenc ! rtpopuspay pt=100 ! "
    "queue ! application/x-rtp,media=audio,encoding-name=OPUS,payload=100"
)
VIDEO = {
    "vp8": "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 ! videoconvert ! "
    "queue ! vp8enc deadline=1 keyframe-max-dist=30 ! rtpvp8pay pt=96 ! queue ! "
    "application/x-rtp,media=video,encoding-name=VP8,payload=96",
    "h264": "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 ! videoconvert ! "
    "queue ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! "
    "video/x-h264,profile=constrained-baseline ! rtph264pay pt=97 config-interval=-1 ! queue ! "
    "application/x-rtp,media=video,encoding-name=H264,payload=97",
}


def soup_check_shim(folder: Path) -> Path:
    source, library = folder / "soupshim.c", folder / "libsoupshim.so"
    if not library.exists():
        source.write_text(SHIM_SOURCE)
        subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(library), str(source), "-ldl"], check=True)
    return library


class WhipClient:
    """``whip-client`` publishing test audio and video (``video``: "vp8" or "h264") until stopped."""

    def __init__(self, url: str, video: str, shim: Path, token: str | None = None) -> None:
        self.command = ["whip-client", "-u", url, "-A", AUDIO, "-V", VIDEO[video], "-n", "-o", "-l", "4"]
        if token is not None:
            self.command += ["-t", token]
        self.env = dict(os.environ, LD_PRELOAD=str(shim))
        self.process: subprocess.Popen[str] | None = None
        self.aborted: list[str] = []  # what each start that aborted printed

    def start(self) -> WhipClient:
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env
        )
        return self

    def restart_if_aborted(self) -> None:
        """Starts the client again if it aborted (SIGABRT), at most MAX_ABORTS times."""
        assert self.process is not None
        if self.process.poll() != -signal.SIGABRT or len(self.aborted) >= MAX_ABORTS:
            return
        output, _ = self.process.communicate(timeout=10)
        self.aborted.append(output)
        self.start()

    def kill(self) -> str:
        """Killed as a crash would be: no DELETE. Returns what it printed (each start that aborted first)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        output, _ = self.process.communicate(timeout=10)
        return "".join(f"{earlier}\n[aborted; started again]\n" for earlier in self.aborted) + output
