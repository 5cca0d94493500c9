"""The site file: where the park's buildings are, and walking minutes
between them (`pages.site_file`, TOML; site/site.toml is the park's).

Beside the rooms CSV (registry.py), the other file a site writes. Read and
checked here; the server's SiteService (server/services/site.py) answers
"how far is that room from me" with it.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mamaroom.logs import get_logger

log = get_logger(__name__)


class SiteError(ValueError):
    """The site file cannot be used; the message names the file and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class BuildingSpot(_Strict):
    name: str = Field(min_length=1)
    x: float
    y: float


class Walk(_Strict):
    from_: str = Field(alias="from", min_length=1)
    to: str = Field(min_length=1)
    minutes: float = Field(ge=0)


class SiteFile(_Strict):
    walk_m_per_min: float = Field(70, gt=0)
    path_factor: float = Field(1.3, ge=1)
    floor_minutes: float = Field(0.5, ge=0)
    building: list[BuildingSpot] = Field(default_factory=list)
    walk: list[Walk] = Field(default_factory=list)


def read_site_file(path: Path) -> SiteFile:
    """The site file, or an empty layout when there is none."""
    if not path.is_file():
        log.info("no site file: rooms are listed without walking times", path=str(path))
        return SiteFile()
    try:
        return SiteFile.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except (tomllib.TOMLDecodeError, ValidationError, UnicodeDecodeError) as exc:
        raise SiteError(f"{path}: {exc}") from None


def walking_minutes(layout: SiteFile) -> dict[str, dict[str, float]]:
    spots = {b.name: b for b in layout.building}
    out: dict[str, dict[str, float]] = {}
    for a in spots.values():
        row = out.setdefault(a.name, {})
        for b in spots.values():
            metres = math.hypot(a.x - b.x, a.y - b.y) * layout.path_factor
            row[b.name] = round(metres / layout.walk_m_per_min, 1)
    for w in layout.walk:  # explicit times win, both ways
        out.setdefault(w.from_, {})[w.to] = w.minutes
        out.setdefault(w.to, {})[w.from_] = w.minutes
    for name in list(out):
        out[name][name] = 0.0
    return out
