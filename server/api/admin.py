"""Admin: edit the room registry. Every change is published to the gateways."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Response, status
from pydantic import BaseModel, ConfigDict, Field

from mamaroom.contract import DEVICE_ID_PATTERN, DeviceId, Registry, RegistryRoom
from server.context import Ctx
from server.security import require
from server.services.accounts import NAME_PATTERN, Role, User

router = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[Depends(require("admin"))])


class RoomPatch(BaseModel):
    """Fields to change; those left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=100)
    name_en: str | None = Field(None, min_length=1, max_length=100)
    building: str | None = Field(None, min_length=1, max_length=100)
    building_en: str | None = Field(None, max_length=100)
    floor: int | None = None
    device: DeviceId | None = None
    access: str | None = None
    company: str | None = None
    hours: str | None = None
    amenities: list[str] | None = None
    in_service: bool | None = None
    cleaning: bool | None = None


@router.get("/registry", response_model=Registry)
async def get_registry(ctx: Ctx) -> Registry:
    return ctx.registry.current


@router.put("/rooms/{room_id}", response_model=RegistryRoom)
async def put_room(ctx: Ctx, room_id: str, room: RegistryRoom) -> RegistryRoom:
    if room.id != room_id:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"room id in body ({room.id}) differs from the path ({room_id})")
    return await ctx.registry.put_room(room)


@router.patch("/rooms/{room_id}", response_model=RegistryRoom)
async def patch_room(ctx: Ctx, room_id: str, patch: RoomPatch) -> RegistryRoom:
    # `device: null` in the body unassigns the device; an absent key leaves it alone.
    changes: dict[str, Any] = patch.model_dump(exclude_unset=True)
    return await ctx.registry.patch_room(room_id, changes)


@router.delete("/rooms/{room_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_room(ctx: Ctx, room_id: str) -> Response:
    await ctx.registry.delete_room(room_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class TestMode(BaseModel):
    """Commissioning a room: its calls page only the tester, marked TEST."""

    model_config = ConfigDict(extra="forbid")

    tester_pager: str | None = Field(pattern=r"^[0-9]{1,16}$",
                                     description="The tester's pager; null ends test mode")
    minutes: float = Field(60, gt=0, le=24 * 60)


@router.put("/rooms/{room_id}/test-mode", status_code=status.HTTP_204_NO_CONTENT)
async def test_mode(ctx: Ctx, room_id: str, body: TestMode,
                    user: Annotated[User, Depends(require("admin"))]) -> Response:
    ctx.registry.room(room_id)  # 404 for an unknown room
    await ctx.alerts.set_test_mode(room_id, body.tester_pager, body.minutes, user.name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    password: str = Field(min_length=10, max_length=200)


class UserOut(BaseModel):
    name: str
    role: str
    disabled: bool


@router.get("/users", response_model=list[UserOut])
async def list_users(ctx: Ctx) -> list[UserOut]:
    return [UserOut(name=n, role=r, disabled=d) for n, r, d in await ctx.accounts.users()]


@router.put("/users/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def put_user(ctx: Ctx, name: Annotated[str, Path(pattern=NAME_PATTERN)],
                   body: UserIn) -> Response:
    """Create an account, or set its role and password (its sessions end)."""
    await ctx.accounts.add_user(name, body.role, body.password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/users/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def disable_user(ctx: Ctx, name: str,
                       user: Annotated[User, Depends(require("admin"))]) -> Response:
    if name == user.name:
        raise HTTPException(status.HTTP_409_CONFLICT, "you cannot disable your own account")
    if not await ctx.accounts.disable(name):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no account {name!r}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class Adopt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    room: str


@router.post("/devices/{device}/adopt", response_model=RegistryRoom)
async def adopt_device(ctx: Ctx, device: Annotated[str, Path(pattern=DEVICE_ID_PATTERN)],
                       body: Adopt) -> RegistryRoom:
    """Give a device seen on the broker (GET /api/devices: unknown) a room."""
    room = await ctx.registry.patch_room(body.room, {"device": device})
    await ctx.store.forget_unknown_device(device)
    return room
