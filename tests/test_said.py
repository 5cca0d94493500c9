"""What the server refuses, said in both languages of the pages: English in
`detail` (unchanged for API clients), Chinese in `detail_zh` for the admin
page read in Chinese (mamaroom/said.py). Measured before: a bad rooms CSV,
a weak password or a device already in another room came back in English
only, and the Chinese admin page showed it as is."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from mamaroom.contract import RegistryRoom
from mamaroom.registry import RoomsCsvError, parse_rooms_csv
from mamaroom.said import Said, validation
from tests.support import Services

CJK = re.compile(r"[\u3400-\u9fff]")
HEADER = "room_id,name,name_en,building,floor,hours,in_service\n"


def test_validation_errors_are_said_in_both_languages() -> None:
    with pytest.raises(ValidationError) as caught:
        RegistryRoom.model_validate(
            {"id": "T1-0101", "name": "", "name_en": "x" * 101, "building": "B", "floor": "三"}
        )
    said = validation(caught.value.errors())
    assert "name" in said.en and "floor" in said.en
    assert "名称：不能为空" in said.zh
    assert "英文名称：太长（最多 100 个字符）" in said.zh
    assert "楼层：必须是整数（填的是 '三'）" in said.zh


def test_every_problem_of_a_rooms_csv_is_said_in_chinese() -> None:
    rows = [
        "T1-0101,一楼,1F,一号楼,一楼,,yes",  # floor not a number
        "T1-0102,一楼,1F,一号楼,1,早八点到晚八点,yes",  # hours not HH:MM-HH:MM
        "T1-0103,一楼,1F,一号楼,1,,也许",  # in_service neither yes nor no
        "T1-0101,一楼,1F,一号楼,1,,yes",  # valid, but its id is taken below
        "T1-0101,一楼,1F,一号楼,1,,yes",
        "T1-0104,,1F,一号楼,1,,yes",  # no name
    ]
    said = parse_error((HEADER + "\n".join(rows) + "\n").encode())
    assert [s.zh.split("：", 1)[0] for s in said] == [
        "第 2 行",
        "第 3 行",
        "第 4 行",
        "第 6 行",
        "第 7 行",
    ], said
    assert "楼层：必须是整数" in said[0].zh
    assert "开放时间：格式应为 HH:MM-HH:MM" in said[1].zh
    assert "是否启用：必须是 yes 或 no" in said[2].zh
    assert "重复" in said[3].zh and "第 5 行" in said[3].zh
    assert "名称：不能为空" in said[4].zh
    for s in said:
        assert s.en.startswith("line ") and not CJK.search(s.en.split(":", 1)[0])

    missing = parse_error(b"room_id,name\nX,y\n")
    assert missing[0].zh.startswith("第 1 行：缺少列：")
    assert "不是 UTF-8" in parse_error(b"room_id\n\xc4\xb8\xd3\xa4\xff\n")[0].zh  # GBK-ish


def parse_error(data: bytes) -> list[Said]:
    with pytest.raises(RoomsCsvError) as caught:
        parse_rooms_csv(data, source="upload")
    return [p.said for p in caught.value.problems]


def test_the_admin_api_says_its_refusals_in_chinese_too(services: Services) -> None:
    bad = services.admin(
        "POST",
        "/api/admin/rooms/import",
        content=(HEADER + "T1-0101,一楼,1F,一号楼,一楼,,yes\n").encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert bad.status_code == 422
    assert bad.json()["detail"] == ["line 2: floor must be a whole number, got '一楼'"]
    assert bad.json()["detail_zh"] == ["第 2 行：楼层：必须是整数（填的是 '一楼'）"]

    weak = services.admin(
        "PUT", "/api/admin/users/li.ming", json={"role": "staff", "password": "12345"}
    )
    assert weak.status_code == 422
    assert "at least 10" in weak.json()["detail"]
    assert weak.json()["detail_zh"] == "密码至少需要 10 个字符"

    patch = services.admin("PATCH", "/api/admin/rooms/T1-0101", json={"hours": "8点"})
    assert patch.status_code == 422 and "hours" in str(patch.json()["detail"])
    assert "开放时间：格式应为" in patch.json()["detail_zh"]

    gone = services.admin("PATCH", "/api/admin/rooms/NOPE-0001", json={"cleaning": True})
    assert gone.status_code == 404
    assert gone.json() == {"detail": "no room 'NOPE-0001'", "detail_zh": "没有房间 'NOPE-0001'"}

    # FastAPI's own validation of a request body: its answer, and the Chinese beside it.
    body = services.admin("PUT", "/api/admin/rooms/T1-0101", json={"id": "T1-0101"})
    assert body.status_code == 422
    assert isinstance(body.json()["detail"], list)
    assert "名称：必须填写" in body.json()["detail_zh"]
