# The board the node runs on: the ESP32, or the unix port (tests, demo).
# Only board/esp32.py touches hardware (machine, network).
import sys


def module():
    if sys.platform == "esp32":
        from board import esp32 as m
    else:
        from board import unix as m
    return m
