// The admin page `/admin`: rooms (edit, being cleaned, in service, CSV import
// and export), devices (adopt, move), accounts, the duty roster. Every change
// goes through /api/admin/* and reaches the gateways as a new registry version.
"use strict";
(function () {
  const el = MR.el;
  const T = MR.i18n({
    zh: {
      pageTitle: "母婴室 · 管理", title: "管理", tabRooms: "房间", tabDevices: "设备", tabUsers: "账号", tabRoster: "值班表",
      staffLink: "值班台", trendsLink: "使用统计", search: "搜索房间（编号、名称、楼宇）", cleaning: "清洁中", inService: "在用",
      edit: "编辑", add: "新增房间", save: "保存", del: "删除此房间", cancel: "取消", saved: "已保存。", failed: (m) => `失败：${m}`,
      confirmDelete: (id) => `确定删除房间 ${id}？`, exportCsv: "导出房间表（CSV）", importCsv: "导入房间表（CSV）",
      importHelp: "选择在表格软件中编辑好的 CSV 文件（UTF-8）。先检查，再确认导入；导入会替换整个房间表。",
      check: (n, removed) => `文件有效：${n} 间房间。` + (removed.length ? `将删除 ${removed.length} 间：${removed.join("、")}。` : ""),
      apply: "确认导入", imported: (n) => `已导入 ${n} 间房间。`, problems: "文件有问题：",
      f_id: "房间编号", f_name: "名称（中文）", f_name_en: "名称（英文）", f_building: "楼宇（中文）", f_building_en: "楼宇（英文）",
      f_floor: "楼层", f_device: "设备", f_access: "开放对象", f_company: "限定单位", f_hours: "开放时间（如 08:00-20:00，空为全天）",
      f_amenities: "设施（用；分隔）", public: "园区职工", company: "仅限本单位",
      toAdopt: "待认领设备", adoptInto: "分配到房间", adopt: "认领", noneToAdopt: "没有待认领的设备。", adopted: (d, r) => `${d} 已分配到 ${r}。`,
      move: "移动设备", moveDevice: "设备", moveTo: "移到房间", moveGo: "移动", moved: (d, r) => `${d} 已移到 ${r}。`,
      users: "账号", user: "用户名", role: "角色", password: "密码（至少 10 位）", setUser: "创建或修改", disable: "停用",
      disabled: "已停用", active: "正常", roles: { staff: "值班人员", manager: "管理者", admin: "管理员" },
      roster: "值班表", rosterFrom: (s) => s === "admin" ? "来源：管理页保存" : "来源：配置文件（保存后以此页为准）",
      r_name: "姓名", r_pager: "寻呼号", r_buildings: "负责楼宇（用；分隔，空为全部）", r_hours: "班次（如 08:00-20:00，空为全天）",
      addShift: "添加一行", saveRoster: "保存值班表", remove: "删除", allDay: "全天开放",
    },
    en: {
      pageTitle: "Nursing rooms · admin", title: "Admin", tabRooms: "Rooms", tabDevices: "Devices", tabUsers: "Accounts", tabRoster: "Duty roster",
      staffLink: "Staff console", trendsLink: "Trends", search: "Search rooms (id, name, building)", cleaning: "Cleaning", inService: "In service",
      edit: "Edit", add: "Add a room", save: "Save", del: "Delete this room", cancel: "Cancel", saved: "Saved.", failed: (m) => `Failed: ${m}`,
      confirmDelete: (id) => `Delete room ${id}?`, exportCsv: "Export the rooms (CSV)", importCsv: "Import rooms (CSV)",
      importHelp: "Choose a CSV file (UTF-8) edited in a spreadsheet. Check first, then confirm; importing replaces the whole room list.",
      check: (n, removed) => `The file is valid: ${n} rooms.` + (removed.length ? ` ${removed.length} will be deleted: ${removed.join(", ")}.` : ""),
      apply: "Import now", imported: (n) => `Imported ${n} rooms.`, problems: "The file has problems:",
      f_id: "Room id", f_name: "Name (Chinese)", f_name_en: "Name (English)", f_building: "Building (Chinese)", f_building_en: "Building (English)",
      f_floor: "Floor", f_device: "Device", f_access: "Open to", f_company: "Company", f_hours: "Hours (e.g. 08:00-20:00; empty = all day)",
      f_amenities: "Amenities (separated by ;)", public: "everyone", company: "one company",
      toAdopt: "Devices to adopt", adoptInto: "Into room", adopt: "Adopt", noneToAdopt: "No devices waiting.", adopted: (d, r) => `${d} now serves ${r}.`,
      move: "Move a device", moveDevice: "Device", moveTo: "To room", moveGo: "Move", moved: (d, r) => `${d} moved to ${r}.`,
      users: "Accounts", user: "Name", role: "Role", password: "Password (10 characters or more)", setUser: "Create or update", disable: "Disable",
      disabled: "disabled", active: "active", roles: { staff: "staff", manager: "manager", admin: "admin" },
      roster: "Duty roster", rosterFrom: (s) => s === "admin" ? "Source: saved on this page" : "Source: the config file (once saved here, this page wins)",
      r_name: "Name", r_pager: "Pager", r_buildings: "Buildings (separated by ;, empty = all)", r_hours: "Shift (e.g. 08:00-20:00, empty = always)",
      addShift: "Add a row", saveRoster: "Save the roster", remove: "Remove", allDay: "open all day",
    },
  });
  let registry = { rooms: [] };
  let filter = "";
  const msg = (text, bad) => { const m = document.getElementById("msg"); m.textContent = text; m.className = bad ? "error" : "ok-msg"; };
  const fail = (e) => msg(T("failed", e.message), true);
  const split = (s) => s.split(/[;；、,，]/).map((x) => x.trim()).filter(Boolean);
  let uid = 0;
  function field(label, input) {
    const id = input.id || `f${++uid}`;
    input.id = id;
    return el("label", { class: "field", for: id }, el("span", { text: label }), input);
  }

  // --- rooms -------------------------------------------------------------------
  async function loadRegistry() { registry = await MR.api("/api/admin/registry"); }
  async function patch(id, body) {
    try { await MR.api(`/api/admin/rooms/${encodeURIComponent(id)}`, { method: "PATCH", body }); msg(T("saved")); await loadRegistry(); renderRooms(); } catch (e) { fail(e); }
  }
  function roomForm(room) {
    const r = room || { id: "", name: "", name_en: "", building: "", building_en: "", floor: 1, access: "public", company: "", hours: "", amenities: [], in_service: true };
    const inp = (name, value, type) => el("input", { name, value: value === null || value === undefined ? "" : value, type: type || "text" });
    const id = inp("id", r.id); if (room) id.readOnly = true;
    const access = el("select", { name: "access" }, el("option", { value: "public", text: T("public"), selected: r.access === "public" }),
      el("option", { value: "company", text: T("company"), selected: r.access === "company" }));
    const form = el("form", { class: "card form-grid", "aria-label": room ? `${T("edit")} ${r.id}` : T("add") },
      field(T("f_id"), id), field(T("f_floor"), inp("floor", r.floor, "number")),
      el("div", { class: "wide" }, field(T("f_name"), inp("name", r.name))),
      el("div", { class: "wide" }, field(T("f_name_en"), inp("name_en", r.name_en))),
      field(T("f_building"), inp("building", r.building)), field(T("f_building_en"), inp("building_en", r.building_en)),
      field(T("f_access"), access), field(T("f_company"), inp("company", r.company)),
      el("div", { class: "wide" }, field(T("f_hours"), inp("hours", r.hours))),
      el("div", { class: "wide" }, field(T("f_amenities"), inp("amenities", r.amenities.join(";")))),
      el("button", { type: "submit", class: "primary", text: T("save") }),
      el("button", { type: "button", text: T("cancel"), onclick: () => renderRooms() }),
      room ? el("button", { type: "button", class: "danger wide", text: T("del"), onclick: async () => {
        if (!confirm(T("confirmDelete", r.id))) return;
        try { await MR.api(`/api/admin/rooms/${encodeURIComponent(r.id)}`, { method: "DELETE" }); msg(T("saved")); await loadRegistry(); renderRooms(); } catch (e) { fail(e); }
      } }) : null);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = new FormData(form);
      const body = { name: f.get("name"), name_en: f.get("name_en"), building: f.get("building"), building_en: f.get("building_en"),
        floor: parseInt(f.get("floor"), 10), access: f.get("access"), company: f.get("company"), hours: f.get("hours"), amenities: split(f.get("amenities")) };
      try {
        if (room) await MR.api(`/api/admin/rooms/${encodeURIComponent(r.id)}`, { method: "PATCH", body });
        else await MR.api(`/api/admin/rooms/${encodeURIComponent(f.get("id"))}`, { method: "PUT", body: Object.assign({ id: f.get("id"), in_service: true }, body) });
        msg(T("saved")); await loadRegistry(); renderRooms();
      } catch (e) { fail(e); }
    });
    return form;
  }
  function csvBox() {
    const file = el("input", { type: "file", accept: ".csv,text/csv", id: "csv-file" });
    const out = el("div", { role: "status" });
    let text = null;
    const check = async (apply) => {
      out.replaceChildren();
      try {
        const r = await MR.api(`/api/admin/rooms/import?apply=${apply}`, { method: "POST", body: text, headers: { "Content-Type": "text/csv" } });
        if (apply) { msg(T("imported", r.rooms)); await loadRegistry(); renderRooms(); return; }
        out.append(el("p", { text: T("check", r.rooms, r.removed) }), el("button", { type: "button", class: "primary", id: "csv-apply", text: T("apply"), onclick: () => check(true) }));
      } catch (e) {
        let problems = [e.message];
        try { problems = JSON.parse(e.message); } catch (x) { /* a plain message */ }
        out.append(el("p", { class: "error", text: T("problems") }), el("ul", {}, ...[].concat(problems).map((p) => el("li", { text: p }))));
      }
    };
    file.addEventListener("change", async () => { if (file.files[0]) { text = await file.files[0].text(); check(false); } });
    return el("section", { class: "card" }, el("h2", { text: T("importCsv") }), el("p", { class: "muted", text: T("importHelp") }),
      field(T("importCsv"), file), out, el("p", {}, el("a", { href: "/api/admin/rooms.csv", download: "rooms.csv", text: T("exportCsv") })));
  }
  function renderRooms(editing) {
    const panel = document.getElementById("panel-rooms");
    const search = el("input", { type: "search", value: filter, id: "room-search" });
    search.addEventListener("input", () => { filter = search.value; renderList(); });
    const list = el("ul", { class: "rooms card", id: "admin-rooms" });
    function renderList() {
      const q = filter.trim().toLowerCase();
      const rooms = registry.rooms.filter((r) => !q || [r.id, r.name, r.name_en, r.building, r.building_en].join(" ").toLowerCase().includes(q))
        .sort((a, b) => (a.id < b.id ? -1 : 1)).slice(0, 100);
      list.replaceChildren(...rooms.map((r) => {
        const clean = el("input", { type: "checkbox", checked: r.cleaning, "aria-label": `${T("cleaning")} ${r.id}` });
        clean.addEventListener("change", () => patch(r.id, { cleaning: clean.checked }));
        const serv = el("input", { type: "checkbox", checked: r.in_service, "aria-label": `${T("inService")} ${r.id}` });
        serv.addEventListener("change", () => patch(r.id, { in_service: serv.checked }));
        return el("li", { class: "room", "data-room": r.id },
          el("span", { class: "room-main" }, el("span", { class: "room-name", text: `${r.id} · ${MR.lang === "zh" ? r.name : r.name_en}` }),
            el("small", { class: "note", text: `${r.device || "–"} · ${r.hours || T("allDay")}` })),
          el("span", { class: "actions" },
            el("label", { class: "check" }, clean, el("span", { text: T("cleaning") })),
            el("label", { class: "check" }, serv, el("span", { text: T("inService") })),
            el("button", { type: "button", class: "small", text: T("edit"), onclick: () => renderRooms(r) })));
      }));
    }
    renderList();
    panel.replaceChildren(
      editing !== undefined ? roomForm(editing) : el("button", { type: "button", class: "primary big", text: T("add"), onclick: () => renderRooms(null) }),
      field(T("search"), search), list, csvBox());
  }

  // --- devices -----------------------------------------------------------------
  function roomSelect(name) {
    return el("select", { name }, ...registry.rooms.slice().sort((a, b) => (a.id < b.id ? -1 : 1)).map((r) =>
      el("option", { value: r.id, text: `${r.id} ${r.device ? "(" + r.device + ")" : ""}` })));
  }
  async function renderDevices() {
    const panel = document.getElementById("panel-devices");
    let d = { unknown: [] };
    try { d = await MR.api("/api/devices"); } catch (e) { fail(e); }
    const adopt = d.unknown.map((u) => {
      const sel = roomSelect("room");
      const form = el("form", { class: "card", "data-device": u.device }, el("strong", { text: u.device }),
        field(T("adoptInto"), sel), el("button", { type: "submit", class: "primary", text: T("adopt") }));
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        try { await MR.api(`/api/admin/devices/${encodeURIComponent(u.device)}/adopt`, { method: "POST", body: { room: sel.value } }); msg(T("adopted", u.device, sel.value)); await loadRegistry(); renderDevices(); } catch (e) { fail(e); }
      });
      return form;
    });
    const devs = registry.rooms.filter((r) => r.device).map((r) => r.device).sort();
    const dsel = el("select", { name: "device" }, ...devs.map((x) => el("option", { value: x, text: x })));
    const tsel = roomSelect("room");
    const move = el("form", { class: "card" }, el("h2", { text: T("move") }), field(T("moveDevice"), dsel), field(T("moveTo"), tsel),
      el("button", { type: "submit", class: "primary", text: T("moveGo") }));
    move.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try { await MR.api(`/api/admin/devices/${encodeURIComponent(dsel.value)}/move`, { method: "POST", body: { room: tsel.value } }); msg(T("moved", dsel.value, tsel.value)); await loadRegistry(); renderDevices(); } catch (e) { fail(e); }
    });
    panel.replaceChildren(el("h2", { text: T("toAdopt") }), ...(adopt.length ? adopt : [el("p", { class: "card muted", text: T("noneToAdopt") })]), move);
  }

  // --- accounts ------------------------------------------------------------------
  async function renderUsers() {
    const panel = document.getElementById("panel-users");
    let users = [];
    try { users = await MR.api("/api/admin/users"); } catch (e) { fail(e); }
    const name = el("input", { name: "name", autocomplete: "off", autocapitalize: "none" });
    const role = el("select", { name: "role" }, ...["staff", "manager", "admin"].map((r) => el("option", { value: r, text: T("roles")[r] })));
    const pass = el("input", { name: "password", type: "password", autocomplete: "new-password", minlength: 10 });
    const form = el("form", { class: "card" }, field(T("user"), name), field(T("role"), role), field(T("password"), pass),
      el("button", { type: "submit", class: "primary", text: T("setUser") }));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try { await MR.api(`/api/admin/users/${encodeURIComponent(name.value)}`, { method: "PUT", body: { role: role.value, password: pass.value } }); msg(T("saved")); renderUsers(); } catch (e) { fail(e); }
    });
    const rows = users.map((u) => el("tr", {}, el("td", { text: u.name }), el("td", { text: T("roles")[u.role] || u.role }),
      el("td", { text: u.disabled ? T("disabled") : T("active") }),
      el("td", {}, u.disabled ? null : el("button", { type: "button", class: "small", text: T("disable"), "aria-label": `${T("disable")} ${u.name}`, onclick: async () => {
        try { await MR.api(`/api/admin/users/${encodeURIComponent(u.name)}`, { method: "DELETE" }); msg(T("saved")); renderUsers(); } catch (e) { fail(e); }
      } }))));
    panel.replaceChildren(el("section", { class: "card" }, el("h2", { text: T("users") }), el("div", { class: "scroll" }, el("table", {},
      el("thead", {}, el("tr", {}, ...[T("user"), T("role"), "", ""].map((h) => el("th", { scope: "col", text: h })))), el("tbody", {}, ...rows)))), form);
  }

  // --- the duty roster -----------------------------------------------------------------
  async function renderRoster() {
    const panel = document.getElementById("panel-roster");
    let roster = { source: "config", shifts: [] };
    try { roster = await MR.api("/api/admin/roster"); } catch (e) { fail(e); }
    const body = el("div", { id: "roster-rows" });
    const row = (s) => {
      const r = el("fieldset", { class: "card form-grid shift" },
        field(T("r_name"), el("input", { name: "name", value: s.name || "" })),
        field(T("r_pager"), el("input", { name: "pager", value: s.pager || "", inputmode: "numeric" })),
        el("div", { class: "wide" }, field(T("r_buildings"), el("input", { name: "buildings", value: (s.buildings || []).join(";") }))),
        el("div", { class: "wide" }, field(T("r_hours"), el("input", { name: "hours", value: s.hours || "" }))),
        el("button", { type: "button", class: "small", text: T("remove"), onclick: () => r.remove() }));
      return r;
    };
    roster.shifts.forEach((s) => body.append(row(s)));
    const save = el("button", { type: "button", class: "primary big", text: T("saveRoster"), onclick: async () => {
      const shifts = [...body.querySelectorAll("fieldset")].map((f) => ({
        name: f.querySelector("[name=name]").value.trim(), pager: f.querySelector("[name=pager]").value.trim(),
        buildings: split(f.querySelector("[name=buildings]").value), hours: f.querySelector("[name=hours]").value.trim() }));
      try { await MR.api("/api/admin/roster", { method: "PUT", body: shifts }); msg(T("saved")); renderRoster(); } catch (e) { fail(e); }
    } });
    panel.replaceChildren(el("h2", { text: T("roster") }), el("p", { class: "muted", text: T("rosterFrom", roster.source) }), body,
      el("button", { type: "button", text: T("addShift"), onclick: () => body.append(row({})) }), save);
  }

  const TABS = { rooms: () => renderRooms(), devices: renderDevices, users: renderUsers, roster: renderRoster };
  function showTab(which) {
    for (const t of Object.keys(TABS)) {
      document.getElementById(`tab-${t}`).setAttribute("aria-selected", String(t === which));
      document.getElementById(`panel-${t}`).hidden = t !== which;
    }
    msg("");
    TABS[which]();
  }

  async function start() {
    MR.langButton(document.getElementById("lang"), () => { T.apply(); showTab(current()); });
    T.apply();
    await MR.requireLogin(document.getElementById("login"), "admin");
    document.getElementById("app").hidden = false;
    await loadRegistry();
    for (const t of Object.keys(TABS)) document.getElementById(`tab-${t}`).addEventListener("click", () => { location.hash = t; showTab(t); });
    showTab(current());
  }
  const current = () => (location.hash.slice(1) in TABS ? location.hash.slice(1) : "rooms");
  start();
})();
