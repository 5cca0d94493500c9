"""Admin: edit the room registry. Every change is published to the gateways."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from mamaroom.config import ACCOUNT_NAME, DutyShift
from mamaroom.contract import DEVICE_ID_PATTERN, DeviceId, Hours, Registry, RegistryRoom
from mamaroom.registry import RoomsCsvError, parse_rooms_csv, write_rooms_csv
from mamaroom.said import Said
from server.context import Ctx
from server.errors import Conflict, Invalid, NotFound, TooLarge
from server.security import require
from server.services.accounts import PasswordPolicyError, Role, User

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
    hours: Hours | None = None
    amenities: list[str] | None = None
    in_service: bool | None = None
    cleaning: bool | None = None


@router.get("/registry", response_model=Registry)
async def get_registry(ctx: Ctx) -> Registry:
    return ctx.registry.current


@router.put("/rooms/{room_id}", response_model=RegistryRoom)
async def put_room(ctx: Ctx, room_id: str, room: RegistryRoom) -> RegistryRoom:
    if room.id != room_id:
        raise Invalid(
            Said(
                f"room id in body ({room.id}) differs from the path ({room_id})",
                f"请求中的房间编号（{room.id}）与地址中的（{room_id}）不一致",
            )
        )
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

    tester_pager: str | None = Field(
        pattern=r"^[0-9]{1,16}$", description="The tester's pager; null ends test mode"
    )
    minutes: float = Field(60, gt=0, le=24 * 60)


@router.put("/rooms/{room_id}/test-mode", status_code=status.HTTP_204_NO_CONTENT)
async def test_mode(
    ctx: Ctx, room_id: str, body: TestMode, user: Annotated[User, Depends(require("admin"))]
) -> Response:
    ctx.registry.room(room_id)  # 404 for an unknown room
    await ctx.alerts.set_test_mode(room_id, body.tester_pager, body.minutes, user.name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    #: Checked against the policy in put_user (its 422 names the rule).
    password: str = Field(max_length=200)


class UserOut(BaseModel):
    name: str
    role: str
    disabled: bool


@router.get("/users", response_model=list[UserOut])
async def list_users(ctx: Ctx) -> list[UserOut]:
    return [UserOut(name=n, role=r, disabled=d) for n, r, d in await ctx.accounts.users()]


@router.put("/users/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def put_user(
    ctx: Ctx, name: Annotated[str, Path(pattern=ACCOUNT_NAME)], body: UserIn
) -> Response:
    """Create an account, or set its role and password (its sessions end).
    The password must pass the policy (docs/deployment.md: "Passwords"); if
    not, 422 says which rule."""
    try:
        await ctx.accounts.add_user(name, body.role, body.password)
    except PasswordPolicyError as exc:
        raise Invalid(exc.said) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/users/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def disable_user(
    ctx: Ctx, name: str, user: Annotated[User, Depends(require("admin"))]
) -> Response:
    if name == user.name:
        raise Conflict(Said("you cannot disable your own account", "不能停用自己的账号"))
    if not await ctx.accounts.disable(name):
        raise NotFound(Said(f"no account {name!r}", f"没有账号 {name!r}"))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class Adopt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    room: str


@router.post("/devices/{device}/adopt", response_model=RegistryRoom)
async def adopt_device(
    ctx: Ctx, device: Annotated[str, Path(pattern=DEVICE_ID_PATTERN)], body: Adopt
) -> RegistryRoom:
    """Give a device seen on the broker (GET /api/devices: unknown) a room."""
    room = await ctx.registry.patch_room(body.room, {"device": device})
    await ctx.devices.forget_unknown_device(device)
    return room


# --- for the admin page: the rooms CSV, moving a device, the duty roster ------------


class CsvImport(BaseModel):
    rooms: int
    applied: bool
    #: Rooms in the registry that the file does not have (deleted when applied).
    removed: list[str]


@router.get("/rooms.csv", response_class=Response, responses={200: {"content": {"text/csv": {}}}})
async def export_rooms_csv(ctx: Ctx) -> Response:
    """The registry as a rooms CSV (UTF-8 with BOM, so Excel shows Chinese)."""
    body = "\ufeff" + write_rooms_csv(ctx.registry.current.rooms)
    return Response(
        body.encode(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="rooms.csv"'},
    )


@router.post(
    "/rooms/import",
    response_model=CsvImport,
    responses={422: {"description": "The file's problems, each with its line"}},
)
async def import_rooms_csv(ctx: Ctx, request: Request, apply: bool = False) -> CsvImport:  # noqa: FBT001, FBT002 (FastAPI query ?apply=)
    """Check a rooms CSV (the body, as sent by a spreadsheet); with `apply=true`
    it replaces the whole registry in one new version."""
    data = await request.body()
    if len(data) > 2_000_000:
        raise TooLarge(Said("the file is larger than 2 MB", "文件超过 2 MB"))
    try:
        rooms = parse_rooms_csv(data, source="upload")
    except RoomsCsvError as exc:
        raise Invalid([p.said for p in exc.problems]) from None
    removed = await ctx.registry.import_rooms(rooms, apply=apply)
    return CsvImport(rooms=len(rooms), applied=apply, removed=removed)


@router.post("/devices/{device}/move", response_model=RegistryRoom)
async def move_device(
    ctx: Ctx, device: Annotated[str, Path(pattern=DEVICE_ID_PATTERN)], body: Adopt
) -> RegistryRoom:
    """Move a device to another room in one registry version (its old room has none)."""
    moved = await ctx.registry.move_device(device, body.room)
    await ctx.devices.forget_unknown_device(device)
    return moved


class RosterOut(BaseModel):
    #: `config` (escalation.roster from the file) or `admin` (saved here).
    source: str
    shifts: list[DutyShift]


@router.get("/roster", response_model=RosterOut)
async def get_roster(ctx: Ctx) -> RosterOut:
    roster = ctx.roster
    return RosterOut(source=roster.source, shifts=roster.shifts)


@router.put("/roster", response_model=RosterOut)
async def put_roster(
    ctx: Ctx,
    shifts: Annotated[list[DutyShift], Body()],
    user: Annotated[User, Depends(require("admin"))],
) -> RosterOut:
    """Replace the duty roster; kept in the server's database from now on."""
    roster = ctx.roster
    await roster.replace(shifts, user.name)
    return RosterOut(source=roster.source, shifts=roster.shifts)
