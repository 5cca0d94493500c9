# Chooses which firmware runs: the factory image in the root, or an update
# in an OTA slot (ota-a, ota-b). An update first runs on trial (trial.py):
# if it crashes (main.py counts it in var/crashes), restarts
# MAX_TRIAL_BOOTS times, or is not proven within ota_confirm_s
# (config.json), it is rolled back. After SAFE_AFTER crashes in a row the
# node runs safe.py, the room's local-only mode; the supervisor clears the
# count once the node has run a minute. OTA never replaces this file,
# trial.py or main.py: they are what rolls an update back.
import json
import os
import sys

PTR = "var/fw.json"
CRASHES = "var/crashes"  # main.py's count of crashes in a row: a byte each
MAX_TRIAL_BOOTS = 3
SAFE_AFTER = 3


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


def rollback(fw, reason):
    """var/fw.json back to the firmware before `fw`; its slot."""
    print("loader: rolling back %s: %s" % (fw.get("version"), reason))
    prev = fw.get("prev", "")
    write(PTR, {"slot": prev, "state": "ok", "version": fw.get("prev_version")})
    write("var/reset.json", "rollback")
    return prev


def reset(reason, slot, fw=None):
    """Restart the board, after rolling `fw` back if given. The update's
    modules are forgotten first: the firmware rolled back to resets it."""
    if fw is not None:
        rollback(fw, reason)
    else:
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


def crashes():
    try:
        return os.stat(CRASHES)[6]  # its size
    except OSError:
        return 0


def choose():
    """Put the firmware chosen on sys.path; (its slot if it is on trial, else
    None; safe mode?). main.py then forgets this module (the heap is small)
    and starts app.main(trial), or safe.run(). An update that crashed, or
    restarted too often, on trial is rolled back here, before any of it runs."""
    try:  # the unix port after `make firmware`: the .mpy build, not the sources
        # (compiling from source at import needs more than a 64 KB heap). A
        # board has no build/: provisioning put the .mpy files in its root.
        os.stat("build/app.mpy")
        sys.path.insert(0, "build")
        print("main: modules from build/ (run `make firmware` after editing firmware/)")
    except OSError:
        pass
    fw = read(PTR) or {}
    slot = fw.get("slot") or ""
    trial = fw.get("state") == "trial"
    n = crashes()
    if n:
        write("var/reset.json", "crash")  # the node's reset_reason (a rollback says so instead)
    if trial:
        fw["boots"] = fw.get("boots", 0) + 1
        if n or fw["boots"] > MAX_TRIAL_BOOTS:
            slot = rollback(
                fw, "crashed on trial" if n else "restarted %d times on trial" % MAX_TRIAL_BOOTS
            )
            trial = False
            n = 0  # the firmware rolled back to starts with a clean slate
            try:
                os.remove(CRASHES)
            except OSError:
                pass
        else:
            write(PTR, fw)
    if slot:
        sys.path.insert(0, slot)
    if n >= SAFE_AFTER:
        print("loader: %d crashes in a row: safe mode (the room only, no network)" % n)
    return (slot if trial else None), n >= SAFE_AFTER
