"""The rooms CSV: the file a facility manager edits in a spreadsheet.

It seeds the server's registry. Every problem is reported with its line
number, all at once, so one round of fixes is enough.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from mamaroom.contract import RegistryRoom, check_hours
from mamaroom.said import HOURS_ZH as _VALUE_HOURS_ZH
from mamaroom.said import Said, validation

REQUIRED_COLUMNS = ("room_id", "name", "name_en", "building", "floor")
OPTIONAL_COLUMNS = (
    "building_en",
    "device",
    "access",
    "company",
    "hours",
    "amenities",
    "in_service",
)
_TRUE = {"", "1", "yes", "y", "true", "是", "在用"}
_FALSE = {"0", "no", "n", "false", "否", "停用"}


@dataclass(frozen=True)
class RowProblem:
    line: int
    message: str
    #: The same in Chinese, for the admin page (mamaroom/said.py).
    message_zh: str = ""

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"

    @property
    def said(self) -> Said:
        return Said(str(self), f"第 {self.line} 行：{self.message_zh or self.message}")


class RoomsCsvError(ValueError):
    """The rooms CSV cannot be used; `problems` lists each bad row by line."""

    def __init__(self, source: str, problems: list[RowProblem]) -> None:
        self.source = source
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{source}: {len(problems)} problem(s)\n{shown}{more}")


def read_rooms_csv(path: Path) -> list[RegistryRoom]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RoomsCsvError(
            str(path), [RowProblem(0, f"cannot read: {exc.strerror}", f"无法读取：{exc.strerror}")]
        ) from None
    return parse_rooms_csv(data, source=str(path))


def parse_rooms_csv(data: bytes, source: str = "rooms.csv") -> list[RegistryRoom]:
    """Parse and check the whole file; raise RoomsCsvError listing every bad row."""
    try:
        text = data.decode("utf-8-sig")  # Excel's "CSV UTF-8" starts with a BOM
    except UnicodeDecodeError as exc:
        raise RoomsCsvError(
            source,
            [
                RowProblem(
                    0,
                    f"not UTF-8 (byte {exc.start}); in Excel use 'Save as: CSV UTF-8'",
                    f"不是 UTF-8 编码（第 {exc.start} 字节）；在 Excel 中请“另存为 CSV UTF-8”",
                )
            ],
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise RoomsCsvError(
            source,
            [
                RowProblem(
                    1,
                    f"missing column(s): {', '.join(missing)}",
                    f"缺少列：{', '.join(missing)}",
                )
            ],
        )
    reader.fieldnames = header

    problems: list[RowProblem] = []
    rooms: list[RegistryRoom] = []
    room_lines: dict[str, int] = {}
    device_lines: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue  # blank line
        if None in row:
            problems.append(RowProblem(line, "more cells than columns", "单元格比列多"))
            continue
        cells = {k: (v or "").strip() for k, v in row.items()}
        try:
            room = _room_from_cells(cells)
        except (ValueError, ValidationError) as exc:
            problems.append(RowProblem(line, *_explain(exc)))
            continue
        if room.id in room_lines:
            problems.append(
                RowProblem(
                    line,
                    f"duplicate room {room.id!r} (first on line {room_lines[room.id]})",
                    f"房间 {room.id!r} 重复（第一次出现在第 {room_lines[room.id]} 行）",
                )
            )
            continue
        if room.device and room.device in device_lines:
            problems.append(
                RowProblem(
                    line,
                    f"device {room.device!r} already used on line {device_lines[room.device]}",
                    f"设备 {room.device!r} 已在第 {device_lines[room.device]} 行使用",
                )
            )
            continue
        room_lines[room.id] = line
        if room.device:
            device_lines[room.device] = line
        rooms.append(room)
    if problems:
        raise RoomsCsvError(source, problems)
    if not rooms:
        raise RoomsCsvError(source, [RowProblem(1, "no rooms in file", "文件中没有房间")])
    return rooms


def _room_from_cells(cells: dict[str, str]) -> RegistryRoom:
    floor_text = cells["floor"]
    try:
        floor = int(floor_text)
    except ValueError:
        raise CellError(
            Said(
                f"floor must be a whole number, got {floor_text!r}",
                f"楼层：必须是整数（填的是 {floor_text!r}）",
            )
        ) from None
    try:
        hours = check_hours(cells.get("hours", ""))
    except ValueError as exc:
        raise CellError(Said(str(exc), f"开放时间：{_VALUE_HOURS_ZH}")) from None
    in_service_text = cells.get("in_service", "").lower()
    if in_service_text not in _TRUE | _FALSE:
        raise CellError(
            Said(
                f"in_service must be yes or no, got {cells['in_service']!r}",
                f"是否启用：必须是 yes 或 no（填的是 {cells['in_service']!r}）",
            )
        )
    access = cells.get("access", "") or "public"
    amenities = [a.strip() for a in re.split(r"[;；、]", cells.get("amenities", "")) if a.strip()]
    return RegistryRoom(
        id=cells["room_id"],
        name=cells["name"],
        name_en=cells["name_en"],
        building=cells["building"],
        building_en=cells.get("building_en", ""),
        floor=floor,
        device=cells.get("device") or None,
        access=access,
        company=cells.get("company", ""),
        hours=hours,
        amenities=amenities,
        in_service=in_service_text in _TRUE,
    )


def _explain(exc: Exception) -> Said:
    if isinstance(exc, ValidationError):
        # The CSV's column names: `room_id`, not the model's `id`.
        errors = [
            {**e, "loc": tuple("room_id" if p == "id" else p for p in e["loc"])}
            for e in exc.errors()
        ]
        return validation(errors)
    if isinstance(exc, CellError):
        return exc.said
    return Said(str(exc), str(exc))


class CellError(ValueError):
    """A cell the CSV reader itself refuses, said in both languages."""

    def __init__(self, said: Said) -> None:
        super().__init__(said.en)
        self.said = said


def write_rooms_csv(rooms: list[RegistryRoom]) -> str:
    """The inverse of parse_rooms_csv, for exporting the registry back to a spreadsheet."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)
    for r in rooms:
        writer.writerow(
            [
                r.id,
                r.name,
                r.name_en,
                r.building,
                r.floor,
                r.building_en,
                r.device or "",
                r.access,
                r.company,
                r.hours,
                ";".join(r.amenities),
                "yes" if r.in_service else "no",
            ]
        )
    return out.getvalue()
