"""The room registry: loaded from the server's database (seeded from the rooms
CSV on first start), edited through the admin API, published to gateways."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mamaroom.contract import Registry, RegistryRoom
from mamaroom.logs import get_logger
from mamaroom.registry import read_rooms_csv
from mamaroom.said import Said, validation
from server.db import ServerDb
from server.errors import Conflict, Invalid, NotFound

log = get_logger(__name__)

Listener = Callable[[Registry], Awaitable[None]]


class RegistryService:
    def __init__(self, db: ServerDb, rooms_csv: Path) -> None:
        self._db = db
        self._rooms_csv = rooms_csv
        self._lock = asyncio.Lock()
        self._listeners: list[Listener] = []
        self._current: Registry | None = None

    @property
    def current(self) -> Registry:
        if self._current is None:
            raise RuntimeError("registry not loaded")
        return self._current

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def load(self) -> Registry:
        """Load the registry; on first start, seed it from the rooms CSV
        (RoomsCsvError, with every bad line, if the file is not usable)."""
        registry = await self._db.registry()
        if registry is None:
            rooms = read_rooms_csv(self._rooms_csv)
            registry = await self._db.replace_rooms(rooms)
            log.info("registry seeded from CSV", csv=str(self._rooms_csv), rooms=len(rooms))
        else:
            log.info("registry loaded", version=registry.version, rooms=len(registry.rooms))
        self._current = registry
        return registry

    async def refresh(self) -> None:
        """Another server of this site changed the registry (its retained
        publication is newer than ours): read it from the shared database."""
        async with self._lock:
            registry = await self._db.registry()
            if registry is None or registry.version <= self.current.version:
                return
            self._current = registry
            log.info(
                "registry changed by another server",
                version=registry.version,
                rooms=len(registry.rooms),
            )
            for listener in self._listeners:
                await listener(registry)

    def find(self, room_id: str) -> RegistryRoom | None:
        return next((r for r in self.current.rooms if r.id == room_id), None)

    def room(self, room_id: str) -> RegistryRoom:
        for room in self.current.rooms:
            if room.id == room_id:
                return room
        raise NotFound(Said(f"no room {room_id!r}", f"没有房间 {room_id!r}"))

    async def put_room(self, room: RegistryRoom) -> RegistryRoom:
        """Create or replace one room."""
        async with self._lock:
            others = [r for r in self.current.rooms if r.id != room.id]
            self._check_device(room, others)
            await self._save([*others, room])
        return room

    async def patch_room(self, room_id: str, changes: dict[str, Any]) -> RegistryRoom:
        async with self._lock:
            old = self.room(room_id)
            try:
                room = RegistryRoom.model_validate({**old.model_dump(), **changes, "id": room_id})
            except ValidationError as exc:
                raise Invalid(validation(exc.errors(include_url=False))) from None
            others = [r for r in self.current.rooms if r.id != room_id]
            self._check_device(room, others)
            await self._save([*others, room])
        return room

    async def replace_rooms(self, rooms: list[RegistryRoom]) -> None:
        """Replace the whole room list at once (a rooms CSV import): one new version."""
        async with self._lock:
            for i, room in enumerate(rooms):
                self._check_device(room, rooms[:i])
            await self._save(rooms)

    async def import_rooms(self, rooms: list[RegistryRoom], *, apply: bool) -> list[str]:
        """A rooms CSV's rooms, keeping what staff set by hand (`cleaning`,
        not in the file) for rooms that stay; with `apply`, they replace the
        registry in one version. The ids the file drops, read and written
        under one lock, so a concurrent edit is never lost."""
        async with self._lock:
            cleaning = {r.id for r in self.current.rooms if r.cleaning}
            rooms = [r.model_copy(update={"cleaning": r.id in cleaning}) for r in rooms]
            removed = sorted({r.id for r in self.current.rooms} - {r.id for r in rooms})
            if apply:
                for i, room in enumerate(rooms):
                    self._check_device(room, rooms[:i])
                await self._save(rooms)
        return removed

    async def move_device(self, device: str, room_id: str) -> RegistryRoom:
        """The device to another room in one registry version (its old room has none)."""
        async with self._lock:
            target = self.room(room_id)
            rooms = [
                r.model_copy(update={"device": None}) if r.device == device else r
                for r in self.current.rooms
                if r.id != target.id
            ]
            moved = target.model_copy(update={"device": device})
            await self._save([*rooms, moved])
        return moved

    async def delete_room(self, room_id: str) -> None:
        async with self._lock:
            self.room(room_id)
            await self._save([r for r in self.current.rooms if r.id != room_id])

    @staticmethod
    def _check_device(room: RegistryRoom, others: list[RegistryRoom]) -> None:
        if room.device:
            for other in others:
                if other.device == room.device:
                    raise Conflict(
                        Said(
                            f"device {room.device!r} is already in room {other.id!r}",
                            f"设备 {room.device!r} 已在房间 {other.id!r}",
                        )
                    )

    async def _save(self, rooms: list[RegistryRoom]) -> None:
        self._current = await self._db.replace_rooms(rooms)
        log.info("registry changed", version=self._current.version, rooms=len(rooms))
        for listener in self._listeners:
            await listener(self._current)
