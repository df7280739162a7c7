"""The nodes' sealed messages: what opens, and what is refused with which status."""

from __future__ import annotations

import json
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fanout.cluster.sealed import MAX_AGE_SECONDS, NONCE_LENGTH, SealedRefused, Sealer, derive_key
from hypothesis import given, settings
from hypothesis import strategies as st

SECRET = "a cluster secret of some length"
NOW = 1_800_000_000.0


def refusal(sealer: Sealer, purpose: str, data: bytes, now: float = NOW) -> SealedRefused:
    with pytest.raises(SealedRefused) as caught:
        sealer.open(purpose, data, now)
    return caught.value


def test_a_sealed_message_opens_with_the_same_secret() -> None:
    body = {"mountpoint": 1, "streams": [{"mid": "v"}]}
    sealed = Sealer(SECRET).seal("relay-request", body, NOW)
    assert Sealer(SECRET).open("relay-request", sealed, NOW + 1) == body


def test_the_body_is_not_readable_in_the_sealed_bytes() -> None:
    sealed = Sealer(SECRET).seal("relay-request", {"origin_key": "c2VjcmV0IGtleSBieXRlcw=="}, NOW)
    assert b"origin_key" not in sealed and b"c2VjcmV0" not in sealed


def test_another_secret_is_refused_as_unauthentic_with_403() -> None:
    sealed = Sealer("another secret, same length").seal("relay-request", {"a": 1}, NOW)
    receiver = Sealer(SECRET)
    refused = refusal(receiver, "relay-request", sealed)
    assert (refused.kind, refused.status) == ("unauthentic", 403)
    assert "cluster secret" in refused.reason
    assert receiver.refusals == {"unauthentic": 1}


def test_a_message_sealed_for_another_purpose_is_refused() -> None:
    sealed = Sealer(SECRET).seal("relay-refresh", {"relay_id": "x"}, NOW)
    assert refusal(Sealer(SECRET), "relay-teardown", sealed).kind == "unauthentic"


def test_one_flipped_bit_is_refused() -> None:
    sealed = bytearray(Sealer(SECRET).seal("relay-request", {"a": 1}, NOW))
    sealed[-5] ^= 1
    assert refusal(Sealer(SECRET), "relay-request", bytes(sealed)).kind == "unauthentic"


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01" + bytes(20), b"\x02" + bytes(40), bytes(70_000)])
def test_short_long_or_unknown_versions_are_malformed_with_400(data: bytes) -> None:
    refused = refusal(Sealer(SECRET), "relay-request", data)
    assert (refused.kind, refused.status) == ("malformed", 400)


def test_a_replayed_message_is_refused_once_it_opened() -> None:
    sealed = Sealer(SECRET).seal("relay-request", {"a": 1}, NOW)
    receiver = Sealer(SECRET)
    receiver.open("relay-request", sealed, NOW)
    refused = refusal(receiver, "relay-request", sealed, NOW + 1)
    assert (refused.kind, refused.status) == ("replayed", 403)
    assert receiver.opened == 1 and receiver.refusals == {"replayed": 1}


@pytest.mark.parametrize("skew", [MAX_AGE_SECONDS + 0.5, -(MAX_AGE_SECONDS + 0.5)])
def test_a_message_sent_more_than_30_s_away_from_now_is_stale(skew: float) -> None:
    sealed = Sealer(SECRET).seal("relay-request", {"a": 1}, NOW)
    refused = refusal(Sealer(SECRET), "relay-request", sealed, NOW + skew)
    assert (refused.kind, refused.status) == ("stale", 403)


def test_a_stale_replay_stays_refused_after_its_nonce_is_forgotten() -> None:
    sealer = Sealer(SECRET)
    old = sealer.seal("relay-request", {"a": 1}, NOW)
    receiver = Sealer(SECRET)
    receiver.open("relay-request", old, NOW)
    receiver.open("relay-request", sealer.seal("relay-request", {"a": 2}, NOW + 40), NOW + 40)  # forgets the old nonce
    assert refusal(receiver, "relay-request", old, NOW + 40).kind == "stale"


def own_key_seal(plaintext: bytes, purpose: str = "relay-request") -> bytes:
    """A message sealed with the right key around a plaintext fanout would not write."""
    nonce = os.urandom(NONCE_LENGTH)
    return b"\x01" + nonce + AESGCM(derive_key(SECRET)).encrypt(nonce, plaintext, purpose.encode())


@pytest.mark.parametrize(
    "plaintext",
    [b"not json", b"\xff\xfe", b"[1, 2]", json.dumps({"sent": NOW}).encode(), json.dumps({"sent": "now", "body": {}}).encode(),
     json.dumps({"sent": True, "body": {}}).encode(), b'{"sent": NaN, "body": {}}', b"[" * 30_000 + b"]" * 30_000],
)  # fmt: skip
def test_a_plaintext_that_is_not_the_envelope_is_malformed_or_stale(plaintext: bytes) -> None:
    refused = refusal(Sealer(SECRET), "relay-request", own_key_seal(plaintext))
    assert refused.kind in ("malformed", "stale") and refused.status in (400, 403)


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        Sealer("")


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=300), purpose=st.sampled_from(["relay-request", "relay-refresh"]))
def test_fuzz_the_opener_refuses_random_bytes_with_its_own_error(data: bytes, purpose: str) -> None:
    receiver = Sealer(SECRET)
    with pytest.raises(SealedRefused) as caught:
        receiver.open(purpose, data, NOW)
    assert caught.value.status in (400, 403)
    assert sum(receiver.refusals.values()) == 1


@settings(max_examples=300, deadline=None)
@given(position=st.integers(min_value=0), value=st.integers(min_value=1, max_value=255))
def test_fuzz_a_sealed_message_with_any_byte_changed_is_refused(position: int, value: int) -> None:
    sealed = bytearray(Sealer(SECRET).seal("relay-request", {"relay_id": "e/1/ab"}, NOW))
    sealed[position % len(sealed)] ^= value
    with pytest.raises(SealedRefused):
        Sealer(SECRET).open("relay-request", bytes(sealed), NOW)


@settings(max_examples=200, deadline=None)
@given(plaintext=st.binary(max_size=200))
def test_fuzz_any_plaintext_under_the_right_key_opens_or_is_refused(plaintext: bytes) -> None:
    try:
        body = Sealer(SECRET).open("relay-request", own_key_seal(plaintext), NOW)
    except SealedRefused as refused:
        assert refused.kind in ("malformed", "stale")
    else:
        assert isinstance(body, dict)
