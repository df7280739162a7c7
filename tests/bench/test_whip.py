"""``fanout bench whip``: its publisher's offer is one fanout's WHIP endpoint takes as OBS's
(Opus and VP8 routed by payload type), and bad options are refused with the reason."""

from __future__ import annotations

import pytest
from fanout.plugins.streaming.config import parse_mountpoint
from fanout.whip.offer import read_offer
from fanout_bench.load.ice import IceClient
from fanout_bench.whip import build_parser, whip_offer


def test_the_bench_publishers_offer_feeds_both_streams_by_payload_type() -> None:
    config, _ = parse_mountpoint("bench-whip", {
        "id": 2, "type": "whip",
        "media": [{"type": "audio", "mid": "a", "codec": "opus", "pt": 111},
                  {"type": "video", "mid": "v", "codec": "vp8", "pt": 96}],
    })  # fmt: skip

    offer = read_offer(whip_offer(IceClient(controlling=True), "AB:" * 31 + "AB"), config.streams)

    assert offer.description.setup == "actpass" and not offer.description.candidates
    assert offer.routes() == [
        {"index": 0, "mid": "0", "payload_types": [111]},
        {"index": 1, "mid": "1", "payload_types": [96]},
    ]
    assert offer.video_indexes() == [1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--viewers", "0"], "at least 1"),
        (["--viewers", "one,two"], "viewer counts separated by commas"),
        (["--srtp", "des"], "invalid choice"),
    ],
)
def test_bad_options_are_refused_with_the_reason(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(argv)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err
