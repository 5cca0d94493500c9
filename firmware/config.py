# config.json, validated at boot: every problem is reported at once, in
# words a technician can act on. The defaults are the pin map of
# hardware/README.md (ESP32-DevKitC-32E) and the timings of docs/firmware.md.
import json

PINS = {
    "door": 27,
    "button": 14,
    "button_lamp": 25,
    "staff": 13,
    "corridor_lamp": 26,
    "buzzer": 33,
    "status_led": 2,
    "radar_rx": 16,
    "radar_tx": 17,
    "radar_out": 34,
}
# The LD2410's settings, written at boot (radarcfg.py): farthest gates
# (0.75 m each) and sensitivities (0-100, all gates). Bluetooth is always off.
RADAR = {"move_gate": 8, "still_gate": 8, "move_sens": 50, "still_sens": 40}
FILTERS = {
    "door_ms": 200,
    "button_ms": 30,
    "delayed_on_ms": 2000,
    "delayed_off_ms": 30000,
    "radar_timeout_ms": 5000,
    "radar_stuck_s": 14400,
}
# key: (default, low, high) for the integers; strings below.
NUMBERS = {
    "ntp_port": (123, 1, 65535),
    "keepalive_s": (30, 5, 600),
    "occupancy_s": (300, 1, 3600),
    "telemetry_s": (60, 1, 3600),
    "ota_confirm_s": (300, 5, 3600),
    "sim_port": (0, 0, 65535),
    "ntp_every_s": (3600, 10, 86400),
}
STRINGS = {"device": None, "broker": None, "password": "", "ca": "", "ntp": ""}
PIN_RANGE = (0, 39)


class ConfigError(Exception):
    pass


def is_device_id(s):
    if not isinstance(s, str) or not 1 <= len(s) <= 32:
        return False
    for c in s:
        if not ("a" <= c <= "z" or "0" <= c <= "9" or c == "-"):
            return False
    return True


def is_ip(host):
    """A dotted IPv4 address. Host names are refused: the board looks a name
    up with a blocking call that can freeze it for seconds (a press missed,
    the 8 s watchdog tripped)."""
    parts = host.split(".")
    if len(parts) != 4:
        return False
    for p in parts:
        if not p.isdigit() or len(p) > 3 or int(p) > 255:
            return False
    return True


def _broker(url, errors):
    """(tls, host, port) from mqtt://host[:port] or mqtts://host[:port]."""
    for scheme, tls, port in (("mqtt://", False, 1883), ("mqtts://", True, 8883)):
        if url.startswith(scheme):
            rest = url[len(scheme) :].rstrip("/")
            host = rest
            if ":" in rest:
                host, p = rest.rsplit(":", 1)
                try:
                    port = int(p)
                except ValueError:
                    port = 0
                if not 0 < port < 65536:
                    errors.append("broker: bad port in %r" % url)
            if not host or "/" in host or "@" in host:
                errors.append("broker: no host in %r (mqtt://10.0.0.5:1883)" % url)
            elif not is_ip(host):
                errors.append(
                    "broker: %r is a host name: give the broker's IP address "
                    "(mqtt://10.0.0.5:1883); a look-up blocks the node" % host
                )
            return tls, host, port
    errors.append("broker: must start with mqtt:// or mqtts://, got %r" % url)
    return False, "", 0


def _section(raw, name, defaults, errors):
    got = raw.get(name, {})
    out = dict(defaults)
    if not isinstance(got, dict):
        errors.append("%s: must be an object" % name)
        return out
    for k, v in got.items():
        if k not in defaults:
            errors.append("%s.%s: unknown key (known: %s)" % (name, k, ", ".join(sorted(defaults))))
        elif type(v) is not int or v < 0:
            errors.append("%s.%s: must be a whole number >= 0, got %r" % (name, k, v))
        else:
            out[k] = v
    return out


def validate(raw):
    """The config as a dict with every default filled in; ConfigError lists
    every problem found."""
    errors = []
    if not isinstance(raw, dict):
        raise ConfigError("config.json: must be a JSON object")
    known = ("wifi", "pins", "filters", "radar")
    for k in raw:
        if k not in known and k not in NUMBERS and k not in STRINGS:
            errors.append("%s: unknown key" % k)
    cfg: dict = {}
    for k, default in STRINGS.items():
        v = raw.get(k, default)
        if v is None:
            errors.append("%s: missing" % k)
        elif not isinstance(v, str):
            errors.append("%s: must be a string" % k)
        cfg[k] = v
    for k, (number, low, high) in NUMBERS.items():
        n = raw.get(k, number)
        if type(n) is not int or not low <= n <= high:
            errors.append("%s: must be a whole number in %d..%d, got %r" % (k, low, high, n))
            n = number
        cfg[k] = n
    if isinstance(cfg["device"], str) and not is_device_id(cfg["device"]):
        errors.append(
            "device: %r is not a device id (a-z, 0-9 and -, 1-32 characters)" % cfg["device"]
        )
    if isinstance(cfg["ntp"], str) and cfg["ntp"] and not is_ip(cfg["ntp"]):
        errors.append(
            "ntp: %r is a host name: give the NTP server's IP address "
            "(a look-up blocks the node)" % cfg["ntp"]
        )
    if isinstance(cfg["broker"], str):
        cfg["tls"], cfg["host"], cfg["port"] = _broker(cfg["broker"], errors)
    wifi = raw.get("wifi", {})
    if (
        not isinstance(wifi, dict)
        or not isinstance(wifi.get("ssid", ""), str)
        or not isinstance(wifi.get("password", ""), str)
    ):
        errors.append('wifi: must be {"ssid": "...", "password": "..."}')
        wifi = {}
    cfg["wifi"] = wifi
    cfg["pins"] = _section(raw, "pins", PINS, errors)
    for k, v in cfg["pins"].items():
        if not PIN_RANGE[0] <= v <= PIN_RANGE[1]:
            errors.append("pins.%s: GPIO%d does not exist" % (k, v))
    cfg["filters"] = _section(raw, "filters", FILTERS, errors)
    cfg["radar"] = _section(raw, "radar", RADAR, errors)
    for k, v in cfg["radar"].items():
        if not (2 <= v <= 8 if k.endswith("gate") else v <= 100):
            errors.append("radar.%s: %d is out of range (gates 2-8, sensitivities 0-100)" % (k, v))
    if errors:
        raise ConfigError("config.json: " + "; ".join(errors))
    return cfg


def load(path="config.json"):
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError:
        raise ConfigError("config.json: not found (copy config.example.json)") from None
    except ValueError as e:
        raise ConfigError("config.json: not valid JSON (%s)" % e) from None
    return validate(raw)


def fallback(path="config.json"):
    """What a node with a broken config.json still runs on: the pin map and
    timings, so the button, lamp and buzzer keep working in the room (and,
    on the unix port, its control port)."""
    cfg: dict = {"pins": dict(PINS), "filters": dict(FILTERS), "radar": dict(RADAR), "wifi": {}}
    for k, (number, _, _) in NUMBERS.items():
        cfg[k] = number
    for k, text in STRINGS.items():
        cfg[k] = text or ""
    try:
        with open(path) as f:
            port = json.load(f).get("sim_port")
        if type(port) is int and 0 < port < 65536:
            cfg["sim_port"] = port
    except Exception:
        pass
    return cfg
