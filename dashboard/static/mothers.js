// The mothers' pages: `/` (every room, nearest free first) and `/r/{room}`
// (one room, e.g. from the QR code on its door). Live over SSE; no login.
"use strict";
(function () {
  const el = MR.el;
  const AMENITY_EN = { 哺乳椅: "nursing chair", 洗手池: "sink", 尿布台: "changing table", 电源插座: "power socket",
    婴儿床: "cot", 沙发: "sofa", 温奶器: "bottle warmer", 冰箱: "fridge", 空调: "air conditioning", 饮水机: "water dispenser" };
  const T = MR.i18n({
    zh: {
      pageTitle: "母婴室 · 空闲查询", roomPageTitle: "母婴室", title: "母婴室", skip: "跳到房间列表", loading: "正在加载…",
      whereTitle: "我现在在", building: "楼宇", floor: "楼层", company: "我的单位（可选）", noCompany: "不限",
      chooseBuilding: "请选择楼宇", floorN: (n) => n < 0 ? `地下${-n}层` : `${n}层`,
      nearestTitle: "离我最近的空闲母婴室", alsoNear: "附近其他空闲母婴室", allRooms: "‹ 全部母婴室",
      chooseFirst: "选择您所在的楼宇和楼层，为您找最近的空闲母婴室。",
      noneFreeNear: (n) => `附近 ${n} 间母婴室都在使用中。`, noneNear: "附近没有可用的母婴室。", noneOpenNear: "附近的母婴室现在都未开放或状态未知。",
      waitAbout: (m, w) => `预计约 ${m} 分钟后有空位` + (w ? `（通常不超过 ${w} 分钟）` : "") + "。",
      waitUnknown: "暂时无法估计等待时间。",
      walk: (m) => m < 0.75 ? "就在附近" : `步行约 ${Math.round(m)} 分钟`, sameFloor: "同层",
      free: "空闲", occupied: "使用中", offline: "状态未知", closed: "未开放", out: "暂停使用", cleaning: "清洁中",
      offlineNote: "设备离线，暂时无法确认是否空闲", hours: (h) => `开放 ${h}`, allDay: "全天开放",
      public: "园区职工均可使用", companyOnly: (c) => ["仅限", c, "员工"], amenities: "设施",
      summary: (f, n) => `全园 ${f} 间空闲 / 共 ${n} 间`, inBuilding: (f, n) => `${f}/${n} 间空闲`,
      live: "● 实时", reconnect: "连接中断，正在重连…",
      remindMe: "附近有空位时提醒我", remindRoom: "有空位时提醒我", remindCancel: "取消提醒",
      remindOn: (n) => `已开启提醒：附近 ${n} 间中任一间空出时会响铃、振动提醒您（请保持本页打开）。`,
      remindPush: "关闭本页后也会通过系统通知提醒您。",
      freeNow: "现在就有空位：", fired: (name) => `有空位了：${name}`, firedTitle: "母婴室有空位了",
      noSuchRoom: "没有找到这个母婴室。", staffLink: "工作人员入口", since: (m) => `已持续 ${m}`,
      go: "查看",
      remindWechat: "有空位时通知我（微信）", wxConnecting: "正在连接微信…",
      wxAgree: "请点下方按钮，同意接收一次“有空位”的微信通知：", wxAllow: "同意接收通知",
      wxOn: (n) => `已开启微信提醒：附近 ${n} 间中任一间空出时，公众号会给您发一条通知（2 小时内有效）。`,
      wxWaiting: "已开启微信提醒：有空位时公众号会给您发一条通知（2 小时内有效）。",
      wxDeclined: "您没有同意接收微信通知；保持本页打开时仍会提醒您。",
      wxUnavailable: "此微信版本无法订阅通知；保持本页打开时会提醒您。",
      wxFailed: "暂时连不上微信；保持本页打开时会提醒您。",
      // docs/privacy.md: keep the two languages saying the same, and both true.
      privacyTitle: "隐私说明",
      privacyText: "使用本页无需登录，我们不收集您的姓名、电话等信息；您选择的楼宇和楼层只保存在您的手机上。只有在您开启“有空位时提醒我”时，服务器才保存这部手机的推送地址（在微信中为您的微信 openid）和所选的母婴室：提醒发出或取消后即删除，未发出的 2 小时后失效并删除。访问日志不保存完整的 IP 地址。",
    },
    en: {
      pageTitle: "Nursing rooms · free now", roomPageTitle: "Nursing room", title: "Nursing rooms", skip: "Skip to the rooms", loading: "Loading…",
      whereTitle: "I am in", building: "Building", floor: "Floor", company: "My company (optional)", noCompany: "Any",
      chooseBuilding: "Choose a building", floorN: (n) => n < 0 ? `B${-n}` : `${n}F`,
      nearestTitle: "Nearest free rooms", alsoNear: "Other free rooms nearby", allRooms: "‹ All rooms",
      chooseFirst: "Choose your building and floor to see the nearest free room.",
      noneFreeNear: (n) => `All ${n} rooms near you are in use.`, noneNear: "No usable room near you.", noneOpenNear: "The rooms near you are closed now or their status is unknown.",
      waitAbout: (m, w) => `One should be free in about ${m} min` + (w ? ` (usually within ${w} min)` : "") + ".",
      waitUnknown: "The wait cannot be estimated right now.",
      walk: (m) => m < 0.75 ? "right here" : `about ${Math.round(m)} min walk`, sameFloor: "same floor",
      free: "Free", occupied: "In use", offline: "Status unknown", closed: "Closed now", out: "Out of service", cleaning: "Being cleaned",
      offlineNote: "Its sensor is offline: we cannot tell if it is free", hours: (h) => `Open ${h}`, allDay: "Open all day",
      public: "Open to everyone in the park", companyOnly: (c) => [c, " staff only"], amenities: "Amenities",
      summary: (f, n) => `${f} of ${n} rooms free in the park`, inBuilding: (f, n) => `${f}/${n} free`,
      live: "● Live", reconnect: "Connection lost, reconnecting…",
      remindMe: "Tell me when a room near me is free", remindRoom: "Tell me when it is free", remindCancel: "Cancel reminder",
      remindOn: (n) => `Reminder on: a sound and vibration when one of ${n} rooms near you is free (keep this page open).`,
      remindPush: "You will also get a notification if you close this page.",
      freeNow: "Free right now:", fired: (name) => `A room is free: ${name}`, firedTitle: "A nursing room is free",
      noSuchRoom: "No such room.", staffLink: "Staff", since: (m) => `for ${m}`,
      go: "View",
      remindWechat: "Tell me in WeChat when a room is free", wxConnecting: "Connecting to WeChat…",
      wxAgree: "Tap below to allow one “room free” message in WeChat:", wxAllow: "Allow the message",
      wxOn: (n) => `WeChat reminder on: the official account will message you once when one of ${n} rooms near you is free (for 2 hours).`,
      wxWaiting: "WeChat reminder on: the official account will message you once when a room is free (for 2 hours).",
      wxDeclined: "You did not allow the WeChat message; this page still reminds you while it is open.",
      wxUnavailable: "This WeChat cannot subscribe to messages; this page reminds you while it is open.",
      wxFailed: "WeChat could not be reached; this page reminds you while it is open.",
      privacyTitle: "Privacy",
      privacyText: "This page needs no login and collects nothing about you: no name, no phone number. The building and floor you choose stay on this phone. Only when you ask to be told that a room is free does the server keep this phone's push address (in WeChat, your WeChat openid) and the rooms you chose: deleted once the reminder is sent or cancelled; one not sent lapses after 2 hours and is deleted. Access logs keep no full IP address.",
    },
  });

  const page = document.body.dataset.page;
  const roomId = page === "room" ? decodeURIComponent(location.pathname.split("/")[2] || "") : null;
  const rooms = new Map();
  let site = { buildings: [], minutes: {}, floor_minutes: 0.5, near_minutes: 5 };
  let where = MR.store.get("mamaroom.where", null); // {building, floor, company}
  let watching = null; // {ids: Set, push: bool, wechat: null or a state below}
  // Inside WeChat's in-app browser, with WeChat configured on the server, the
  // reminder goes through the park's service account (docs/wechat.md).
  const inWechat = /MicroMessenger/i.test(navigator.userAgent);
  let wx = null; // GET /api/wechat/config: {enabled, ready, waiting, app_id, template_id, jssdk_url}
  const wxOn = () => !!(inWechat && wx && wx.enabled);
  let loaded = false;
  window.__reminders = 0; // for tests: reminders fired

  const usable = (r) => r.access !== "company" || (where && where.company && where.company === r.company);
  function status(r) {
    if (!r.in_service) return "out";
    if (r.cleaning) return "cleaning";
    if (!r.open_now) return "closed";
    return r.state; // free, occupied, offline
  }
  const bname = (r) => MR.lang === "zh" ? r.building : (r.building_en || r.building);
  const rname = (r) => MR.lang === "zh" ? r.name : r.name_en;
  function shortName(r) {
    if (MR.lang === "zh") {
      const s = r.name.replace(r.building, "").replace(/^地?下?\d+层/, "");
      return s || r.name;
    }
    const i = r.name_en.indexOf(", ");
    return i > 0 ? r.name_en.slice(i + 2) : r.name_en;
  }
  function from() {
    if (page === "room") { const r = rooms.get(roomId); return r ? { building: r.building, floor: r.floor } : null; }
    return where && where.building ? where : null;
  }
  function minutes(r, origin) {
    origin = origin || from();
    if (!origin) return null;
    const base = origin.building === r.building ? 0 : (site.minutes[origin.building] || {})[r.building];
    if (base === undefined || base === null) return null;
    return base + Math.abs((origin.floor || 0) - r.floor) * site.floor_minutes;
  }
  const byNear = (a, b) => {
    const ma = minutes(a), mb = minutes(b);
    if (ma !== mb) return ma === null ? 1 : mb === null ? -1 : ma - mb;
    return a.id < b.id ? -1 : 1;
  };
  function nearSet() {
    const origin = from();
    if (!origin) return [];
    return [...rooms.values()].filter((r) => usable(r) && r.id !== roomId && (() => { const m = minutes(r, origin); return m !== null && m <= site.near_minutes; })())
      .concat(page === "room" && rooms.get(roomId) ? [rooms.get(roomId)] : []);
  }

  // --- the "where am I" choice ------------------------------------------------
  function renderWhere() {
    const bsel = document.getElementById("my-building");
    if (!bsel) return;
    const fsel = document.getElementById("my-floor");
    bsel.replaceChildren(el("option", { value: "", text: T("chooseBuilding") }),
      ...site.buildings.map((b) => el("option", { value: b.name, selected: where && where.building === b.name, text: MR.lang === "zh" ? b.name : b.name_en })));
    const b = site.buildings.find((x) => where && x.name === where.building);
    fsel.replaceChildren(...(b ? b.floors : [1]).map((f) => el("option", { value: f, selected: where && where.floor === f, text: T("floorN", f) })));
    fsel.disabled = !b;
  }
  function onWhereChange() {
    const b = document.getElementById("my-building").value;
    const f = parseInt(document.getElementById("my-floor").value, 10);
    const bd = site.buildings.find((x) => x.name === b);
    const floor = bd ? (bd.floors.includes(f) ? f : bd.floors[0]) : 1;
    where = b ? Object.assign({}, where || {}, { building: b, floor }) : null;
    MR.store.set("mamaroom.where", where);
    renderWhere();
    refreshWait(true);
    render();
  }

  // --- rendering ----------------------------------------------------------------
  function badge(r) {
    const s = status(r);
    return el("span", { class: `badge ${s}`, text: T(s) });
  }
  // Data with no English name (a company's, an amenity the page does not
  // know) stays Chinese on the English page, marked as such: screen readers
  // read it as Chinese, and it is not the page's language (tests/browser/test_languages.py).
  const HAN = /[\u3400-\u9fff]/;
  const named = (text) => MR.lang !== "zh" && HAN.test(text) ? el("span", { lang: "zh-CN", text }) : text;
  const company = (r) => T("companyOnly", r.company || "?").map((part, i) => i === (MR.lang === "zh" ? 1 : 0) ? named(part) : part);
  function notes(r, full) {
    const out = [r.hours ? T("hours", r.hours.replace("-", "–")) : T("allDay")];
    if (r.access === "company") out.push(" · ", ...company(r));
    else if (full) out.push(" · ", T("public"));
    return out;
  }
  function amenities(r) {
    return r.amenities.map((a) => MR.lang === "zh" ? a : named(AMENITY_EN[a] || a));
  }
  function nearestItem(r) {
    const m = minutes(r);
    return el("li", {},
      el("a", { href: `/r/${encodeURIComponent(r.id)}`, class: "near-room", "data-room": r.id },
        el("span", { class: "near-main" },
          el("strong", { text: `${bname(r)} · ${T("floorN", r.floor)}` }),
          el("span", { class: "near-sub" }, shortName(r), ...(r.access === "company" ? [" · ", ...company(r)] : []))),
        el("span", { class: "near-walk", text: m === null ? "" : T("walk", m) }),
        badge(r)));
  }
  function renderNearest() {
    const list = document.getElementById("nearest-list");
    const origin = from();
    const free = [...rooms.values()].filter((r) => r.available && usable(r) && r.id !== roomId).sort(byNear);
    list.replaceChildren();
    const waitEl = document.getElementById("wait");
    if (page === "room" && !rooms.get(roomId)) { // no such room: nothing "nearby" to show
      const section = list.closest("section");
      if (section) section.hidden = loaded;
      waitEl.hidden = true;
      return;
    }
    if (!origin && page === "list") {
      list.append(el("li", { class: "muted", text: T("chooseFirst") }));
      waitEl.hidden = true;
      return;
    }
    // By walking time (same floor first), never by room id.
    const near = nearSet().filter((r) => r.id !== roomId).sort(byNear);
    const nearFree = near.filter((r) => r.available);
    const shown = (nearFree.length ? nearFree : free).slice(0, 3);
    shown.forEach((r) => list.append(nearestItem(r)));
    const here = page === "room" ? rooms.get(roomId) : null;
    if (!nearFree.length && !(here && here.available)) {
      waitEl.hidden = false;
      const all = nearSet();
      const busy = all.filter((r) => r.in_service && r.open_now && !r.cleaning && r.state === "occupied").length;
      // filter: replaceChildren would show a null as the text "null".
      waitEl.replaceChildren(...[el("span", { text: busy ? T("noneFreeNear", busy) + " " : (all.length ? T("noneOpenNear") : T("noneNear")) + " " }),
        busy ? el("strong", { text: waitText() }) : null].filter(Boolean));
    } else {
      waitEl.hidden = true;
    }
  }
  function renderRoom() {
    const box = document.getElementById("room");
    const r = rooms.get(roomId);
    if (!r) { if (loaded) box.replaceChildren(el("p", { class: "error", text: T("noSuchRoom") })); return; }
    const s = status(r);
    document.title = `${rname(r)} · ${T(s)}`;
    box.className = `card room-detail ${s}`;
    box.replaceChildren(...[
      el("p", { class: "where-line", text: `${bname(r)} · ${T("floorN", r.floor)}` }),
      el("h1", { class: "room-title", text: rname(r) }),
      el("p", { class: `big-state ${s}`, "data-state": s, text: T(s) }),
      s === "offline" ? el("p", { class: "muted", text: T("offlineNote") }) : null,
      el("p", {}, ...notes(r, true)),
      r.amenities.length ? el("div", { class: "chips", "aria-label": T("amenities") }, ...amenities(r).map((a) => el("span", { class: "chip" }, a))) : null,
    ].filter(Boolean));
  }
  function roomItem(r) {
    const s = status(r);
    return el("li", {},
      el("a", { href: `/r/${encodeURIComponent(r.id)}`, class: `room ${s}`, "data-room": r.id, "data-state": s },
        el("span", { class: "room-main" },
          el("span", { class: "room-name", text: shortName(r) }),
          el("small", { class: "note" }, ...(s === "offline" ? [T("offlineNote")] : notes(r, false)))),
        badge(r)));
  }
  const openBuildings = new Map();
  function renderList() {
    const main = document.getElementById("rooms");
    const list = [...rooms.values()];
    const free = list.filter((r) => r.available).length;
    document.getElementById("summary").textContent = T("summary", free, list.length);
    const groups = new Map();
    for (const r of list) { if (!groups.has(r.building)) groups.set(r.building, []); groups.get(r.building).push(r); }
    const origin = from();
    const gmin = (rs) => { const ms = rs.map((r) => minutes(r)).filter((m) => m !== null); return ms.length ? Math.min(...ms) : null; };
    const ordered = [...groups].sort((a, b) => {
      const ma = gmin(a[1]), mb = gmin(b[1]);
      if (ma !== mb) return ma === null ? 1 : mb === null ? -1 : ma - mb;
      return b[1].filter((r) => r.available).length - a[1].filter((r) => r.available).length || (a[0] < b[0] ? -1 : 1);
    });
    const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.room : null;
    const frag = document.createDocumentFragment();
    ordered.forEach(([building, rs], i) => {
      const nfree = rs.filter((r) => r.available).length;
      const m = gmin(rs);
      const isOpen = openBuildings.has(building) ? openBuildings.get(building) : (origin ? i < 3 : i < 2);
      const details = el("details", { open: isOpen });
      details.addEventListener("toggle", () => openBuildings.set(building, details.open));
      details.append(el("summary", {},
        el("h2", { text: bname(rs[0]) }),
        el("span", { class: "bsum" }, el("span", { class: nfree ? "ok" : "", text: T("inBuilding", nfree, rs.length) }),
          m !== null ? el("span", { text: " · " + T("walk", m) }) : null)));
      const floors = new Map();
      for (const r of rs) { if (!floors.has(r.floor)) floors.set(r.floor, []); floors.get(r.floor).push(r); }
      const myFloor = origin && origin.building === building ? origin.floor : null;
      const fl = [...floors.keys()].sort((a, b) => myFloor === null ? a - b : Math.abs(a - myFloor) - Math.abs(b - myFloor) || a - b);
      for (const f of fl) {
        const frs = floors.get(f).sort((a, b) => (b.available - a.available) || (a.id < b.id ? -1 : 1));
        details.append(el("h3", { class: "floor", text: T("floorN", f) + (f === myFloor ? ` · ${T("sameFloor")}` : "") }),
          el("ul", { class: "rooms" }, ...frs.map(roomItem)));
      }
      frag.append(el("section", { class: "building", "data-building": building }, details));
    });
    main.replaceChildren(frag);
    if (focused) { const f = main.querySelector(`[data-room="${CSS.escape(focused)}"]`); if (f) f.focus(); }
  }
  function render() {
    T.apply();
    // On the public surface the staff console is not reachable: no link to it.
    const staffLink = document.getElementById("staff-link");
    if (staffLink) staffLink.hidden = MR.surface === "public";
    if (!loaded) return;
    if (page === "room") renderRoom(); else renderList();
    renderNearest();
    renderRemind();
  }
  let renderTimer = null;
  function schedule() { if (renderTimer === null) renderTimer = setTimeout(() => { renderTimer = null; render(); }, 50); }

  // --- predicted wait ---------------------------------------------------------
  let wait = null, waitKey = "", waitAt = 0;
  function waitText() {
    if (!wait || wait.wait_minutes === null || wait.wait_minutes === undefined) return T("waitUnknown");
    return T("waitAbout", Math.max(1, Math.round(wait.wait_minutes)), wait.within_minutes ? Math.max(1, Math.round(wait.within_minutes)) : null);
  }
  async function refreshWait(force) {
    const near = nearSet();
    if (!near.length || near.some((r) => r.available)) { wait = null; return; }
    const key = near.map((r) => r.id).sort().join(",");
    if (!force && key === waitKey && Date.now() - waitAt < 30000) return;
    waitKey = key; waitAt = Date.now();
    try { wait = await MR.api(`/api/wait?rooms=${encodeURIComponent(key)}`); } catch (e) { wait = null; }
    schedule();
  }

  // --- "tell me when a room near me is free" ----------------------------------
  function renderRemind() {
    const btn = document.getElementById("remind");
    const state = document.getElementById("remind-state");
    const wxBox = document.getElementById("wx-box");
    if (wxBox) wxBox.hidden = !(watching && watching.wechat === "agree");
    if (watching) {
      btn.textContent = T("remindCancel");
      btn.classList.remove("primary");
      btn.setAttribute("aria-pressed", "true");
      btn.disabled = false;
      state.textContent = watching.wechat ? wechatText() : T("remindOn", watching.ids.size) + (watching.push ? " " + T("remindPush") : "");
    } else {
      btn.textContent = T(wxOn() ? "remindWechat" : page === "room" ? "remindRoom" : "remindMe");
      btn.classList.add("primary");
      btn.setAttribute("aria-pressed", "false");
      btn.disabled = page === "list" && !from();
      if (!state.dataset.fired) state.textContent = "";
    }
  }
  function wechatText() {
    switch (watching.wechat) {
      case "on": return watching.ids.size ? T("wxOn", watching.ids.size) : T("wxWaiting");
      case "agree": return T("wxAgree");
      case "declined": return T("wxDeclined");
      case "unavailable": return T("wxUnavailable");
      case "failed": return T("wxFailed");
      default: return T("wxConnecting");
    }
  }
  async function toggleRemind() {
    const state = document.getElementById("remind-state");
    delete state.dataset.fired;
    if (watching) {
      const wasWechat = watching.wechat === "on";
      const pushed = watching.push;
      watching = null;
      render();
      if (wasWechat) { wx.waiting = false; try { await MR.api("/api/wechat/reminder", { method: "DELETE", headers: wxCsrf() }); } catch (e) { /* it lapses in 2 h */ } }
      // Cancelled: the server forgets this phone's push address now, not in 2 h.
      if (pushed) MR.pushUnsubscribe().catch(() => {});
      return;
    }
    MR.sound.unlock(); // inside the tap: browsers allow sound only after one
    const near = nearSet();
    const freeNow = near.filter((r) => r.available);
    if (freeNow.length) {
      state.dataset.fired = "1";
      state.replaceChildren(T("freeNow") + " ", el("a", { href: `/r/${encodeURIComponent(freeNow[0].id)}`, text: rname(freeNow[0]) }));
      return;
    }
    watching = { ids: new Set(near.map((r) => r.id)), push: false, wechat: null };
    if (wxOn()) { // WeChat's in-app browser: no Web Push there; the service account instead
      watching.wechat = "connecting";
      render();
      if (!wx.ready) { // learn who she is: WeChat's silent OAuth, then back here
        MR.store.set("mamaroom.wxPending", { ids: [...watching.ids], at: Date.now() });
        location.href = "/wechat/oauth/start?next=" + encodeURIComponent(location.pathname + location.search);
        return;
      }
      wechatAgree();
      return;
    }
    render();
    await MR.askNotify();
    try {
      watching.push = await MR.pushSubscribe("/api/push/reminder", { rooms: [...watching.ids], lang: MR.lang });
    } catch (e) { /* no Web Push here: the open page still reminds */ }
    render();
  }
  // --- WeChat: the service account's one-time subscription (docs/wechat.md) ----
  function wxCsrf() {
    const m = document.cookie.match(/(?:^|; )mamaroom_wx_csrf=([^;]*)/);
    return { "X-Wechat-CSRF": m ? decodeURIComponent(m[1]) : "" };
  }
  function wxState(s) { if (watching) { watching.wechat = s; render(); } }
  let sdk = null;
  function loadSdk() { // WeChat's JS-SDK, only ever loaded inside WeChat
    if (!sdk) {
      sdk = new Promise((resolve, reject) => {
        const tag = document.createElement("script");
        tag.src = wx.jssdk_url;
        tag.onload = () => (window.wx ? resolve(window.wx) : reject(new Error("no wx")));
        tag.onerror = () => reject(new Error("JS-SDK not loaded"));
        document.head.append(tag);
      });
      sdk.catch(() => { sdk = null; });
    }
    return sdk;
  }
  async function wechatAgree() {
    // WeChat's subscribe button (open tag wx-open-subscribe): the mother agrees
    // once, in WeChat's own popup; then the server may send her one message.
    try {
      const sdkWx = await loadSdk();
      const sig = await MR.api(`/api/wechat/jssdk?url=${encodeURIComponent(location.href.split("#")[0])}`);
      await new Promise((resolve, reject) => {
        sdkWx.ready(resolve);
        sdkWx.error(reject);
        sdkWx.config({ debug: false, appId: sig.app_id, timestamp: sig.timestamp, nonceStr: sig.nonce_str,
          signature: sig.signature, jsApiList: ["checkJsApi"], openTagList: ["wx-open-subscribe"] });
      });
    } catch (e) { wxState("unavailable"); return; }
    let box = document.getElementById("wx-box");
    if (!box) {
      box = el("div", { id: "wx-box", class: "wx-box" });
      document.getElementById("remind-box").append(box);
    }
    const tag = document.createElement("wx-open-subscribe");
    tag.setAttribute("template", wx.template_id);
    tag.id = "wx-subscribe";
    const style = el("script", { type: "text/wxtag-template", slot: "style" });
    style.textContent = "<style>.wx-allow{display:block;width:100%;padding:14px;border:0;border-radius:12px;background:#07c160;color:#fff;font-size:17px}</style>";
    const button = el("script", { type: "text/wxtag-template" });
    button.textContent = `<button class="wx-allow">${T("wxAllow")}</button>`;
    tag.append(style, button);
    tag.addEventListener("success", onSubscribed);
    tag.addEventListener("error", () => wxState("unavailable"));
    box.replaceChildren(tag);
    wxState("agree");
  }
  async function onSubscribed(e) {
    let status = "reject";
    try { status = JSON.parse(JSON.parse(e.detail.subscribeDetails)[wx.template_id]).status; } catch (err) { /* keep reject */ }
    if (status !== "accept" || !watching) { wxState("declined"); return; }
    try {
      await MR.api("/api/wechat/reminder", { method: "POST", headers: wxCsrf(), body: { rooms: [...watching.ids], lang: MR.lang } });
      wx.waiting = true;
      wxState("on");
    } catch (err) { wxState("failed"); }
  }
  document.addEventListener("WeixinOpenTagsError", () => wxState("unavailable"));
  async function wechatStart() {
    if (!inWechat) return;
    try { wx = await MR.api("/api/wechat/config"); } catch (e) { wx = null; }
    if (!wxOn()) return;
    // Back from WeChat's OAuth (#wx-ready, #wx-failed): carry on where she tapped.
    const back = location.hash.replace("#", "");
    const pending = MR.store.get("mamaroom.wxPending", null);
    MR.store.set("mamaroom.wxPending", null);
    if (back.startsWith("wx-")) history.replaceState(null, "", location.pathname + location.search);
    if (pending && Date.now() - pending.at < 10 * 60 * 1000 && back.startsWith("wx-")) {
      watching = { ids: new Set(pending.ids), push: false, wechat: "connecting" };
      if (back === "wx-ready" && wx.ready) wechatAgree(); else watching.wechat = "failed";
    } else if (wx.waiting) {
      watching = { ids: new Set(), push: false, wechat: "on" };
    }
    render();
  }

  function fire(r) {
    watching = null;
    window.__reminders += 1;
    const state = document.getElementById("remind-state");
    state.dataset.fired = "1";
    state.replaceChildren(el("strong", { text: T("fired", "") }), el("a", { href: `/r/${encodeURIComponent(r.id)}`, text: rname(r) }));
    MR.sound.chime();
    setTimeout(() => MR.sound.chime(), 1200);
    setTimeout(() => MR.sound.chime(), 2400);
    MR.vibrate([300, 150, 300, 150, 300]);
    MR.notify(T("firedTitle"), rname(r), `/r/${encodeURIComponent(r.id)}`, "mamaroom-free");
    render();
  }

  // --- data -------------------------------------------------------------------
  function onRoom(r) {
    const before = rooms.get(r.id);
    rooms.set(r.id, r);
    if (watching && watching.ids.has(r.id) && r.available && !(before && before.available)) fire(r);
    refreshWait(false);
    schedule();
  }
  let connected = null;
  function connection(ok) {
    connected = ok;
    const live = document.getElementById("live");
    live.textContent = ok ? T("live") : T("reconnect");
    live.className = ok ? "live ok" : "live bad";
  }

  // A link may say where she is, like a door's QR code does: the service
  // account's menu, a poster (`/?building=软件园1号楼&floor=3`; the English name works too).
  function placeFromLink() {
    if (page !== "list" || typeof URLSearchParams === "undefined") return;
    const q = new URLSearchParams(location.search);
    const name = q.get("building");
    if (!name) return;
    const b = site.buildings.find((x) => x.name === name || x.name_en === name);
    if (!b) return;
    const f = parseInt(q.get("floor"), 10);
    where = Object.assign({}, where || {}, { building: b.name, floor: b.floors.includes(f) ? f : b.floors[0] });
    MR.store.set("mamaroom.where", where);
  }

  async function start() {
    MR.langButton(document.getElementById("lang"), () => {
      renderWhere(); render();
      if (connected !== null) connection(connected); // the live label in the new language
    });
    document.getElementById("remind").addEventListener("click", toggleRemind);
    const bsel = document.getElementById("my-building");
    if (bsel) {
      bsel.addEventListener("change", onWhereChange);
      document.getElementById("my-floor").addEventListener("change", onWhereChange);
    }
    MR.registerSW();
    T.apply();
    try { site = await MR.api("/api/site"); } catch (e) { /* no walking times */ }
    placeFromLink();
    renderWhere();
    wechatStart();
    MR.stream({
      snapshot(list) {
        const before = new Map(rooms);
        rooms.clear();
        for (const r of list) rooms.set(r.id, r);
        // A watched room that came free since the last snapshot reminds too:
        // a browser without EventSource polls snapshots (common.js), and a
        // reconnected stream starts with one.
        const freed = watching && list.find((r) => watching.ids.has(r.id) && r.available
          && before.has(r.id) && !before.get(r.id).available);
        loaded = true;
        if (freed) fire(freed);
        if (page === "room" && !where && rooms.get(roomId)) {
          // A mother who scanned a door's QR code is in that building.
          const r = rooms.get(roomId);
          where = { building: r.building, floor: r.floor };
          MR.store.set("mamaroom.where", where);
        }
        refreshWait(true);
        render();
      },
      room: onRoom,
    }, connection);
  }
  start();
})();
