"""Escalation on an injected clock: tiers in order, repeats until acknowledged,
a duty roster by building and shift, and a restart that carries on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from mamaroom.config import (
    DutyShift,
    EscalationSettings,
    EscalationTier,
    EspaSettings,
    ImSettings,
    PagesSettings,
    PagingSettings,
    Settings,
)
from mamaroom.contract import RegistryRoom
from paging.registry import build_channels
from server.alerts_db import AlertsDb
from server.notify.wiring import call_text
from server.services.alert_model import Alert, AlertStatus
from server.services.escalation import ONLY_PUSH, Escalator, paging_gaps, refuse_unpaged
from server.services.webpush import make_vapid_keys

# 2026-11-24 10:00 in Shanghai: inside the day shift below.
T0 = int(datetime(2026, 11, 24, 2, 0, tzinfo=UTC).timestamp() * 1000)
ROOM = RegistryRoom(
    id="SP1-0301",
    name="软件园1号楼3层母婴室",
    name_en="SP1 3F",
    building="软件园1号楼",
    building_en="Software Park Bldg 1",
    floor=3,
    device="n-sp1-0301",
)
SETTINGS = EscalationSettings(
    tiers=[
        EscalationTier(after_s=0, on_duty=True, repeat_s=30),
        EscalationTier(after_s=60, pagers=["200", "900"]),
        EscalationTier(after_s=180, pagers=["800"]),
    ],
    roster=[
        DutyShift(name="Wang", pager="101", buildings=["软件园1号楼"], hours="08:00-20:00"),
        DutyShift(name="Li", pager="102", buildings=["软件园1号楼"], hours="20:00-08:00"),
        DutyShift(name="Zhou", pager="103", buildings=["腾飞园区A座"]),
    ],
)


class Recorder:
    """Stands in for the pager hardware; ESPA itself is tested on a real pty."""

    name = "espa"
    ascii_only = True

    def reaches(self, target: str) -> bool:
        return target.isdigit()

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def __init__(self, clock: Callable[[], int]) -> None:
        self.clock = clock
        self.pages: list[tuple[int, str]] = []

    def send(self, target: str, text: str, done: Callable[[bool, str], None] | None = None) -> None:
        # 7-bit: the English name, never Chinese; a commissioning call says so.
        assert text in ("CALL SP1 3F (SP1-0301)", "TEST CALL SP1 3F (SP1-0301)")
        self.pages.append(((self.clock() - T0) // 1000, target))
        if done:
            done(True, "ok")


def test_tiers_repeats_roster_and_a_restart(tmp_path: Path) -> None:
    now = [T0]
    clock = lambda: now[0]  # noqa: E731
    recorder = Recorder(clock)

    def escalator(db: AlertsDb) -> Escalator:
        e = Escalator(
            db,
            SETTINGS,
            ZoneInfo("Asia/Shanghai"),
            lambda _r: ROOM,
            call_text,
            clock=clock,
            monotonic=lambda: now[0] / 1000,
        )
        e.add_channel(recorder)
        return e

    async def run() -> tuple[list[tuple[int, str]], Alert]:
        db = AlertsDb(tmp_path / "server.sqlite")
        await db.open()
        alert, _ = await db.raise_call(
            room=ROOM.id, device="n-sp1-0301", call_id="c-1", at_ms=T0, channel="button", test=False
        )
        esc = escalator(db)
        for t in range(0, 91):  # one tick a second, 0..90 s
            now[0] = T0 + t * 1000
            await esc.tick()
        # The server restarts at 90 s: a new escalator over the same database.
        await db.close()
        db = AlertsDb(tmp_path / "server.sqlite")
        await db.open()
        esc = escalator(db)
        for t in range(91, 200):
            now[0] = T0 + t * 1000
            await esc.tick()
            if t == 185:  # acknowledged: paging stops
                await db.advance(
                    alert["id"],
                    AlertStatus.ACKNOWLEDGED,
                    at_ms=now[0],
                    who="wang",
                    channel="console",
                )
        final = await db.get(alert["id"])
        await db.close()
        assert final is not None
        return recorder.pages, final

    pages, final = asyncio.run(run())
    assert pages == [
        (0, "101"),  # tier 1: only the day shift of this building
        (30, "101"),  # repeated every 30 s
        (60, "101"),
        (60, "200"),
        (60, "900"),  # tier 2 starts; tier 1 repeats
        (90, "101"),  # just before the restart
        (120, "101"),
        (150, "101"),  # after the restart: same rhythm, no re-page burst
        (180, "101"),
        (180, "800"),  # tier 3
    ]
    assert final["escalation_level"] == 3 and final["status"] == "acknowledged"
    steps = [e["what"] for e in final["timeline"]]
    assert steps.count("escalated") == 3


def test_the_night_shift_and_other_buildings(tmp_path: Path) -> None:
    night = int(datetime(2026, 11, 24, 14, 0, tzinfo=UTC).timestamp() * 1000)  # 22:00 local
    esc = Escalator(
        AlertsDb(tmp_path / "x.sqlite"),
        SETTINGS,
        ZoneInfo("Asia/Shanghai"),
        lambda _r: ROOM,
        call_text,
        clock=lambda: night,
    )
    assert esc.targets(SETTINGS.tiers[0], ROOM, night) == [("espa", "102")]
    other = ROOM.model_copy(update={"building": "腾飞园区A座", "building_en": "Tengfei A"})
    assert esc.targets(SETTINGS.tiers[0], other, night) == [("espa", "103")]


def test_a_room_in_test_mode_pages_only_the_tester(tmp_path: Path) -> None:
    now = [T0]
    recorder = Recorder(lambda: now[0])

    async def run() -> tuple[list[tuple[int, str]], Alert]:
        db = AlertsDb(tmp_path / "server.sqlite")
        await db.open()
        await db.set_test_mode(ROOM.id, "555", T0 + 3_600_000, who="installer")
        assert await db.test_mode(ROOM.id, T0) == "555"
        alert, _ = await db.raise_call(
            room=ROOM.id, device="n-sp1-0301", call_id="t-1", at_ms=T0, channel="button", test=True
        )
        esc = Escalator(
            db,
            SETTINGS,
            ZoneInfo("Asia/Shanghai"),
            lambda _r: ROOM,
            call_text,
            clock=lambda: now[0],
            monotonic=lambda: now[0] / 1000,
        )
        esc.add_channel(recorder)
        for t in range(0, 200, 10):
            now[0] = T0 + t * 1000
            await esc.tick()
        final = await db.get(alert["id"])
        assert await db.test_mode(ROOM.id, T0 + 3_600_001) is None  # it ends by itself
        await db.close()
        assert final is not None
        return recorder.pages, final

    pages, final = asyncio.run(run())
    assert pages == [(0, "555")]  # the tester, once; no tiers, no duty staff
    assert final["test"] == 1


def site(escalation: EscalationSettings, paging: PagingSettings) -> Settings:
    return Settings(escalation=escalation, paging=paging)


def gaps_of(escalation: EscalationSettings, paging: PagingSettings) -> list[str]:
    return paging_gaps(escalation, build_channels(site(escalation, paging)))


def test_a_configuration_that_pages_nobody_is_reported() -> None:
    # The defaults: tier 1 pages the duty roster, which is empty.
    gaps = gaps_of(EscalationSettings(), PagingSettings())
    assert gaps[0].startswith("no escalation tier can page anyone")
    assert any("duty roster, which is empty" in g for g in gaps)
    assert refuse_unpaged(site(EscalationSettings(), PagingSettings())) is not None
    # Pagers without a serial port, an IM name that is not configured.
    gaps = gaps_of(
        EscalationSettings(tiers=[EscalationTier(pagers=["200"], im=["wecom"])]), PagingSettings()
    )
    assert gaps[0].startswith("no escalation tier can page anyone")
    assert any("pages espa 200, but paging.espa.port is empty" in g for g in gaps)
    assert any("pages im wecom, but paging.im.destinations is empty" in g for g in gaps)
    im = PagingSettings(im=ImSettings(destinations={"wecom": "json://127.0.0.1:9/wecom"}))
    gaps = gaps_of(EscalationSettings(tiers=[EscalationTier(targets=["im:desk"])]), im)
    assert "im cannot reach desk (not in paging.im.destinations)" in gaps[1], gaps
    # A channel kind nobody has built.
    gaps = gaps_of(EscalationSettings(tiers=[EscalationTier(targets=["sms:13800000000"])]), im)
    assert any("no channel named 'sms' is configured" in g for g in gaps), gaps
    # Reachable: ESPA with the roster, or one known IM destination, by either spelling.
    espa = PagingSettings(espa=EspaSettings(port="/dev/ttyUSB0"))
    assert gaps_of(SETTINGS, espa) == []
    assert gaps_of(EscalationSettings(tiers=[EscalationTier(im=["wecom"])]), im) == []
    assert gaps_of(EscalationSettings(tiers=[EscalationTier(targets=["im:wecom"])]), im) == []
    assert (
        refuse_unpaged(site(EscalationSettings(tiers=[EscalationTier(im=["wecom"])]), im)) is None
    )


def test_web_push_is_a_channel_tiers_name() -> None:
    """`push:staff` or `push:<account>` in a tier: reachable once the VAPID
    keys are set, and said when it is the only way a call goes out."""
    push_only = EscalationSettings(tiers=[EscalationTier(targets=["push:staff"])])
    gaps = gaps_of(push_only, PagingSettings())
    assert gaps[0].startswith("no escalation tier can page anyone")
    assert any("pages push staff, but pages.vapid_public_key" in g for g in gaps), gaps
    public, private = make_vapid_keys()
    keys = PagesSettings(vapid_public_key=public, vapid_private_key=private)
    settings = Settings(escalation=push_only, pages=keys)
    assert paging_gaps(push_only, build_channels(settings)) == [ONLY_PUSH]
    assert refuse_unpaged(settings) is None  # phones only is weak, not nobody
    # An account by name; a target no account can be named is a typo, found now.
    espa = PagingSettings(espa=EspaSettings(port="/dev/ttyUSB0"))
    beside = EscalationSettings(
        tiers=[EscalationTier(pagers=["101"], targets=["push:wang.li", "push:x"])]
    )
    settings = Settings(escalation=beside, pages=keys, paging=espa)
    assert paging_gaps(beside, build_channels(settings)) == [
        "escalation tier 1: push cannot reach x"
    ]


def test_a_wall_clock_step_neither_stops_nor_bunches_pages(tmp_path: Path) -> None:
    """The server's clock is stepped back an hour, then forward two, mid-call:
    pages keep the monotonic rhythm (measured on main before: 1 page in 3
    minutes instead of 8, and the manager tier never reached)."""
    wall, mono = [T0], [1000.0]
    recorder = Recorder(lambda: T0 + int((mono[0] - 1000.0) * 1000))

    async def run() -> list[tuple[int, str]]:
        db = AlertsDb(tmp_path / "server.sqlite")
        await db.open()
        await db.raise_call(
            room=ROOM.id, device="n-sp1-0301", call_id="c-1", at_ms=T0, channel="button", test=False
        )
        esc = Escalator(
            db,
            SETTINGS,
            ZoneInfo("Asia/Shanghai"),
            lambda _r: ROOM,
            call_text,
            clock=lambda: wall[0],
            monotonic=lambda: mono[0],
        )
        esc.add_channel(recorder)
        for t in range(0, 200):
            mono[0] = 1000.0 + t
            step = -3_600_000 if 20 <= t < 100 else (7_200_000 if t >= 100 else 0)
            wall[0] = T0 + t * 1000 + step
            await esc.tick()
        await db.close()
        return recorder.pages

    pages = asyncio.run(run())
    assert pages == [
        (0, "101"),
        (30, "101"),
        (60, "101"),
        (60, "200"),
        (60, "900"),
        (90, "101"),
        (120, "101"),
        (150, "101"),
        (180, "101"),
        (180, "800"),
    ]


class Refusing:
    """An IM channel that is configured but whose destination is unknown to it."""

    name = "im"
    ascii_only = False

    def reaches(self, target: str) -> bool:
        return False

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def send(self, target: str, text: str, done: Callable[[bool, str], None] | None = None) -> None:
        if done:
            done(False, f"no IM destination named {target!r}")


def test_nobody_to_page_and_failed_pages_are_on_the_alert(tmp_path: Path) -> None:
    """The console must never say "paged" when nobody was: a tier with no
    reachable target marks the alert, and a failed page is recorded per target."""
    now = [T0]
    settings = EscalationSettings(
        tiers=[EscalationTier(after_s=0, on_duty=True), EscalationTier(after_s=60, im=["desk"])]
    )

    async def run() -> Alert:
        db = AlertsDb(tmp_path / "server.sqlite")
        await db.open()
        alert, _ = await db.raise_call(
            room=ROOM.id, device="n-sp1-0301", call_id="c-1", at_ms=T0, channel="button", test=False
        )
        loop = asyncio.get_running_loop()
        outcomes: list[asyncio.Future[None]] = []

        def paged(alert_id: int, channel: str, target: str, ok: bool, detail: str) -> None:
            outcomes.append(
                asyncio.ensure_future(
                    db.note_paged(
                        alert_id, channel=channel, target=target, ok=ok, at_ms=now[0], detail=detail
                    ),
                    loop=loop,
                )
            )

        esc = Escalator(
            db,
            settings,
            ZoneInfo("Asia/Shanghai"),
            lambda _r: ROOM,
            call_text,
            clock=lambda: now[0],
            monotonic=lambda: now[0] / 1000,
            on_paged=paged,
        )
        esc.add_channel(Refusing())
        await esc.tick()  # tier 1: the duty roster is empty, no ESPA channel at all
        first = await db.get(alert["id"])
        now[0] = T0 + 61_000
        await esc.tick()  # tier 2: the IM page fails
        await asyncio.gather(*outcomes)
        final = await db.get(alert["id"])
        await db.close()
        assert first is not None and final is not None
        assert first["nobody"] is True and first["paging"] == {}
        return final

    final = asyncio.run(run())
    assert final["paging"] == {"desk": {"channel": "im", "ok": False, "at_ms": T0 + 61_000}}
    whats = [e["what"] for e in final["timeline"]]
    assert whats.count("nobody to page") == 1 and whats.count("page failed") == 1
    assert "paged" not in whats
