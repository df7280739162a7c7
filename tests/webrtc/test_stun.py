from pathlib import Path

import pytest

from fanout.webrtc.stun import (
    BINDING_REQUEST,
    BINDING_SUCCESS,
    ERROR_CODE,
    SOFTWARE,
    USERNAME,
    StunAttribute,
    StunError,
    StunMessage,
    encode_error_code,
    encode_xor_address,
    is_stun,
)

DATA = Path(__file__).parent / "data"

# RFC 5769 section 2: password for every sample below.
PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"
TRANSACTION_ID = bytes.fromhex("b7e7a701bc34d686fa87dfae")

SAMPLE_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "802200105354554e207465737420636c69656e74"
    "002400046e0001ff"
    "80290008932ff9b151263b36"
    "000600096576746a3a68367659202020"
    "000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004e57a3bcf"
)
SAMPLE_IPV4_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96"
)
SAMPLE_IPV6_RESPONSE = bytes.fromhex(
    "010100482112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9"
    "00080014a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004c8fb0b4c"
)


def test_rfc5769_sample_request() -> None:
    message = StunMessage.parse(SAMPLE_REQUEST)
    assert message.message_type == BINDING_REQUEST
    assert message.transaction_id == TRANSACTION_ID
    assert message.username == "evtj:h6vY"
    assert message.attribute(SOFTWARE) == b"STUN test client"
    assert message.priority == 0x6E0001FF
    assert message.ice_controlled == 0x932FF9B151263B36
    assert message.ice_controlling is None
    assert not message.use_candidate
    assert message.verify_integrity(PASSWORD)
    assert not message.verify_integrity(b"wrong password")
    assert message.verify_fingerprint()
    assert bytes(message) == SAMPLE_REQUEST


def test_rfc5769_sample_request_rebuilt() -> None:
    """Building the sample from its fields reproduces its integrity and fingerprint bytes."""
    message = (
        StunMessage(BINDING_REQUEST, TRANSACTION_ID)
        .with_attribute(SOFTWARE, b"STUN test client")
        .with_attribute(0x0024, bytes.fromhex("6e0001ff"))
        .with_attribute(0x8029, bytes.fromhex("932ff9b151263b36"))
    )
    username = StunAttribute(USERNAME, b"evtj:h6vY", padding=b"   ")
    message = StunMessage(message.message_type, message.transaction_id, (*message.attributes, username))
    assert bytes(message.with_integrity(PASSWORD).with_fingerprint()) == SAMPLE_REQUEST


@pytest.mark.parametrize(
    ("sample", "address"),
    [
        (SAMPLE_IPV4_RESPONSE, ("192.0.2.1", 32853)),
        (SAMPLE_IPV6_RESPONSE, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
    ],
)
def test_rfc5769_sample_responses(sample: bytes, address: tuple[str, int]) -> None:
    message = StunMessage.parse(sample)
    assert message.message_type == BINDING_SUCCESS
    assert message.attribute(SOFTWARE) == b"test vector"
    assert message.xor_mapped_address == address
    assert message.verify_integrity(PASSWORD)
    assert message.verify_fingerprint()
    assert bytes(message) == sample
    assert encode_xor_address(address, TRANSACTION_ID) == message.attribute(0x0020)


def test_captured_aioice_binding_request() -> None:
    """A check aioice sent to a WebRtcEndpoint (see test_endpoint.py), with the pwd it was keyed with."""
    data = (DATA / "stun_request_aioice.bin").read_bytes()
    local_pwd = (DATA / "stun_request_aioice.pwd").read_text().strip()
    message = StunMessage.parse(data)
    assert bytes(message) == data
    assert message.message_type == BINDING_REQUEST
    assert message.username is not None and ":" in message.username
    assert message.priority is not None
    assert message.ice_controlling is not None
    assert message.verify_integrity(local_pwd.encode())
    assert message.verify_fingerprint()


def test_error_code_attribute() -> None:
    message = StunMessage(0x0111, TRANSACTION_ID).with_attribute(ERROR_CODE, encode_error_code(487, "Role Conflict"))
    assert message.attribute(ERROR_CODE) == b"\x00\x00\x04\x57Role Conflict"
    assert StunMessage.parse(bytes(message)).error_code == (487, "Role Conflict")


def test_tampered_message_fails_integrity_and_fingerprint() -> None:
    tampered = bytearray(SAMPLE_REQUEST)
    tampered[30] ^= 0x01  # inside SOFTWARE
    message = StunMessage.parse(bytes(tampered))
    assert not message.verify_integrity(PASSWORD)
    assert not message.verify_fingerprint()


def test_is_stun() -> None:
    assert is_stun(SAMPLE_REQUEST)
    assert not is_stun(b"\x16\xfe\xfd" + bytes(30))
    assert not is_stun(SAMPLE_REQUEST[:19])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (SAMPLE_REQUEST[:19], "too short for a STUN header (19 bytes)"),
        (b"\x80" + SAMPLE_REQUEST[1:], "first two bits are not zero"),
        (SAMPLE_REQUEST[:4] + b"\x21\x12\xa4\x43" + SAMPLE_REQUEST[8:], "bad magic cookie 0x2112a443"),
        (SAMPLE_REQUEST[:2] + b"\x00\x57" + SAMPLE_REQUEST[4:], "length 87 is not a multiple of 4"),
        (SAMPLE_REQUEST[:-4], "length 88 does not match the 84 bytes after the header"),
        (
            bytes.fromhex("000100042112a442") + TRANSACTION_ID + b"\x00\x06\x00\x09",
            "attribute 0x0006 truncated: 9 bytes announced",
        ),
        (bytes.fromhex("000100022112a442") + TRANSACTION_ID + b"\x00\x06", "length 2 is not a multiple of 4"),
        (
            bytes.fromhex("000100042112a442") + TRANSACTION_ID + b"\x00\x06\x00\x01",
            "attribute 0x0006 truncated: 1 bytes announced",
        ),
    ],
)
def test_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(StunError) as error:
        StunMessage.parse(data)
    assert str(error.value) == reason


def test_malformed_attribute_values() -> None:
    message = StunMessage(BINDING_REQUEST, TRANSACTION_ID).with_attribute(0x0024, b"\x01\x02")
    with pytest.raises(StunError, match="attribute 0x0024 has 2 bytes, expected 4"):
        _ = message.priority
    message = StunMessage(BINDING_REQUEST, TRANSACTION_ID).with_attribute(USERNAME, b"\xff\xfe")
    with pytest.raises(StunError, match="USERNAME is not UTF-8"):
        _ = message.username
    message = StunMessage(BINDING_SUCCESS, TRANSACTION_ID).with_attribute(0x0020, b"\x00\x03\x00\x00")
    with pytest.raises(StunError, match="XOR-MAPPED-ADDRESS with family 3 and 4 bytes"):
        _ = message.xor_mapped_address
