from __future__ import annotations

import pytest
from fanout.whep.sdpfrag import SdpFragError, parse_sdpfrag


def test_candidates_are_read_with_their_mid() -> None:
    fragment = parse_sdpfrag(
        "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n"
        "m=audio 9 RTP/AVP 0\r\na=mid:0\r\n"
        "a=candidate:1 1 UDP 2130706431 127.0.0.1 53000 typ host\r\na=end-of-candidates\r\n"
    )
    assert (fragment.ice_ufrag, fragment.ice_pwd) == ("EsAw", "P2uYro0UCOQ4zxjKXaWCBui1")
    assert fragment.candidates == [("0", "candidate:1 1 UDP 2130706431 127.0.0.1 53000 typ host")]
    assert fragment.end_of_candidates


def test_a_body_that_is_not_sdp_is_refused() -> None:
    with pytest.raises(SdpFragError, match="line 1"):
        parse_sdpfrag("hello\r\n")
