from __future__ import annotations

import base64

import pytest
from fanout.sources.rtsp.auth import Challenge, Credentials, RtspAuthError, authorization

GSTREAMER_CHALLENGE = 'Digest realm="GStreamer RTSP Server", nonce="8351830d7dc688c1"'


def test_digest_without_qop_as_gstreamer_asks_and_accepts() -> None:
    header = authorization(
        [Challenge.parse(GSTREAMER_CHALLENGE)], Credentials("viewer", "s3cret"), "DESCRIBE", "rtsp://127.0.0.1:18555/stream"
    )
    # What the real server accepted (tests/sources/rtsp/data/gstreamer_describe.txt answered it).
    assert header == (
        'Digest username="viewer", realm="GStreamer RTSP Server", nonce="8351830d7dc688c1", '
        'uri="rtsp://127.0.0.1:18555/stream", response="a2f32ac8151e282e482fd3305cb37512"'
    )


def test_digest_with_qop_auth_matches_rfc_2617s_example() -> None:
    challenge = Challenge.parse(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    header = authorization(
        [challenge], Credentials("Mufasa", "Circle Of Life"), "GET", "/dir/index.html", cnonce="0a4f113b"
    )
    assert 'response="6629fae49393a05397450978507c4ef1"' in header
    assert "qop=auth, nc=00000001, cnonce=\"0a4f113b\"" in header
    assert 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in header


def test_digest_is_preferred_to_basic_and_basic_is_used_alone() -> None:
    credentials = Credentials("viewer", "s3cret")
    both = [Challenge.parse('Basic realm="cam"'), Challenge.parse(GSTREAMER_CHALLENGE)]
    assert authorization(both, credentials, "DESCRIBE", "rtsp://cam/").startswith("Digest ")
    basic = authorization([Challenge.parse('Basic realm="cam"')], credentials, "DESCRIBE", "rtsp://cam/")
    assert basic == "Basic " + base64.b64encode(b"viewer:s3cret").decode()


def test_challenge_parameters_keep_quoted_commas_and_escapes() -> None:
    challenge = Challenge.parse(r'Digest realm="a, \"b\"", nonce=abc, stale=FALSE')
    assert challenge.scheme == "digest"
    assert challenge.parameters == {"realm": 'a, "b"', "nonce": "abc", "stale": "FALSE"}


@pytest.mark.parametrize(
    ("challenges", "reason"),
    [
        (["Negotiate abc"], "does not speak"),
        (['Digest realm="x"'], "without realm or nonce"),
        (['Digest realm="x", nonce="y", algorithm=SHA-256'], "only MD5"),
        (['Digest realm="x", nonce="y", qop="auth-int"'], "only auth"),
    ],
)
def test_challenges_fanout_cannot_answer_are_named(challenges: list[str], reason: str) -> None:
    with pytest.raises(RtspAuthError, match=reason):
        authorization([Challenge.parse(c) for c in challenges], Credentials("u", "p"), "DESCRIBE", "rtsp://cam/")


def test_a_malformed_challenge_is_refused() -> None:
    with pytest.raises(RtspAuthError):
        Challenge.parse('Digest realm="unterminated')
