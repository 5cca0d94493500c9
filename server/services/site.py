"""The site's layout: where buildings are, and walking minutes between them.

Read from `pages.site_file` (TOML). The mothers' page sorts rooms by these
minutes from "I am in building X, floor Y"; the predicted wait and the
free-room reminder use them to decide what "near me" means.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mamaroom.contract import Registry
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


class SiteBuilding(BaseModel):
    name: str
    name_en: str
    floors: list[int]
    rooms: int


class Site(BaseModel):
    """What GET /api/site returns: buildings (from the registry) and walking minutes."""

    buildings: list[SiteBuilding]
    #: minutes[a][b]: walking minutes from building a to building b (ground floor
    #: to ground floor); pairs without a known time are absent.
    minutes: dict[str, dict[str, float]]
    floor_minutes: float
    near_minutes: float


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


class SiteService:
    def __init__(self, layout: SiteFile, near_minutes: float) -> None:
        self.layout = layout
        self.near_minutes = near_minutes
        self._minutes = walking_minutes(layout)

    def minutes(self, a_building: str, a_floor: int, b_building: str, b_floor: int) -> float | None:
        """Walking minutes between two places, None when the site file does not know."""
        if a_building == b_building:
            base: float | None = 0.0
        else:
            base = self._minutes.get(a_building, {}).get(b_building)
        if base is None:
            return None
        return base + abs(a_floor - b_floor) * self.layout.floor_minutes

    def site(self, registry: Registry) -> Site:
        buildings: dict[str, SiteBuilding] = {}
        for r in registry.rooms:
            b = buildings.setdefault(
                r.building,
                SiteBuilding(
                    name=r.building, name_en=r.building_en or r.building, floors=[], rooms=0
                ),
            )
            b.rooms += 1
            if r.floor not in b.floors:
                b.floors.append(r.floor)
        for b in buildings.values():
            b.floors.sort()
        known = set(buildings)
        minutes = {
            a: {b: m for b, m in row.items() if b in known}
            for a, row in self._minutes.items()
            if a in known
        }
        return Site(
            buildings=sorted(buildings.values(), key=lambda b: b.name),
            minutes=minutes,
            floor_minutes=self.layout.floor_minutes,
            near_minutes=self.near_minutes,
        )
