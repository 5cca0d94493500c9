// The staff console `/staff`: open alerts live (SSE `event: alert`), one-tap
// acknowledge and resolve, an alarm that repeats until someone acknowledges,
// device health from GET /api/devices, Web Push for staff phones.
"use strict";
(function () {
  const el = MR.el;
  //: The alarm repeats this often while a high-priority alert is open (the
  //: issue asks for at least every 10 s).
  const ALARM_EVERY_MS = 8000;
  const WEAK_RSSI = -80;
  const LOW_HEAP = 30000;
  const ACTIVE = ["open", "acknowledged", "arrived"];
  const T = MR.i18n({
    zh: {
      pageTitle: "母婴室 · 值班台", title: "值班台", tabAlerts: (n) => `警报（${n}）`, tabDevices: "设备状态",
      gateTitle: "警报声音尚未开启", gateText: "浏览器需要您先点一下，才允许播放警报声。", gateButton: "点此开启警报声音",
      noAlerts: "目前没有待处理的警报。", live: "● 实时", reconnect: "连接中断，正在重连…",
      call: "紧急呼叫", welfare: "关怀提醒", device_offline: "设备离线", building_offline: "楼宇设备离线", paging_link: "寻呼链路故障",
      open: "待接警", acknowledged: "已接警", arrived: "已到场", resolved: "已解除", cancelled: "已取消",
      ack: "接警", resolve: "解除", floorN: (n) => `${n}层`, since: "已过", notYet: "尚未寻呼", paging: "正在寻呼…", nobody: "⚠ 无人可寻呼", pagedOk: (t) => `已寻呼 ${t} ✓`, pageFail: (t) => `寻呼 ${t} 失败`,
      provisional: "数据库暂不可写：呼叫已记入应急日志", "nobody to page": "无人可寻呼", joined: "同一房间再次按下",
      chan: { button: "呼叫按钮", escalation: "自动升级", console: "值班台", "staff key": "员工钥匙", lamp: "呼叫灯", espa: "寻呼系统", im: "即时消息", mamaroom: "系统" },
      linkEspa: "寻呼系统串口线路", linkIm: (n) => `即时消息：${n}`,
      by: (w) => `接警人：${w}`, timeline: "处理记录", test: "测试",
      raised: "发起", escalated: "升级", paged: "已寻呼", "page failed": "寻呼失败", shown: "呼叫器显示",
      pushOn: "在这部手机上接收推送通知", pushDone: "已开启：新的紧急呼叫会推送到这部手机。", pushNo: "这个浏览器不支持推送通知（页面打开时仍会响铃）。",
      pushOff: "服务器未配置推送（VAPID 密钥）。", logout: "退出登录", trendsLink: "使用统计", adminLink: "管理",
      devOffline: "离线设备", devWeak: "信号弱", devHeap: "内存低", devAdopt: "待认领设备", fw: "固件版本", fwUnknown: "尚未上报",
      device: "设备", room: "房间", lastSeen: "最后上线", rssi: "信号", heap: "可用内存", reboots: "重启",
      adoptHint: "在管理页把这些设备分配到房间。", noneBad: "全部正常", failed: "操作失败：",
    },
    en: {
      pageTitle: "Nursing rooms · staff console", title: "Staff console", tabAlerts: (n) => `Alerts (${n})`, tabDevices: "Devices",
      gateTitle: "Alarm sound is off", gateText: "The browser plays sound only after you tap the page once.", gateButton: "Tap to turn the alarm sound on",
      noAlerts: "No alerts to handle.", live: "● Live", reconnect: "Connection lost, reconnecting…",
      call: "Emergency call", welfare: "Welfare check", device_offline: "Device offline", building_offline: "Building offline", paging_link: "Paging link down",
      open: "Open", acknowledged: "Acknowledged", arrived: "Staff in room", resolved: "Resolved", cancelled: "Cancelled",
      ack: "Acknowledge", resolve: "Resolve", floorN: (n) => `${n}F`, since: "for", notYet: "not paged yet", paging: "paging…", nobody: "⚠ nobody to page", pagedOk: (t) => `paged ${t} ✓`, pageFail: (t) => `page to ${t} failed`,
      provisional: "database not writable: call kept in the emergency journal", "nobody to page": "nobody to page", joined: "pressed again in the room",
      chan: { button: "call button", escalation: "escalation", console: "console", "staff key": "staff key", lamp: "call lamp", espa: "paging system", im: "instant message", mamaroom: "system" },
      linkEspa: "paging system serial line", linkIm: (n) => `instant message: ${n}`,
      by: (w) => `taken by ${w}`, timeline: "Timeline", test: "TEST",
      raised: "raised", escalated: "escalated", paged: "paged", "page failed": "page failed", shown: "shown on the button",
      pushOn: "Get push notifications on this phone", pushDone: "On: new emergency calls are pushed to this phone.", pushNo: "This browser has no push notifications (the open page still rings).",
      pushOff: "Push is not configured on the server (VAPID keys).", logout: "Log out", trendsLink: "Trends", adminLink: "Admin",
      devOffline: "Offline", devWeak: "Weak signal", devHeap: "Low memory", devAdopt: "To adopt", fw: "Firmware", fwUnknown: "not reported yet",
      device: "Device", room: "Room", lastSeen: "Last seen", rssi: "RSSI", heap: "Free heap", reboots: "Reboots",
      adoptHint: "Assign these devices to rooms on the admin page.", noneBad: "all fine", failed: "Failed: ",
    },
  });

  const alerts = new Map();
  const rooms = new Map();
  const timelines = new Map();
  let alarmTimer = null;
  window.__alarmPlays = 0; // for tests: alarm sounds actually played

  // --- the alarm ----------------------------------------------------------------
  const needsAlarm = () => [...alerts.values()].some((a) => a.status === "open" && a.priority === "high");
  function playAlarm() {
    if (MR.sound.alarm()) window.__alarmPlays += 1;
    MR.vibrate([400, 150, 400, 150, 400]);
  }
  function updateAlarm() {
    if (needsAlarm()) {
      if (alarmTimer === null) {
        playAlarm();
        alarmTimer = setInterval(() => { if (needsAlarm()) playAlarm(); else updateAlarm(); }, ALARM_EVERY_MS);
      }
    } else if (alarmTimer !== null) {
      clearInterval(alarmTimer);
      alarmTimer = null;
    }
    document.title = needsAlarm() ? `🔴 ${T("call")} · ${T("pageTitle")}` : T("pageTitle");
  }
  function renderGate() {
    const hide = MR.sound.unlocked || !MR.sound.supported;
    document.getElementById("gate").hidden = hide;
    document.body.classList.toggle("gated", !hide);
  }

  // --- alerts -----------------------------------------------------------------------
  function roomLine(a) {
    if (a.kind === "paging_link" && a.subject) {
      const [chan, dest] = a.subject.split(":");
      return chan === "im" && dest ? T("linkIm", dest) : (chan === "espa" ? T("linkEspa") : a.subject);
    }
    const r = rooms.get(a.room);
    if (!r) return a.room || a.subject || "";
    return MR.lang === "zh" ? r.name : r.name_en;
  }
  function placeLine(a) {
    const r = rooms.get(a.room);
    if (!r) return "";
    const b = MR.lang === "zh" ? r.building : (r.building_en || r.building);
    return `${b} · ${T("floorN", r.floor)} · ${r.id}`;
  }
  async function act(a, what, button) {
    button.disabled = true;
    try {
      const updated = await MR.api(`/api/alerts/${a.id}/${what}`, { method: "POST" });
      onAlert(updated);
    } catch (e) {
      button.disabled = false;
      alert(T("failed") + e.message);
    }
  }
  async function loadTimeline(a, list) {
    try {
      const full = await MR.api(`/api/alerts/${a.id}`);
      timelines.set(a.id, full.timeline || []);
    } catch (e) { return; }
    fillTimeline(a, list);
  }
  function fillTimeline(a, list) {
    list.replaceChildren(...(timelines.get(a.id) || []).map((s) =>
      el("li", { text: `${MR.clock(s.at_ms)} ${T(s.what)}${s.who ? " · " + s.who : ""}${s.channel ? " (" + (T("chan")[s.channel] || s.channel) + ")" : ""}` })));
  }
  // What paging really did for this alert: one mark per target, never
  // "paged" when nobody was (a tier with no reachable target shows red).
  function pagingLine(a) {
    const pages = Object.entries(a.paging || {});
    const out = pages.map(([target, p]) => el("span", { class: p.ok ? "page-ok" : "page-failed",
      text: p.ok ? T("pagedOk", target) : T("pageFail", target) }));
    if (a.nobody && !pages.some(([, p]) => p.ok)) out.unshift(el("span", { class: "nobody", text: T("nobody") }));
    if (!out.length) out.push(el("span", { text: a.escalation_level ? T("paging") : T("notYet") }));
    if (a.provisional) out.push(el("span", { class: "provisional", text: T("provisional") }));
    return out;
  }
  function alertCard(a) {
    const li = el("li", { class: `card alert ${a.status} ${a.priority}`, "data-alert": a.id, "data-status": a.status });
    const since = el("span", { class: "since", "data-raised": a.raised_at_ms });
    since.textContent = MR.duration((Date.now() - a.raised_at_ms) / 1000);
    const buttons = [];
    if (a.status === "open") {
      const b = el("button", { type: "button", class: "danger", "data-action": "ack", text: T("ack") });
      b.addEventListener("click", () => act(a, "ack", b));
      buttons.push(b);
    }
    const r = el("button", { type: "button", "data-action": "resolve", text: T("resolve") });
    r.addEventListener("click", () => act(a, "resolve", r));
    buttons.push(r);
    const tl = el("ol", { class: "timeline" });
    const det = el("details", { class: "tl" }, el("summary", { text: T("timeline") }), tl);
    det.addEventListener("toggle", () => { if (det.open) loadTimeline(a, tl); });
    if (timelines.has(a.id)) fillTimeline(a, tl);
    li.append(
      el("div", { class: "alert-head" },
        el("span", { class: "alert-kind", text: (a.test ? `[${T("test")}] ` : "") + T(a.kind) }),
        el("span", { class: "alert-status", text: T(a.status) })),
      el("div", { class: "alert-room", text: roomLine(a) }),
      el("div", { class: "alert-place", text: placeLine(a) }),
      el("div", { class: "alert-meta" },
        el("span", {}, T("since") + " ", since),
        el("span", { text: `${T("raised")} ${MR.clock(a.raised_at_ms)}` }),
        ...pagingLine(a),
        a.acknowledged_by ? el("span", { text: T("by", a.acknowledged_by) }) : null),
      el("div", { class: "actions" }, ...buttons),
      det);
    return li;
  }
  function renderAlerts() {
    const list = [...alerts.values()].filter((a) => ACTIVE.includes(a.status))
      .sort((a, b) => (a.status === "open") !== (b.status === "open") ? (a.status === "open" ? -1 : 1)
        : (a.priority === "high") !== (b.priority === "high") ? (a.priority === "high" ? -1 : 1)
          : a.raised_at_ms - b.raised_at_ms);
    document.getElementById("alerts").replaceChildren(...list.map(alertCard));
    document.getElementById("no-alerts").hidden = list.length > 0;
    document.getElementById("tab-alerts").textContent = T("tabAlerts", list.length);
  }
  function tick() {
    document.querySelectorAll(".since[data-raised]").forEach((s) => {
      s.textContent = MR.duration((Date.now() - Number(s.dataset.raised)) / 1000);
    });
  }
  function onAlert(a) {
    const old = alerts.get(a.id);
    if (a.superseded_by) { // a journalled call, now committed under its real id
      alerts.delete(a.id);
      timelines.delete(a.id);
      renderAlerts();
      return;
    }
    if (old && old.status === a.status && old.escalation_level === a.escalation_level && old.acknowledged_by === a.acknowledged_by
        && old.nobody === a.nobody && JSON.stringify(old.paging) === JSON.stringify(a.paging)) return;
    alerts.set(a.id, a);
    if (!ACTIVE.includes(a.status)) timelines.delete(a.id);
    renderAlerts();
    updateAlarm();
    if (!old && a.status === "open" && a.priority === "high" && document.hidden) {
      MR.notify(T(a.kind), roomLine(a), "/staff", `alert-${a.id}`);
    }
  }

  // --- devices -----------------------------------------------------------------------
  function table(head, rows) {
    return el("div", { class: "scroll" }, el("table", {},
      el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", { text: c === null || c === undefined ? "–" : String(c) })))))));
  }
  async function loadDevices() {
    let d;
    try { d = await MR.api("/api/devices"); } catch (e) { return; }
    const offline = d.devices.filter((x) => x.status !== "online");
    const weak = d.devices.filter((x) => x.rssi !== null && x.rssi < WEAK_RSSI);
    const heap = d.devices.filter((x) => x.heap_free !== null && x.heap_free < LOW_HEAP);
    const fw = new Map();
    d.devices.forEach((x) => { const v = x.fw || T("fwUnknown"); fw.set(v, (fw.get(v) || 0) + 1); });
    const stat = (label, n) => el("div", { class: `stat ${n ? "bad" : ""}` }, el("b", { text: n }), el("span", { text: label }));
    const when = (iso) => iso ? MR.clock(Date.parse(iso)) : null;
    const row = (x) => [x.device, x.room, when(x.last_seen), x.rssi, x.heap_free, x.fw, x.reboots];
    const head = [T("device"), T("room"), T("lastSeen"), T("rssi"), T("heap"), T("fw"), T("reboots")];
    const box = document.getElementById("devices");
    box.replaceChildren(
      el("div", { class: "stat-grid" }, stat(T("devOffline"), offline.length), stat(T("devWeak"), weak.length),
        stat(T("devHeap"), heap.length), stat(T("devAdopt"), d.unknown.length)),
      el("section", { class: "card" }, el("h2", { text: T("fw") }),
        el("p", { text: [...fw].sort().map(([v, n]) => `${v}: ${n}`).join(" · ") })),
      el("section", { class: "card" }, el("h2", { text: `${T("devOffline")} (${offline.length})` }),
        offline.length ? table(head, offline.map(row)) : el("p", { class: "muted", text: T("noneBad") })),
      el("section", { class: "card" }, el("h2", { text: `${T("devWeak")} / ${T("devHeap")}` }),
        weak.length || heap.length ? table(head, [...new Set([...weak, ...heap])].map(row)) : el("p", { class: "muted", text: T("noneBad") })),
      el("section", { class: "card" }, el("h2", { text: `${T("devAdopt")} (${d.unknown.length})` }),
        d.unknown.length ? table([T("device"), T("lastSeen"), "#"], d.unknown.map((u) => [u.device, when(u.last_seen), u.messages])) : el("p", { class: "muted", text: T("noneBad") }),
        d.unknown.length ? el("p", {}, el("a", { href: "/admin#devices", text: T("adoptHint") })) : null));
  }

  function showTab(which) {
    for (const t of ["alerts", "devices"]) {
      document.getElementById(`tab-${t}`).setAttribute("aria-selected", String(t === which));
      document.getElementById(`panel-${t}`).hidden = t !== which;
    }
    if (which === "devices") loadDevices();
  }

  async function start() {
    MR.langButton(document.getElementById("lang"), () => { T.apply(); renderAlerts(); if (connected !== null) connection(connected); });
    T.apply();
    const me = await MR.requireLogin(document.getElementById("login"), "staff");
    document.getElementById("app").hidden = false;
    document.getElementById("who").textContent = me.name;
    // Only the links this account may follow (the others answer 403).
    document.getElementById("trends-link").hidden = !MR.hasRole(me, "manager");
    document.getElementById("admin-link").hidden = !MR.hasRole(me, "admin");
    document.getElementById("unlock").addEventListener("click", async () => {
      await MR.sound.unlock();
      renderGate();
      if (needsAlarm()) playAlarm();
    });
    // Any tap on the page unlocks sound too.
    document.addEventListener("pointerdown", () => { if (!MR.sound.unlocked) MR.sound.unlock().then(renderGate); }, { passive: true });
    document.getElementById("tab-alerts").addEventListener("click", () => showTab("alerts"));
    document.getElementById("tab-devices").addEventListener("click", () => showTab("devices"));
    document.getElementById("logout").addEventListener("click", MR.logout);
    document.getElementById("push").addEventListener("click", async () => {
      const state = document.getElementById("push-state");
      MR.sound.unlock().then(renderGate);
      await MR.askNotify();
      try {
        const key = await MR.api("/api/push/key");
        if (!key.enabled) { state.textContent = T("pushOff"); return; }
        state.textContent = (await MR.pushSubscribe("/api/push/staff", {})) ? T("pushDone") : T("pushNo");
      } catch (e) { state.textContent = T("failed") + e.message; }
    });
    MR.registerSW();
    renderGate();
    renderAlerts();
    setInterval(tick, 1000);
    setInterval(() => { if (!document.getElementById("panel-devices").hidden) loadDevices(); }, 30000);
    MR.stream({
      // A (re)connect starts with the snapshot, then every open alert again.
      snapshot(list) { rooms.clear(); list.forEach((r) => rooms.set(r.id, r)); alerts.clear(); renderAlerts(); updateAlarm(); },
      room(r) { rooms.set(r.id, r); },
      alert: onAlert,
    }, connection);
  }
  let connected = null;
  function connection(ok) {
    connected = ok;
    const live = document.getElementById("live");
    live.textContent = ok ? T("live") : T("reconnect");
    live.className = ok ? "live ok" : "live bad";
  }
  start();
})();
