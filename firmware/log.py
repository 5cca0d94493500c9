# One log line per event on the console (USB serial on the board, stdout on
# the unix port): "<uptime ms> <level> <text>".
from ticks import ticks_ms


def log(level, text):
    print("%d %s %s" % (ticks_ms(), level, text))  # type: ignore[str-format]


def exc(text, e):
    log("ERROR", "%s: %s %r" % (text, type(e).__name__, e))
