"""Messages for people in the pages' two languages.

The admin page shows what the server refuses (a bad rooms CSV, a weak
password, a device already in another room) in the language it is read in.
The API keeps English in `detail`, as clients and logs expect, and puts the
Chinese beside it in `detail_zh` (server/app.py); the page picks one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple


class Said(NamedTuple):
    """One message, in English and in Chinese."""

    en: str
    zh: str


#: Field names as the admin page's form and the rooms CSV's columns call them.
FIELDS_ZH = {
    "id": "房间编号",
    "room_id": "房间编号",
    "name": "名称",
    "name_en": "英文名称",
    "building": "楼栋",
    "building_en": "楼栋英文名",
    "floor": "楼层",
    "device": "设备编号",
    "access": "开放范围",
    "company": "公司",
    "hours": "开放时间",
    "amenities": "设施",
    "in_service": "是否启用",
    "cleaning": "清洁中",
    "password": "密码",
    "role": "角色",
    "room": "房间",
    "name_or_room": "房间",
    "pager": "寻呼机号",
    "buildings": "楼栋",
}

#: What each kind of pydantic error means, in Chinese ({…}: its context).
_KINDS_ZH = {
    "missing": "必须填写",
    "string_too_short": "不能为空",
    "string_too_long": "太长（最多 {max_length} 个字符）",
    "string_pattern_mismatch": "格式不对",
    "string_type": "必须是文字",
    "int_parsing": "必须是整数",
    "int_type": "必须是整数",
    "int_from_float": "必须是整数",
    "float_parsing": "必须是数字",
    "bool_parsing": "必须是“是”或“否”",
    "bool_type": "必须是“是”或“否”",
    "literal_error": "只能是 {expected}",
    "enum": "只能是 {expected}",
    "greater_than_equal": "不能小于 {ge}",
    "less_than_equal": "不能大于 {le}",
    "greater_than": "必须大于 {gt}",
    "less_than": "必须小于 {lt}",
    "list_type": "必须是列表",
    "extra_forbidden": "不认识这一项",
    "json_invalid": "不是有效的 JSON",
    "model_attributes_type": "格式不对",
    "dict_type": "格式不对",
}

HOURS_ZH = "格式应为 HH:MM-HH:MM（如 08:00-20:00），全天开放则留空"
#: Fields whose own validators raise `value_error`: what they want, in Chinese.
_VALUE_ZH = {"hours": HOURS_ZH}


def field_zh(name: str) -> str:
    return FIELDS_ZH.get(name, name)


def _where(loc: Sequence[Any]) -> str:
    """The field an error is about: the last named part of its location
    (FastAPI puts `body` or `query` first)."""
    names = [str(p) for p in loc if isinstance(p, str) and p not in ("body", "query", "path")]
    return names[-1] if names else ""


def validation(errors: Sequence[Mapping[str, Any]]) -> Said:
    """pydantic's (or FastAPI's) validation errors, for people: one
    sentence per field, in both languages."""
    en: list[str] = []
    zh: list[str] = []
    for err in errors:
        field = _where(err.get("loc", ()))
        got = err.get("input")
        shown = "" if got is None or isinstance(got, dict | list) else repr(got)
        en.append(f"{field or 'row'}: {err.get('msg', '')}" + (f" (got {shown})" if shown else ""))
        kind = str(err.get("type", ""))
        text = _VALUE_ZH.get(field) if kind == "value_error" else None
        if text is None:
            context = {k: _zh_value(v) for k, v in (err.get("ctx") or {}).items()}
            try:
                text = _KINDS_ZH.get(kind, "取值不对").format(**context)
            except (KeyError, IndexError):
                text = "取值不对"
        zh.append(
            f"{field_zh(field) if field else '这一行'}：{text}"
            + (f"（填的是 {shown}）" if shown else "")
        )
    return Said("; ".join(en), "；".join(zh))


def _zh_value(value: Any) -> str:
    # pydantic's `expected` reads "'public' or 'company'".
    return str(value).replace(" or ", " 或 ")
