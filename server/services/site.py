"""The site's layout: where buildings are, and walking minutes between them.

Read from `pages.site_file` (TOML, mamaroom/site.py). The mothers' page
sorts rooms by these minutes from "I am in building X, floor Y"; the
predicted wait and the free-room reminder use them to decide what "near me"
means.
"""

from __future__ import annotations

from pydantic import BaseModel

from mamaroom.contract import Registry
from mamaroom.site import SiteFile, walking_minutes


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
