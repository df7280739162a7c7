"""A ``create`` may come from anyone who reaches the Janus API (the Streaming plugin's
``admin_key`` is optional): its strings never become lines of a viewer's SDP offer, are
bounded in size, and its sources never take a system port. Janus 1.1.2 takes all of
these (it bound port 22 as root); fanout refuses them with the Streaming plugin's
"can't create" (456) and "invalid element" (454) errors."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc.sdp import SessionDescription
from fanout.config.jcfg import ConfigError, load, parse
from fanout.plugins.streaming.config import MountpointConfig, mountpoints_from_file, streaming_settings_from_file
from fanout.plugins.streaming.errors import StreamingError
from fanout.plugins.streaming.management import edited_mountpoint, mountpoint_from_create
from fanout.plugins.streaming.viewer import ViewerTrack
from fanout.webrtc.sdp import Candidate, TransportDescription, build_offer, parse_description

from tests.plugins.streaming.management_cases import FOREIGN_CANDIDATE, HOSTILE_CASES, STREAMING_CONFIG, run_case
from tests.support.janus_client import JanusHttpClient
from tests.support.ports import free_ports
from tests.support.server import FanoutProcess, write_config

# What an attacker appends to a value: a line that sends every viewer's ICE to their host.
FOREIGN = "\r\n" + FOREIGN_CANDIDATE
INJECTED = "v" + FOREIGN
SERVER_CANDIDATE = Candidate("1", 1, "udp", 2130706431, "127.0.0.1", 10000, "host")
TRANSPORT = TransportDescription("fNoU", "fanoutIcePasswordOf24ch", ("sha-256", "AB:CD"), "actpass", [SERVER_CANDIDATE])


def video(**fields: Any) -> dict[str, Any]:
    return {"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp8"} | fields


def create(**fields: Any) -> dict[str, Any]:
    return {"request": "create", "type": "rtp", "id": 7, "media": [video()]} | fields


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (create(media=[video(mid=INJECTED)]), "media[0]: 'mid' must not contain control characters (CR, LF, ...)"),
        (create(media=[video(mid="a b")]), "media[0]: 'mid' must be 1 to 64 letters, digits or !#$%&'*+-.^_`{|}~"),
        (create(media=[video(mid="m" * 65)]), "media[0]: 'mid' must be 1 to 64 letters"),
        (create(media=[video(fmtp="x=1\r\n" + FOREIGN_CANDIDATE)]), "media[0]: 'fmtp' must not contain control"),
        (create(media=[video(fmtp="x=1\x00")]), "media[0]: 'fmtp' must not contain control"),
        (create(media=[video(fmtp="x" * 4097)]), "media[0]: 'fmtp' is longer than 4096 characters"),
        (create(media=[video(msid="s t\r\n" + FOREIGN_CANDIDATE)]), "media[0]: 'msid' must not contain control"),
        (create(media=[video(msid="a b c")]), "media[0]: 'msid' must be a stream id and a track id"),
        (create(media=[video(label="camera\nfront")]), "media[0]: 'label' must not contain control"),
        (create(media=[video(label="l" * 257)]), "media[0]: 'label' is longer than 256 characters"),
        (create(media=None, video=True, videoport=0, videopt=96, videocodec="vp8", videofmtp="a\r\nb"),
         "'videofmtp' must not contain control"),
        (create(name="n\r\nforged log line"), "'name' must not contain control"),
        (create(description="x" * 500_000), "'description' is longer than 4096 characters"),
        (create(metadata="x" * 4097), "'metadata' is longer than 4096 characters"),
        (create(secret="s" * 257), "'secret' is longer than 256 characters"),
        (create(description="\ud800"), "'description' is not valid Unicode text"),
        (create(media=[video(mid=f"v{index}") for index in range(65)]), "'media' has more than 64 streams"),
    ],
)  # fmt: skip
def test_create_refuses_strings_that_would_become_sdp_lines_or_are_too_long(body: dict[str, Any], reason: str) -> None:
    body = {key: value for key, value in body.items() if value is not None}
    with pytest.raises(StreamingError) as refused:
        mountpoint_from_create(body, set())
    assert refused.value.code == 456
    assert refused.value.reason.startswith(f"Can't add 'rtp' stream: {reason}")
    assert "\n" not in refused.value.reason and "\r" not in refused.value.reason


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"url": "rtsp://camera/\r\nX-Injected: 1"}, "'url' must not contain control characters (CR, LF, ...)"),
        ({"url": "rtsp://camera/a b"}, "'url' must not contain spaces or (even %-encoded) control characters"),
        ({"url": "rtsp://us%0d%0aer:pw@camera/"}, "'url' must not contain spaces or (even %-encoded) control characters"),
        ({"rtsp_user": "me\r\nX-Injected: 1"}, "'rtsp_user' must not contain control"),
    ],
)  # fmt: skip
def test_rtsp_create_refuses_what_would_become_lines_of_its_requests(fields: dict[str, Any], reason: str) -> None:
    body = {"request": "create", "type": "rtsp", "id": 8, "url": "rtsp://camera/", "video": True} | fields
    with pytest.raises(StreamingError) as refused:
        mountpoint_from_create(body, set())
    assert refused.value.code == 456
    assert refused.value.reason.startswith(f"Can't add 'rtsp' stream: {reason}")


def test_create_refuses_privileged_source_ports_unless_allowed() -> None:
    for stream in (video(port=22), video(rtcpport=80), video(codec="h264", simulcast=True, port2=1023)):
        with pytest.raises(StreamingError) as refused:
            mountpoint_from_create(create(media=[stream]), set())
        assert refused.value.code == 456
        assert refused.value.reason.startswith("Can't add 'rtp' stream: port ")
        assert "is below 1024 (allow_privileged_ports = true in janus.plugin.streaming.jcfg allows it)" in refused.value.reason
    data = {"type": "data", "mid": "d", "port": 53}
    with pytest.raises(StreamingError, match="port 53 is below 1024"):
        mountpoint_from_create(create(media=[video(), data]), set())
    assert mountpoint_from_create(create(media=[video(port=22)]), set(), allow_privileged_ports=True).streams[0].port == 22
    assert mountpoint_from_create(create(media=[video(port=1024)]), set()).streams[0].port == 1024


def test_allow_privileged_ports_must_be_true_or_false() -> None:
    assert not streaming_settings_from_file(parse("general: {}", "s.jcfg")).allow_privileged_ports
    assert streaming_settings_from_file(parse("general: { allow_privileged_ports = true }", "s.jcfg")).allow_privileged_ports
    with pytest.raises(ConfigError, match="'allow_privileged_ports' must be true or false"):
        streaming_settings_from_file(parse('general: { allow_privileged_ports = "yes" }', "s.jcfg"))


def test_edit_refuses_the_strings_create_refuses() -> None:
    config = mountpoint_from_create(create(), set())
    for body, reason in (
        ({"new_secret": "s\r\nt"}, "Invalid element ('new_secret' must not contain control characters (CR, LF, ...): 's\\r\\nt')"),
        ({"new_pin": "1" * 257}, "Invalid element ('new_pin' is longer than 256 characters)"),
        ({"new_description": "x" * 500_000}, "Invalid element ('new_description' is longer than 4096 characters)"),
        ({"new_metadata": "\udfff"}, "Invalid element ('new_metadata' is not valid Unicode text)"),
    ):  # fmt: skip
        with pytest.raises(StreamingError) as refused:
            edited_mountpoint(config, body)
        assert (refused.value.code, refused.value.reason) == (454, reason)
    # Free text keeps its line breaks (as in Janus): they reach no SDP, and the file escapes them.
    assert edited_mountpoint(config, {"new_description": "two\r\nlines"}).description == "two\r\nlines"


def offer_lines(config: MountpointConfig) -> list[str]:
    media = [ViewerTrack.offered(stream, playoutdelay_ext=config.playoutdelay_ext).offer_media() for stream in config.streams]
    offer = build_offer(media, TRANSPORT, session_id=1, session_version=1)
    assert offer.endswith("\r\n") and "\n" not in offer.replace("\r\n", "") and "\r" not in offer.replace("\r\n", "")
    return offer.split("\r\n")[:-1]


def test_the_offer_for_the_strangest_mountpoint_create_accepts_has_only_fanouts_lines() -> None:
    odd_mid = "!#$%&'*+-.^_`{|}~"
    long_mid = "m" * 64
    config = mountpoint_from_create(
        create(
            name="ünïcode ☃ name",
            description="two\r\nlines " + FOREIGN_CANDIDATE,
            metadata='{"a":\n1}\r\n' + FOREIGN_CANDIDATE,
            media=[
                {"type": "audio", "mid": odd_mid, "label": "a label ☃ with spaces", "msid": "stream-1 track.1",
                 "port": 0, "pt": 111, "codec": "opus", "fmtp": "minptime=10;useinbandfec=1;x-note=☃"},
                video(mid=long_mid, msid="lone-track", codec="h264", fmtp="profile-level-id=42e01f;packetization-mode=1"),
            ],
        ),
        set(),
    )  # fmt: skip
    lines = offer_lines(config)
    assert [line for line in lines if line.startswith("a=candidate")] == [f"a={SERVER_CANDIDATE}"] * 2
    assert [line for line in lines if line.startswith("a=mid:")] == [f"a=mid:{odd_mid}", f"a=mid:{long_mid}"]
    assert f"a=group:BUNDLE {odd_mid} {long_mid}" in lines
    assert [line for line in lines if line.startswith("a=msid:")] == ["a=msid:stream-1 track.1", "a=msid:fanout lone-track"]

    ours = parse_description("\r\n".join(lines))
    assert [media.mid for media in ours.media] == [odd_mid, long_mid]
    assert ours.candidates == [SERVER_CANDIDATE]
    assert [media.codecs[0].fmtp for media in ours.media] == [
        "minptime=10;useinbandfec=1;x-note=☃",
        "profile-level-id=42e01f;packetization-mode=1",
    ]
    aiortc = SessionDescription.parse("\r\n".join(lines) + "\r\n")
    assert [media.rtp.muxId for media in aiortc.media] == [odd_mid, long_mid]
    assert [len(media.ice_candidates) for media in aiortc.media] == [1, 1]
    assert [media.msid for media in aiortc.media] == ["stream-1 track.1", "fanout lone-track"]


HOSTILE_FILE = f"""general: {{
}}
good: {{
	type = "rtp"
	id = 1
	media = ( {{ type = "video", mid = "v", port = 0, pt = 96, codec = "vp8" }} )
}}
hostile: {{
	type = "rtp"
	id = 2
	media = ( {{ type = "video", mid = "v\\r\\n{FOREIGN_CANDIDATE}", port = 0, pt = 96, codec = "vp8" }} )
}}
"""


def test_a_mountpoint_file_with_an_unsafe_string_starts_without_that_mountpoint(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        mountpoints = mountpoints_from_file(parse(HOSTILE_FILE, "janus.plugin.streaming.jcfg"))
    assert [config.id for config in mountpoints] == [1]
    [record] = caplog.records
    assert record.getMessage().startswith(
        "janus.plugin.streaming.jcfg:8: mountpoint 'hostile': media[0]: "
        "'mid' must not contain control characters (CR, LF, ...): 'v\\r\\na=candidate:"
    )
    assert record.getMessage().endswith("...; the mountpoint is skipped")


async def test_a_server_open_to_anyone_says_so_and_refuses_hostile_creates(tmp_path: Path) -> None:
    folder = tmp_path / "config"
    addresses = write_config(folder, "")
    streaming_file = folder / "janus.plugin.streaming.jcfg"
    streaming_file.write_text(HOSTILE_FILE)
    with FanoutProcess(folder) as server:
        assert "mountpoint 'hostile': media[0]: 'mid' must not contain control characters" in server.output
        assert "the mountpoint is skipped" in server.output
        assert "janus.plugin.streaming: no admin_key: anyone who reaches the Janus API can create mountpoints" in server.output
        async with aiohttp.ClientSession() as http:
            client = JanusHttpClient(http, addresses.janus_url)
            await client.create()
            handle = await client.attach()

            async def ask(body: dict[str, Any]) -> dict[str, Any]:
                reply = await client.message(handle, body)
                return reply["plugindata"]["data"]  # type: ignore[no-any-return]

            listed = await ask({"request": "list"})
            assert [entry["id"] for entry in listed["list"]] == [1]
            refused = await ask(create(id=3, permanent=True, media=[video(mid=INJECTED)]))
            assert refused["error_code"] == 456 and "'mid' must not contain control characters" in refused["error"]
            refused = await ask(create(id=4, permanent=True, media=[video(port=22)]))
            assert refused == {
                "streaming": "event",
                "error_code": 456,
                "error": "Can't add 'rtp' stream: port 22 is below 1024 "
                "(allow_privileged_ports = true in janus.plugin.streaming.jcfg allows it)",
            }
            refused = await ask({"request": "edit", "id": 1, "new_description": "x" * 500_000})
            assert refused["error_code"] == 454

            # What the strangest accepted create gives a viewer: fanout's lines, and only those.
            odd = create(id=5, description="two\r\nlines" + FOREIGN, media=[video(mid="!#$%&'*+-.^_`{|}~", msid="s t")])
            assert (await ask(odd))["streaming"] == "created"
            viewer = await client.attach()
            await client.message(viewer, {"request": "watch", "id": 5})
            offer = (await client.plugin_event(viewer))["jsep"]["sdp"]
            lines = offer.split("\r\n")
            assert lines[-1] == "" and not any("\r" in line or "\n" in line for line in lines)
            [candidate] = [line for line in lines if line.startswith("a=candidate")]
            assert candidate.endswith(f" 127.0.0.1 {addresses.webrtc_port} typ host")
            assert [media.mid for media in parse_description(offer).media] == ["!#$%&'*+-.^_`{|}~"]
            [media] = SessionDescription.parse(offer).media
            assert (media.rtp.muxId, media.msid, len(media.ice_candidates)) == ("!#$%&'*+-.^_`{|}~", "s t", 1)
            await client.close()
    assert streaming_file.read_text() == HOSTILE_FILE  # nothing was saved
    assert [config.id for config in mountpoints_from_file(load(streaming_file))] == [1]


async def test_privileged_ports_can_be_allowed_in_the_plugin_configuration(tmp_path: Path) -> None:
    folder = tmp_path / "config"
    addresses = write_config(folder, "")
    (folder / "janus.plugin.streaming.jcfg").write_text('general: {\n\tadmin_key = "k"\n\tallow_privileged_ports = true\n}\n')
    with FanoutProcess(folder) as server:
        assert "no admin_key" not in server.output
        async with aiohttp.ClientSession() as http:
            client = JanusHttpClient(http, addresses.janus_url)
            await client.create()
            handle = await client.attach()
            reply = (await client.message(handle, create(admin_key="k", media=[video(port=1)])))["plugindata"]["data"]
            if os.geteuid() == 0:
                assert reply["streaming"] == "created" and reply["stream"]["ports"][0]["port"] == 1
            else:  # the kernel refuses, not the plugin
                assert reply["error_code"] == 456 and "Permission denied" in reply["error"]
            await client.close()


JANUS_REPLIES = json.loads((Path(__file__).parent / "data" / "janus_hostile.json").read_text())["recordings"]["plain"]
CONTROL = "must not contain control characters (CR, LF, ...)"
# fanout's reply to each step of HOSTILE_CASES["create_hostile"], where Janus 1.1.2 created or edited.
def quoted(text: str) -> str:
    """How an error quotes a refused value: its first 40 characters, escaped."""
    return repr(text[:40]) + ("..." if len(text) > 40 else "")


FANOUT_REPLIES = [
    (456, f"Can't add 'rtp' stream: media[0]: 'mid' {CONTROL}: {quoted('v' + FOREIGN)}"),
    (456, f"Can't add 'rtp' stream: media[0]: 'fmtp' {CONTROL}: {quoted('x=1' + FOREIGN)}"),
    (456, f"Can't add 'rtp' stream: media[0]: 'msid' {CONTROL}: {quoted('s t' + FOREIGN)}"),
    (456, "Can't add 'rtp' stream: media[0]: 'mid' must be 1 to 64 letters, digits or !#$%&'*+-.^_`{|}~ (RFC 8843), "
          f"not {quoted('m' * 65)}"),
    (456, f"Can't add 'rtp' stream: 'name' {CONTROL}: {quoted('n' + chr(13) + chr(10) + 'forged log line')}"),
    (456, "Can't add 'rtp' stream: 'description' is longer than 4096 characters"),
    (456, "Can't add 'rtp' stream: port 22 is below 1024 (allow_privileged_ports = true in janus.plugin.streaming.jcfg allows it)"),
    (454, f"Invalid element ('new_secret' {CONTROL}: {quoted('s' + chr(13) + chr(10) + 't')})"),
]  # fmt: skip


async def test_what_janus_takes_from_a_creator_fanout_refuses(tmp_path: Path) -> None:
    folder = tmp_path / "config"
    addresses = write_config(folder, "")
    audio_port, video_port = free_ports(2)
    (folder / "janus.plugin.streaming.jcfg").write_text(
        STREAMING_CONFIG % {"general": "", "configured_id": "1", "audio_port": audio_port, "video_port": video_port}
    )
    bodies = HOSTILE_CASES["create_hostile"]
    with FanoutProcess(folder):
        async with aiohttp.ClientSession() as http:
            replies = await run_case(http, addresses.janus_url, bodies)
    for body, reply, janus_reply, (code, reason) in zip(
        bodies, replies, JANUS_REPLIES["create_hostile"], FANOUT_REPLIES, strict=True
    ):
        assert janus_reply["streaming"] in ("created", "edited"), body
        assert reply == {"streaming": "event", "error_code": code, "error": reason}, body
