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
    raw["broker"] = "mqtts://broker.site"
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
    for words in ("device:", "broker:", "keepalive_s:", "pins.door", "filters.door_ms",
                  "colour: unknown key"):
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
