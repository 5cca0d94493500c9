// Minimal live room list (the full mothers' page comes with the pages issue).
"use strict";
const T = {
  zh: { title: "母婴室", loading: "正在加载…", free: "空闲", occupied: "使用中", offline: "状态未知",
        summary: (f, n) => `${f} 间空闲 / 共 ${n} 间`, floor: (n) => `${n} 层`,
        closed: "非开放时间", out: "暂停使用", company: (c) => `仅限${c}员工`, reconnect: "连接中断，正在重连…" },
  en: { title: "Nursing rooms", loading: "Loading…", free: "Free", occupied: "In use", offline: "Status unknown",
        summary: (f, n) => `${f} free of ${n}`, floor: (n) => `Floor ${n}`,
        closed: "Closed now", out: "Out of service", company: (c) => `${c} staff only`, reconnect: "Connection lost, reconnecting…" },
};
let lang = localStorage.getItem("mamaroom.lang") || "zh";
const rooms = new Map();

function t(key, ...args) { const v = T[lang][key]; return typeof v === "function" ? v(...args) : v; }

function render() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.getElementById("lang").textContent = lang === "zh" ? "EN" : "中文";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  const list = [...rooms.values()];
  const free = list.filter((r) => r.available).length;
  document.getElementById("summary").textContent = t("summary", free, list.length);
  const byBuilding = new Map();
  for (const r of list) {
    const b = lang === "zh" ? r.building : (r.building_en || r.building);
    if (!byBuilding.has(b)) byBuilding.set(b, []);
    byBuilding.get(b).push(r);
  }
  const main = document.getElementById("rooms");
  main.replaceChildren();
  const order = { free: 0, occupied: 1, offline: 2 };
  for (const [building, rs] of [...byBuilding].sort((a, b) => b[1].filter((r) => r.available).length - a[1].filter((r) => r.available).length)) {
    const sec = document.createElement("section");
    sec.className = "building";
    const h = document.createElement("h2");
    h.textContent = building;
    const ul = document.createElement("ul");
    rs.sort((a, b) => (b.available - a.available) || (order[a.state] - order[b.state]) || (a.floor - b.floor));
    for (const r of rs) {
      const li = document.createElement("li");
      li.className = `room ${r.state}`;
      li.dataset.room = r.id;
      const name = document.createElement("span");
      name.textContent = `${t("floor", r.floor)} · ${lang === "zh" ? r.name : r.name_en}`;
      const notes = [];
      if (!r.in_service) notes.push(t("out"));
      else if (!r.open_now) notes.push(t("closed"));
      if (r.access === "company" && r.company) notes.push(t("company", r.company));
      if (notes.length) {
        const n = document.createElement("small");
        n.className = "note";
        n.textContent = notes.join(" · ");
        name.appendChild(n);
      }
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = t(r.state);
      li.append(name, badge);
      ul.appendChild(li);
    }
    sec.append(h, ul);
    main.appendChild(sec);
  }
}

let pending = false;
function schedule() { if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; render(); }); } }

function connect() {
  const es = new EventSource("/api/stream");
  const conn = document.getElementById("conn");
  es.addEventListener("snapshot", (e) => {
    rooms.clear();
    for (const r of JSON.parse(e.data)) rooms.set(r.id, r);
    conn.hidden = true;
    schedule();
  });
  es.addEventListener("room", (e) => { const r = JSON.parse(e.data); rooms.set(r.id, r); schedule(); });
  es.onerror = () => { conn.textContent = t("reconnect"); conn.hidden = false; };
}

document.getElementById("lang").addEventListener("click", () => {
  lang = lang === "zh" ? "en" : "zh";
  localStorage.setItem("mamaroom.lang", lang);
  render();
});
connect();
