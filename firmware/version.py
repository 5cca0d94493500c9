# The firmware version; `mamaroom device` writes the release's own into a bundle.
VERSION = "1.0.0"
