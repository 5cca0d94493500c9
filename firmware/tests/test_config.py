import json

import config


def example():
    with open("config.example.json") as f:
        return json.load(f)


def test_the_example_is_valid():
    cfg = config.validate(example())
    assert cfg["host"] == "10.20.0.5" and cfg["port"] == 1883 and cfg["tls"] is False
    assert cfg["pins"]["door"] == 27 and cfg["filters"]["delayed_off_ms"] == 30000
    raw = example()
    raw["broker"] = "mqtts://10.20.0.5"
    assert config.validate(raw)["port"] == 8883


def test_every_problem_is_reported_at_once():
    raw = example()
    raw["device"] = "Room 1/A"
    raw["broker"] = "http://x"
    raw["keepalive_s"] = 0
    raw["pins"]["door"] = 40
    raw["filters"]["door_ms"] = -5
    raw["colour"] = "red"
    try:
        config.validate(raw)
        raise AssertionError("accepted")
    except config.ConfigError as e:
        text = str(e)
    for words in (
        "device:",
        "broker:",
        "keepalive_s:",
        "pins.door",
        "filters.door_ms",
        "colour: unknown key",
    ):
        assert words in text, (words, text)


def test_missing_and_broken_files():
    for path, words in (("no-such-config.json", "not found"), ("tests/run.py", "not valid JSON")):
        try:
            config.load(path)
            raise AssertionError("accepted")
        except config.ConfigError as e:
            assert words in str(e), str(e)
    cfg = config.fallback("no-such-config.json")  # the room still gets its lamp
    assert cfg["pins"] == config.PINS and cfg["device"] == ""


def test_host_names_are_refused_ip_addresses_taken():
    assert config.is_ip("10.20.0.5") and config.is_ip("127.0.0.1")
    for bad in ("broker.local", "10.20.0", "10.20.0.256", "1.2.3.4.5", "a.b.c.d", ""):
        assert not config.is_ip(bad), bad
    raw = example()
    raw["broker"] = "mqtts://mqtt.park.local:8883"
    raw["ntp"] = "ntp.park.local"
    try:
        config.validate(raw)
        raise AssertionError("a host name was taken")
    except config.ConfigError as e:
        assert "'mqtt.park.local' is a host name" in str(e) and "ntp: 'ntp.park.local'" in str(e)


def test_radar_settings_are_checked():
    raw = example()
    raw["radar"] = {"move_gate": 9, "still_sens": 101, "colour": 1}
    try:
        config.validate(raw)
        raise AssertionError("taken")
    except config.ConfigError as e:
        for words in (
            "radar.move_gate: 9 is out of range",
            "radar.still_sens: 101",
            "radar.colour: unknown key",
        ):
            assert words in str(e), (words, str(e))
    raw["radar"] = {"move_gate": 4}
    assert config.validate(raw)["radar"] == {
        "move_gate": 4,
        "still_gate": 8,
        "move_sens": 50,
        "still_sens": 40,
    }
