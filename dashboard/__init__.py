"""The pages (HTML, JS, CSS, and the npm libraries built into vendor/), as
package data: the server finds them beside this file, in a source checkout
and in an installed wheel alike."""

from pathlib import Path

#: Where the pages' files are.
ROOT = Path(__file__).resolve().parent
