# These are MicroPython tests (firmware/tests/run.py runs them on the unix
# port; in `make test`, tests/firmware/test_logic.py does, precompiled, in
# the node's heap). Nothing here for CPython's pytest to collect.
collect_ignore_glob = ["*.py"]
