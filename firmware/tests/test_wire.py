from mqtt import encode_str, packet
from node import CALL, level
from report import ntp_parse


def test_remaining_length_encoding():
    # (The node never sends more than a few hundred bytes; 4 KiB is the contract's cap.)
    for n, head in (
        (0, b"\x30\x00"),
        (127, b"\x30\x7f"),
        (128, b"\x30\x80\x01"),
        (200, b"\x30\xc8\x01"),
        (2000, b"\x30\xd0\x0f"),
    ):
        p = packet(0x30, bytes(n))
        assert p[: len(head)] == head and len(p) == len(head) + n, n
    assert encode_str("mr/v1") == b"\x00\x05mr/v1"


def test_lamp_patterns():
    assert not level(CALL["off"], 0) and level(CALL["steady"], 12345)
    fast = CALL["fast"]
    assert level(fast, 0) and not level(fast, 150) and level(fast, 300)


def test_ntp_answers():
    answer = bytearray(48)
    answer[0] = 0x24  # version 4, mode 4 (server)
    answer[1] = 2  # stratum
    secs = 1732400000 + 2208988800
    answer[40:44] = secs.to_bytes(4, "big")
    answer[44:48] = (1 << 31).to_bytes(4, "big")  # half a second
    assert ntp_parse(bytes(answer)) == 1732400000500
    answer[1] = 0  # kiss-o'-death: not a time
    assert ntp_parse(bytes(answer)) is None
    assert ntp_parse(b"short") is None
