"""Reading a publisher's offer for a whip mountpoint: which stream each m-line feeds, the
routes the engine gets, and the offers refused with their HTTP status."""

from __future__ import annotations

from pathlib import Path

import pytest

from fanout.plugins.streaming.config import MountpointConfig, parse_mountpoint
from fanout.whip.offer import MID_URI, RID_URI, WhipOfferError, read_offer

DATA = Path(__file__).parent / "data"


def whip_mountpoint(video: dict[str, object] | None = None) -> MountpointConfig:
    media: list[dict[str, object]] = [
        {"type": "audio", "mid": "a", "codec": "opus", "pt": 100},
        video or {"type": "video", "mid": "v", "codec": "h264", "pt": 101},
    ]
    config, unsupported = parse_mountpoint("obs", {"type": "whip", "id": 7, "media": media})
    assert unsupported == []
    return config


def test_obs_offer_feeds_audio_and_video_on_its_own_payload_types() -> None:
    offer = read_offer((DATA / "obs_h264_opus.sdp").read_text(), whip_mountpoint().streams)

    audio, video = offer.media
    assert audio is not None and video is not None
    assert (audio.mid, audio.stream.mid, audio.codec.payload_type) == ("0", "a", 111)
    assert (video.mid, video.stream.mid, video.codec.payload_type) == ("1", "v", 96)
    assert video.codec.rtcp_feedback == ("nack", "nack pli", "goog-remb")
    assert offer.routes() == [
        {"index": 0, "mid": "0", "payload_types": [111]},
        {"index": 1, "mid": "1", "payload_types": [96]},
    ]
    assert offer.extension_id(MID_URI) is None  # OBS sends no mid extension: the engine routes by payload type


def test_simulcast_layers_become_substreams_highest_first() -> None:
    video = {"type": "video", "mid": "v", "codec": "h264", "pt": 101, "simulcast": True}
    offer = read_offer((DATA / "obs_simulcast.sdp").read_text(), whip_mountpoint(video).streams)

    accepted = offer.media[1]
    assert accepted is not None and accepted.rids == ("0", "1", "2")
    assert [accepted.substream_of(rid) for rid in ("0", "1", "2")] == [2, 1, 0]
    assert offer.routes()[1:] == [
        {"index": 1 + 2 * 65536, "mid": "1", "rid": "0"},
        {"index": 1 + 1 * 65536, "mid": "1", "rid": "1"},
        {"index": 1, "mid": "1", "rid": "2"},
    ]
    assert (offer.extension_id(MID_URI), offer.extension_id(RID_URI)) == (1, 2)
    assert [uri for _, uri in accepted.header_extensions] == [MID_URI, RID_URI]  # no repaired-rid, no abs-send-time
    assert accepted.codec.rtcp_feedback == ("nack", "nack pli")  # no transport-cc


def test_named_layers_are_ordered_by_their_names() -> None:
    text = (DATA / "obs_simulcast.sdp").read_text()
    text = text.replace("a=rid:0 send\na=rid:1 send\na=rid:2 send\na=simulcast:send 0;1;2", "a=rid:l send\na=rid:h send\na=simulcast:send l;h")
    video = {"type": "video", "mid": "v", "codec": "h264", "pt": 101, "simulcast": True}
    accepted = read_offer(text, whip_mountpoint(video).streams).media[1]

    assert accepted is not None and accepted.rids == ("l", "h")
    assert (accepted.substream_of("h"), accepted.substream_of("l")) == (2, 1)


def test_layers_offered_to_a_stream_without_simulcast_feed_it_the_highest() -> None:
    offer = read_offer((DATA / "obs_simulcast.sdp").read_text(), whip_mountpoint().streams)

    accepted = offer.media[1]
    assert accepted is not None and accepted.rids == ("0", "1", "2")  # all answered, as OBS needs
    assert offer.routes()[1:] == [{"index": 1, "mid": "1", "rid": "0"}]


def test_an_m_line_with_no_codec_of_the_mountpoint_is_rejected() -> None:
    video = {"type": "video", "mid": "v", "codec": "vp8", "pt": 101}
    offer = read_offer((DATA / "obs_h264_opus.sdp").read_text(), whip_mountpoint(video).streams)

    assert offer.media[0] is not None and offer.media[1] is None


def test_an_offer_with_no_codec_of_the_mountpoint_gets_422() -> None:
    config, _ = parse_mountpoint("vp8", {"type": "whip", "id": 8, "media": [{"type": "video", "mid": "v", "codec": "vp8", "pt": 96}]})
    with pytest.raises(WhipOfferError) as refused:
        read_offer((DATA / "obs_h264_opus.sdp").read_text(), config.streams)
    assert refused.value.status == 422
    assert "video vp8" in str(refused.value)


@pytest.mark.parametrize(
    "text",
    [
        "not sdp at all",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",  # no m-line
        (DATA / "obs_h264_opus.sdp").read_text().replace("a=fingerprint:", "a=x-fingerprint:"),
        (DATA / "obs_h264_opus.sdp").read_text().replace("a=ice-ufrag:8aHx\n", ""),
    ],
    ids=["not-sdp", "no-m-line", "no-fingerprint", "no-ice-ufrag"],
)
def test_malformed_offers_get_400(text: str) -> None:
    with pytest.raises(WhipOfferError) as refused:
        read_offer(text, whip_mountpoint().streams)
    assert refused.value.status == 400


def test_a_recvonly_m_line_is_not_taken() -> None:
    text = (DATA / "obs_h264_opus.sdp").read_text().replace("a=mid:0\na=sendonly", "a=mid:0\na=recvonly")
    offer = read_offer(text, whip_mountpoint().streams)

    assert offer.media[0] is None and offer.media[1] is not None


def test_layers_without_the_rid_extension_feed_only_the_highest_substream() -> None:
    text = (DATA / "obs_simulcast.sdp").read_text().replace("a=extmap:2 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\n", "")
    video = {"type": "video", "mid": "v", "codec": "h264", "pt": 101, "simulcast": True}
    offer = read_offer(text, whip_mountpoint(video).streams)

    assert offer.routes()[1:] == [{"index": 1 + 2 * 65536, "mid": "1", "payload_types": [96]}]
