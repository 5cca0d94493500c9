# Chooses which firmware runs: the factory image in the root, or an update
# in an OTA slot (ota-a, ota-b). An update first runs on trial (trial.py):
# if it fails to start, restarts MAX_TRIAL_BOOTS times, or is not online
# within ota_confirm_s (config.json), it is rolled back and the board
# restarted. OTA never replaces this file, trial.py or main.py: they are
# what rolls an update back.
import json
import os
import sys

PTR = "var/fw.json"
MAX_TRIAL_BOOTS = 3


def read(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write(path, obj):
    try:
        os.mkdir("var")
    except OSError:
        pass
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f)
    try:
        os.rename(path + ".tmp", path)  # atomic on LittleFS and POSIX
    except OSError:
        os.remove(path)
        os.rename(path + ".tmp", path)


def reset(reason, slot, fw=None):
    """Restart the board, after rolling `fw` back if given. The update's
    modules are forgotten first: the firmware rolled back to resets it."""
    if fw is not None:
        print("loader: rolling back %s: %s" % (fw.get("version"), reason))
        write(PTR, {"slot": fw.get("prev", ""), "state": "ok", "version": fw.get("prev_version")})
        reason = "rollback"
    write("var/reset.json", reason)
    if slot in sys.path:
        sys.path.remove(slot)
    prev = (read(PTR) or {}).get("slot")
    if prev:
        sys.path.insert(0, prev)
    for name in list(sys.modules):
        if name != "loader":
            del sys.modules[name]
    from board import module

    module().reset()


def choose():
    """Put the firmware chosen on sys.path; its slot if it is on trial, else
    None. main.py then forgets this module (the heap is small) and starts
    app.main(trial); an update restarted too often on trial is rolled back."""
    fw = read(PTR) or {}
    slot = fw.get("slot") or ""
    trial = fw.get("state") == "trial"
    if trial:
        fw["boots"] = fw.get("boots", 0) + 1
        write(PTR, fw)
        if fw["boots"] > MAX_TRIAL_BOOTS:
            reset("restarted %d times on trial" % MAX_TRIAL_BOOTS, slot, fw)
    if slot:
        sys.path.insert(0, slot)
    return slot if trial else None


def crashed(e):
    """The firmware failed: roll an update on trial back; restart the board."""
    sys.print_exception(e)
    fw = read(PTR) or {}
    reset("crash", fw.get("slot") or "", fw if fw.get("state") == "trial" else None)
