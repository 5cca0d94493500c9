# Small JSON files in var/ on the flash, written atomically (a temporary file
# renamed over the old one), so a power cut leaves the old or the new state,
# never half of one.
import json
import os

DIR = "var"


def _path(name):
    return "%s/%s.json" % (DIR, name)


def load(name, default=None):
    try:
        with open(_path(name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def save(name, obj):
    try:
        os.mkdir(DIR)
    except OSError:
        pass
    tmp = _path(name) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    try:
        os.rename(tmp, _path(name))  # atomic on LittleFS and POSIX
    except OSError:  # FAT will not rename over a file
        remove(name)
        os.rename(tmp, _path(name))


def remove(name):
    try:
        os.remove(_path(name))
    except OSError:
        pass
