import pytest

from fanout.webrtc.ice import CONNECT_TIMEOUT, CONSENT_TIMEOUT, IceFailed, IceLiteAgent, Nominated
from fanout.webrtc.stun import (
    BINDING_ERROR,
    BINDING_INDICATION,
    BINDING_REQUEST,
    BINDING_SUCCESS,
    ICE_CONTROLLED,
    ICE_CONTROLLING,
    PRIORITY,
    USE_CANDIDATE,
    USERNAME,
    StunMessage,
)

BROWSER = ("127.0.0.1", 50000)
OTHER = ("127.0.0.1", 50002)
TRANSACTION_ID = bytes(range(12))


def agent() -> IceLiteAgent:
    return IceLiteAgent(now=100.0, ufrag="srvU", pwd="server-password-0123456789")


def check(
    *,
    username: str = "srvU:brws",
    pwd: str = "server-password-0123456789",
    nominate: bool = False,
    role: int = ICE_CONTROLLING,
) -> StunMessage:
    message = (
        StunMessage(BINDING_REQUEST, TRANSACTION_ID)
        .with_attribute(USERNAME, username.encode())
        .with_attribute(PRIORITY, (1853824767).to_bytes(4, "big"))
        .with_attribute(role, (0x1122334455667788).to_bytes(8, "big"))
    )
    if nominate:
        message = message.with_attribute(USE_CANDIDATE, b"")
    return message.with_integrity(pwd.encode()).with_fingerprint()


def test_answers_a_check_with_its_address() -> None:
    ice = agent()
    response, events = ice.receive(check(), BROWSER, now=101.0)
    assert events == []
    assert response is not None
    message = StunMessage.parse(response)
    assert message.message_type == BINDING_SUCCESS
    assert message.transaction_id == TRANSACTION_ID
    assert message.xor_mapped_address == BROWSER
    assert message.verify_integrity(b"server-password-0123456789")
    assert message.verify_fingerprint()
    assert [a.type for a in message.attributes] == [0x0020, 0x0008, 0x8028]
    assert ice.state == "checking"
    assert ice.nominated is None
    assert ice.valid_addresses == {BROWSER}


def test_use_candidate_nominates_and_moves() -> None:
    ice = agent()
    assert ice.receive(check(nominate=True), BROWSER, now=101.0)[1] == [Nominated(BROWSER)]
    assert ice.state == "connected"
    assert ice.nominated == BROWSER
    assert ice.receive(check(nominate=True), BROWSER, now=102.0)[1] == []
    assert ice.receive(check(nominate=True), OTHER, now=103.0)[1] == [Nominated(OTHER)]
    assert ice.nominated == OTHER


@pytest.mark.parametrize(
    ("request_message", "code"),
    [
        (check(pwd="wrong-password"), 401),
        (check(username="othr:brws"), 401),
        (StunMessage(BINDING_REQUEST, TRANSACTION_ID).with_fingerprint(), 400),
        (check(role=ICE_CONTROLLED), 487),
    ],
)
def test_rejected_checks(request_message: StunMessage, code: int) -> None:
    ice = agent()
    response, events = ice.receive(request_message, BROWSER, now=101.0)
    assert events == []
    assert response is not None
    message = StunMessage.parse(response)
    assert message.message_type == BINDING_ERROR
    assert message.error_code is not None and message.error_code[0] == code
    assert message.verify_integrity(b"server-password-0123456789") == (code == 487)
    assert ice.valid_addresses == set()
    assert ice.requests_rejected == 1


def test_bad_fingerprint_is_rejected() -> None:
    data = bytearray(bytes(check(nominate=True)))
    data[-1] ^= 0xFF
    response, events = agent().receive(StunMessage.parse(bytes(data)), BROWSER, now=101.0)
    assert events == []
    assert response is not None and StunMessage.parse(response).error_code == (400, "Bad Request")


def test_indications_and_responses_are_ignored() -> None:
    ice = agent()
    assert ice.receive(StunMessage(BINDING_INDICATION, TRANSACTION_ID), BROWSER, now=101.0) == (None, [])
    assert ice.receive(StunMessage(BINDING_SUCCESS, TRANSACTION_ID), BROWSER, now=101.0) == (None, [])


def test_ice_fails_when_never_nominated() -> None:
    ice = agent()
    ice.receive(check(), BROWSER, now=101.0)
    assert ice.next_timeout() == 100.0 + CONNECT_TIMEOUT
    assert ice.handle_timeout(129.9) == []
    assert ice.handle_timeout(130.0) == [IceFailed("ICE failed")]
    assert ice.state == "failed"
    assert ice.next_timeout() is None
    assert ice.receive(check(nominate=True), BROWSER, now=131.0) == (None, [])


def test_consent_is_refreshed_by_checks_from_the_nominated_address_only() -> None:
    ice = agent()
    ice.receive(check(nominate=True), BROWSER, now=110.0)
    assert ice.next_timeout() == 110.0 + CONSENT_TIMEOUT
    ice.receive(check(), BROWSER, now=125.0)
    assert ice.next_timeout() == 125.0 + CONSENT_TIMEOUT
    ice.receive(check(), OTHER, now=130.0)
    ice.receive(check(pwd="wrong"), BROWSER, now=135.0)
    assert ice.next_timeout() == 155.0
    assert ice.handle_timeout(154.0) == []
    assert ice.handle_timeout(155.0) == [IceFailed("consent expired")]
    assert ice.state == "failed"


def test_consent_expires_after_the_agents_own_consent_timeout() -> None:
    """fanout.ice_consent_timeout reaches the agent: RFC 7675's 30 s by default, else its own."""
    assert agent().consent_timeout == CONSENT_TIMEOUT == 30.0
    ice = IceLiteAgent(now=100.0, ufrag="srvU", pwd="server-password-0123456789", consent_timeout=7.5)
    assert ice.next_timeout() == 100.0 + CONNECT_TIMEOUT  # not nominated yet: the connect timeout
    ice.receive(check(nominate=True), BROWSER, now=110.0)
    assert ice.next_timeout() == 117.5
    ice.receive(check(), BROWSER, now=115.0)
    assert ice.next_timeout() == 122.5
    assert ice.handle_timeout(122.4) == []
    assert ice.handle_timeout(122.5) == [IceFailed("consent expired")]
    assert ice.state == "failed"


def test_random_credentials() -> None:
    first, second = IceLiteAgent(now=0.0), IceLiteAgent(now=0.0)
    assert len(first.local_ufrag) >= 4 and len(first.local_pwd) >= 22
    assert first.local_ufrag != second.local_ufrag and first.local_pwd != second.local_pwd


def test_ice_restart_takes_new_credentials_and_keeps_the_nominated_address() -> None:
    ice = agent()
    ice.receive(check(nominate=True), BROWSER, now=101.0)
    ice.restart()
    assert (ice.local_ufrag, ice.local_pwd) != ("srvU", "server-password-0123456789")
    assert ice.nominated == BROWSER and ice.state == "connected"

    old, _ = ice.receive(check(nominate=True), BROWSER, now=102.0)
    assert old is not None and StunMessage.parse(old).message_type == BINDING_ERROR

    new_check = check(username=f"{ice.local_ufrag}:brws", pwd=ice.local_pwd, nominate=True)
    response, events = ice.receive(new_check, OTHER, now=120.0)
    assert response is not None and StunMessage.parse(response).message_type == BINDING_SUCCESS
    assert events == [Nominated(OTHER)]
    assert ice.handle_timeout(120.0 + CONSENT_TIMEOUT - 1) == []  # consent refreshed by the new check
