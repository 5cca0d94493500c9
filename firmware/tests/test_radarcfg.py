# The LD2410's parameters as read back (command 0x61) against config.json.
from radarcfg import check, frame

R = {"move_gate": 8, "still_gate": 8, "move_sens": 20, "still_sens": 25}


def answer(move_gate=8, still_gate=8, move=(20,) * 9, still=(0, 0) + (25,) * 7, idle=5):
    """0x61's return value: status, 0xAA, the farthest gate (8), the two
    gates set, 9 moving and 9 still sensitivities, the idle time."""
    return (
        bytes((0, 0, 0xAA, 8, move_gate, still_gate))
        + bytes(move)
        + bytes(still)
        + bytes((idle, 0))
    )


def test_the_read_back_agrees():
    assert check(answer(), R) is None
    # Gates 0 and 1 have no settable still sensitivity: whatever they say is fine.
    assert check(answer(still=(9, 3) + (25,) * 7), R) is None


def test_the_example_answer_of_hi_links_protocol():
    # Its example ACK: gates 8/8, moving 20 and still 25 on every gate, 5 s.
    ack = bytes.fromhex(
        "fdfcfbfa 1c00 6101 0000 aa 080808 141414141414141414"
        " 191919191919191919 0500 04030201".replace(" ", "")
    )
    assert check(ack[8:-4], R) is None


def test_what_disagrees_is_named():
    assert check(answer(still_gate=6), R) == "still_gate 6, config.json says 8"
    assert check(answer(move=(20,) * 8 + (50,)), R) == "move_sens 50 at gate 8, config.json says 20"
    assert (
        check(answer(still=(0, 0, 25, 40) + (25,) * 5), R)
        == "still_sens 40 at gate 3, config.json says 25"
    )
    assert check(answer(idle=30), R) == "idle 30 s, not 5"
    assert check(b"\x00\x00\x55", R) == "not a parameter answer"
    assert check(answer()[:20], R) == "a short parameter answer"


def test_command_frames():
    assert frame(0x61) == bytes.fromhex("fdfcfbfa02006100 04030201".replace(" ", ""))
