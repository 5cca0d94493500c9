// The managers' page `/trends`: ECharts over GET /api/trends/* (docs/trends.md).
// Every chart has a CSV download of its data (UTF-8 with BOM, for Excel).
"use strict";
(function () {
  const el = MR.el;
  const T = MR.i18n({
    zh: {
      pageTitle: "母婴室 · 使用统计", title: "使用统计", range: "时间范围", from: "开始日期", to: "结束日期", building: "楼宇",
      allBuildings: "全部楼宇", apply: "查看", last: (n) => `近 ${n} 天`, thisYear: "今年",
      heatTitle: "各时段使用率（星期 × 小时）", daysFilter: "日期类型", daysAll: "全部日期", daysWork: "工作日（含调休上班）", daysOff: "休息日与节假日",
      roomsTitle: "母婴室使用率排行", daysTitle: "每日使用次数", lengthsTitle: "单次使用时长分布", callsTitle: "紧急呼叫响应时间（按月）",
      uptimeTitle: "设备在线率", staffLink: "值班台", adminLink: "管理",
      weekdays: ["周一", "周二", "周三", "周四", "周五", "周六", "周日"], hour: (h) => `${h}时`, floorN: (n) => `${n}层`,
      utilisation: "使用率", sessions: "使用次数", minutes: "分钟", csv: (n) => `下载 CSV：${n}`,
      csvNames: { heatmap: "时段使用率", rooms: "房间排行", sessions: "每日次数", lengths: "时长分布", calls: "呼叫响应", uptime: "设备在线" },
      holidays: "节假日", makeup: "调休上班", none: "无", listSep: "、", clauseSep: "；", end: "。", paren: (x) => `（${x}）`, peak: (d, h, v) => `最忙：${d} ${h} 点，使用率 ${v}。`,
      heatNote: (hol, wk) => `期间节假日：${hol}；调休上班日：${wk}。`,
      over: "使用过度", under: "使用偏少", median: (v) => `各房间使用率中位数 ${v}；高于 1.5 倍为"使用过度"，低于一半为"使用偏少"。`,
      overList: (n) => `使用过度 ${n} 间`, underList: (n) => `使用偏少 ${n} 间`,
      lengthsNote: (n, p50, p90) => `共 ${n} 次；中位数 ${p50} 分钟，90% 在 ${p90} 分钟以内。`,
      ackP50: "接警 中位数", ackP90: "接警 P90", arrP50: "到场 中位数", arrP90: "到场 P90", target: "目标",
      callsNote: (n, a, b) => `共 ${n} 次呼叫；${a} 在目标时间内接警，${b} 在目标时间内到场。`, seconds: "秒",
      uptimeNote: (u, n, s, e) => `整体在线率 ${u}（${n} 台设备，统计 ${s} 至 ${e}）。以下为在线率最低的设备。`,
      workday: "工作日", weekend: "周末", holiday: "节假日", makeup_workday: "调休上班",
      loading: "正在计算…", failed: (w, m) => `${w}：${m}`, noService: "统计服务不可用",
      summaryHeat: (p) => `热力图。${p}`, summaryRooms: (a, b) => `条形图：使用率最高的房间 ${a}，最低 ${b}。`,
      summaryDays: (n, m) => `柱状图：${n} 天，日均 ${m} 次。`, summaryLengths: (p) => `柱状图：时长中位数 ${p} 分钟。`,
      summaryCalls: (m) => `折线图：${m} 个月的响应时间。`, summaryUptime: (u) => `条形图：整体在线率 ${u}。`,
    },
    en: {
      pageTitle: "Nursing rooms · trends", title: "Trends", range: "Date range", from: "From", to: "To", building: "Building",
      allBuildings: "All buildings", apply: "Show", last: (n) => `Last ${n} days`, thisYear: "This year",
      heatTitle: "Utilisation by weekday × hour", daysFilter: "Days", daysAll: "All days", daysWork: "Working days (incl. make-up days)", daysOff: "Weekends and holidays",
      roomsTitle: "Rooms ranked by utilisation", daysTitle: "Sessions per day", lengthsTitle: "Session length", callsTitle: "Emergency call response (by month)",
      uptimeTitle: "Device uptime", staffLink: "Staff console", adminLink: "Admin",
      weekdays: ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"], hour: (h) => `${h}:00`, floorN: (n) => `${n}F`,
      utilisation: "Utilisation", sessions: "Sessions", minutes: "minutes", csv: (n) => `CSV: ${n}`,
      csvNames: { heatmap: "heatmap", rooms: "rooms", sessions: "sessions per day", lengths: "session lengths", calls: "call response", uptime: "uptime" },
      holidays: "Holidays", makeup: "Make-up workdays", none: "none", listSep: ", ", clauseSep: "; ", end: ".", paren: (x) => ` (${x})`, peak: (d, h, v) => `Busiest: ${d} ${h}:00, ${v} utilised.`,
      heatNote: (hol, wk) => `Public holidays: ${hol}; make-up workdays: ${wk}.`,
      over: "Over-used", under: "Under-used", median: (v) => `Median room utilisation ${v}; over-used ≥ 1.5 × median, under-used ≤ half of it.`,
      overList: (n) => `${n} over-used`, underList: (n) => `${n} under-used`,
      lengthsNote: (n, p50, p90) => `${n} sessions; median ${p50} min, 90% within ${p90} min.`,
      ackP50: "Ack p50", ackP90: "Ack p90", arrP50: "Arrive p50", arrP90: "Arrive p90", target: "target",
      callsNote: (n, a, b) => `${n} calls; ${a} acknowledged within target, ${b} staff arrived within target.`, seconds: "s",
      uptimeNote: (u, n, s, e) => `Overall uptime ${u} (${n} devices, measured ${s} to ${e}). Lowest first below.`,
      workday: "workday", weekend: "weekend", holiday: "holiday", makeup_workday: "make-up workday",
      loading: "Computing…", failed: (w, m) => `${w}: ${m}`, noService: "trends service unavailable",
      summaryHeat: (p) => `Heatmap. ${p}`, summaryRooms: (a, b) => `Bar chart: highest utilisation ${a}, lowest ${b}.`,
      summaryDays: (n, m) => `Bar chart: ${n} days, ${m} sessions a day on average.`, summaryLengths: (p) => `Bar chart: median length ${p} min.`,
      summaryCalls: (m) => `Line chart: response times over ${m} months.`, summaryUptime: (u) => `Bar chart: overall uptime ${u}.`,
    },
  });
  const KIND_COLOUR = { workday: "#0f766e", weekend: "#94a3b8", holiday: "#dc2626", makeup_workday: "#d97706" };
  const charts = {};
  window.__chartsRendered = {}; // for tests: chart id → data points drawn
  const pct = (v) => v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)}%`;
  const iso = (d) => `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
  const dash = (v) => v === null || v === undefined ? "–" : v;
  const mean = (xs) => xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;

  function chart(id) {
    if (!charts[id]) charts[id] = echarts.init(document.getElementById(id), null, { renderer: "canvas" });
    return charts[id];
  }
  function draw(id, option, points, summary) {
    chart(id).setOption(Object.assign({ animation: false, textStyle: { fontFamily: getComputedStyle(document.documentElement).fontFamily } }, option), true);
    document.getElementById(id).setAttribute("aria-label", summary);
    window.__chartsRendered[id] = points;
  }
  function params(extra) {
    const p = new URLSearchParams({ from: document.getElementById("from").value, to: document.getElementById("to").value });
    const b = document.getElementById("building").value;
    if (b) p.set("building", b);
    for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
    return p;
  }
  function downloads() {
    document.querySelectorAll("[data-csv]").forEach((box) => {
      const name = box.dataset.csv;
      const links = [[name, {}]];
      if (name === "heatmap") links[0][1] = { days: document.getElementById("days").value };
      if (name === "sessions") links.push(["lengths", { table: "lengths" }]);
      box.replaceChildren(...links.map(([label, extra]) => el("a", {
        // Column names in the page's language.
        href: `/api/trends/${name}?${params(Object.assign({ format: "csv", lang: MR.lang }, extra))}`, download: "",
        text: T("csv", T("csvNames")[label]) })));
    });
  }

  function heatmap(d) {
    const data = [];
    let peak = null;
    d.cells.forEach((row, wd) => row.forEach((v, h) => {
      if (v === null) return;
      data.push([h, wd, Math.round(v * 1000) / 10]);
      if (!peak || v > peak[2]) peak = [wd, h, v];
    }));
    const names = (xs) => xs.length ? xs.map((x) => `${x.date.slice(5)} ${MR.lang === "zh" ? x.name_zh : x.name}`).join(T("listSep")) : T("none");
    document.getElementById("heat-note").textContent = T("heatNote", names(d.holidays), names(d.workdays));
    const peakText = peak ? T("peak", T("weekdays")[peak[0]], peak[1], pct(peak[2])) : "";
    const heatMax = Math.max(1, Math.ceil((d.max || 0) * 100));
    draw("c-heat", {
      tooltip: { position: "top", formatter: (p) => `${T("weekdays")[p.value[1]]} ${T("hour", p.value[0])}: ${p.value[2]}%` },
      grid: { left: 44, right: 8, top: 8, bottom: 64 },
      xAxis: { type: "category", data: [...Array(24).keys()].map(String), splitArea: { show: true }, axisLabel: { interval: 2 } },
      yAxis: { type: "category", data: T("weekdays"), inverse: true },
      // The legend names its ends: 0 % to the busiest hour's share.
      visualMap: { min: 0, max: heatMax, calculable: false, orient: "horizontal", left: "center", bottom: 0,
        itemHeight: 120, text: [`${heatMax}%`, "0%"], inRange: { color: ["#f0fdfa", "#5eead4", "#0f766e", "#134e4a"] } },
      series: [{ type: "heatmap", data, label: { show: false } }],
    }, data.length, T("summaryHeat", peakText));
  }
  function ranked(d) {
    const top = d.rooms.slice(0, 15).reverse();
    const label = (r) => `${MR.lang === "zh" ? r.building : r.building_en || r.building} ${T("floorN", r.floor)} ${r.id}`;
    const colour = { over: "#dc2626", under: "#94a3b8" };
    const over = d.rooms.filter((r) => r.flag === "over"), under = d.rooms.filter((r) => r.flag === "under");
    document.getElementById("rooms-note").textContent = `${T("median", pct(d.median))} ${T("overList", over.length)}` +
      (over.length ? T("paren", over.slice(0, 5).map((r) => r.id).join(T("listSep"))) : "") + T("clauseSep") + T("underList", under.length) +
      (under.length ? T("paren", under.slice(-5).map((r) => r.id).join(T("listSep"))) : "") + T("end");
    draw("c-rooms", {
      tooltip: { trigger: "axis", axisPointer: { type: "shadow" } },
      grid: { left: 8, right: 48, top: 8, bottom: 24, containLabel: true },
      // Few ticks, and none that would overlap: "1%2%3%…" on a phone otherwise.
      xAxis: { type: "value", splitNumber: 3, axisLabel: { hideOverlap: true, formatter: (v) => `${Math.round(v * 100)}%` } },
      yAxis: { type: "category", data: top.map(label), axisLabel: { fontSize: 10 } },
      series: [{ type: "bar", name: T("utilisation"), data: top.map((r) => ({ value: r.utilisation, itemStyle: { color: colour[r.flag] || "#0f766e" } })),
        label: { show: true, position: "right", formatter: (p) => pct(p.value), fontSize: 10 } }],
    }, top.length, T("summaryRooms", d.rooms[0] ? d.rooms[0].id : "–", d.rooms.length ? d.rooms[d.rooms.length - 1].id : "–"));
  }
  function sessions(d) {
    draw("c-days", {
      tooltip: { trigger: "axis" },
      grid: { left: 40, right: 8, top: 24, bottom: 28 },
      legend: { top: 0, data: ["workday", "weekend", "holiday", "makeup_workday"].map((k) => ({ name: T(k), itemStyle: { color: KIND_COLOUR[k] } })), textStyle: { fontSize: 10 }, selectedMode: false },
      xAxis: { type: "category", data: d.days.map((x) => x.date.slice(5)) },
      yAxis: { type: "value" },
      series: [{ type: "bar", name: T("sessions"), data: d.days.map((x) => ({ value: x.sessions, itemStyle: { color: KIND_COLOUR[x.kind] } })) },
        ...["workday", "weekend", "holiday", "makeup_workday"].map((k) => ({ type: "bar", name: T(k), data: [], itemStyle: { color: KIND_COLOUR[k] } }))],
    }, d.days.length, T("summaryDays", d.days.length, Math.round(mean(d.days.map((x) => x.sessions)))));
    const L = d.lengths;
    document.getElementById("lengths-note").textContent = T("lengthsNote", L.sessions, dash(L.p50_min), dash(L.p90_min));
    draw("c-lengths", {
      tooltip: { trigger: "axis" },
      grid: { left: 44, right: 8, top: 12, bottom: 40 },
      xAxis: { type: "category", name: T("minutes"), nameLocation: "middle", nameGap: 26, data: L.buckets.map((b) => b.to_min === null ? `${b.from_min}+` : `${b.from_min}–${b.to_min}`), axisLabel: { fontSize: 10 } },
      yAxis: { type: "value" },
      series: [{ type: "bar", name: T("sessions"), data: L.buckets.map((b) => b.sessions), itemStyle: { color: "#0f766e" } }],
    }, L.buckets.length, T("summaryLengths", dash(L.p50_min)));
  }
  function calls(d) {
    const months = d.months.map((m) => m.month);
    const s = (step, q) => d.months.map((m) => m[step] && m[step][q] !== undefined ? m[step][q] : null);
    // The target's label sits inside the plot, above its line: at the line's end it was cut off.
    const target = (v, name) => v ? { silent: true, symbol: "none", lineStyle: { type: "dashed" }, label: { position: "insideEndTop", formatter: `${name} ${v}${T("seconds")}`, fontSize: 10 }, data: [{ yAxis: v }] } : undefined;
    document.getElementById("calls-note").textContent = T("callsNote", d.total.calls, pct(d.total.acknowledged.within_target), pct(d.total.arrived.within_target));
    draw("c-calls", {
      tooltip: { trigger: "axis" },
      legend: { top: 0, textStyle: { fontSize: 10 } },
      grid: { left: 44, right: 12, top: 48, bottom: 28 },
      xAxis: { type: "category", data: months },
      yAxis: { type: "value", name: T("seconds") },
      series: [
        { type: "line", name: T("ackP50"), data: s("acknowledged", "p50_s"), color: "#0f766e", markLine: target(d.targets.acknowledged, T("target")) },
        { type: "line", name: T("ackP90"), data: s("acknowledged", "p90_s"), color: "#5eead4", lineStyle: { type: "dotted" } },
        { type: "line", name: T("arrP50"), data: s("arrived", "p50_s"), color: "#b45309", markLine: target(d.targets.arrived, T("target")) },
        { type: "line", name: T("arrP90"), data: s("arrived", "p90_s"), color: "#fbbf24", lineStyle: { type: "dotted" } },
      ],
    }, months.length, T("summaryCalls", months.length));
  }
  function uptime(d) {
    const low = d.devices.slice(0, 10).reverse();
    const when = (x) => x ? x.slice(0, 10) : "–";
    document.getElementById("uptime-note").textContent = T("uptimeNote", pct(d.uptime), d.devices.length, when(d.measured_start), when(d.measured_end));
    draw("c-uptime", {
      tooltip: { trigger: "axis", axisPointer: { type: "shadow" } },
      grid: { left: 8, right: 48, top: 8, bottom: 24, containLabel: true },
      xAxis: { type: "value", min: 0, max: 1, axisLabel: { formatter: (v) => `${Math.round(v * 100)}%` } },
      yAxis: { type: "category", data: low.map((x) => `${x.room || ""} ${x.device}`), axisLabel: { fontSize: 10 } },
      series: [{ type: "bar", data: low.map((x) => x.uptime), itemStyle: { color: "#0f766e" }, label: { show: true, position: "right", formatter: (p) => pct(p.value), fontSize: 10 } }],
    }, low.length, T("summaryUptime", pct(d.uptime)));
  }

  async function load() {
    const status = document.getElementById("status");
    status.textContent = T("loading");
    downloads();
    const jobs = [
      ["heatmap", { days: document.getElementById("days").value }, heatmap],
      ["rooms", {}, ranked], ["sessions", {}, sessions], ["calls", {}, calls], ["uptime", {}, uptime],
    ];
    const problems = [];
    await Promise.all(jobs.map(async ([name, extra, fn]) => {
      try { fn(await MR.api(`/api/trends/${name}?${params(extra)}`)); } catch (e) {
        problems.push(T("failed", T("csvNames")[name], e.status === 404 ? T("noService") : e.message));
      }
    }));
    status.textContent = problems.join(T("clauseSep"));
  }

  function setRange(days) {
    const to = new Date();
    const from = new Date(to.getTime() - (days - 1) * 86400000);
    document.getElementById("to").value = iso(to);
    document.getElementById("from").value = iso(from);
  }

  async function start() {
    MR.langButton(document.getElementById("lang"), () => { T.apply(); quick(); load(); });
    T.apply();
    await MR.requireLogin(document.getElementById("login"), "manager");
    document.getElementById("app").hidden = false;
    const sel = document.getElementById("building");
    let site = { buildings: [] };
    try { site = await MR.api("/api/site"); } catch (e) { /* all buildings */ }
    const fillBuildings = () => sel.replaceChildren(el("option", { value: "", text: T("allBuildings") }),
      ...site.buildings.map((b) => el("option", { value: b.name, text: MR.lang === "zh" ? b.name : b.name_en })));
    fillBuildings();
    function quick() {
      fillBuildings();
      const box = document.getElementById("quick");
      box.replaceChildren(...[7, 30, 90, 365].map((n) => el("button", { type: "button", class: "small", text: T("last", n),
        onclick: () => { setRange(n); load(); } })),
      el("button", { type: "button", class: "small", text: T("thisYear"), onclick: () => {
        const now = new Date();
        document.getElementById("from").value = `${now.getFullYear()}-01-01`;
        document.getElementById("to").value = iso(now);
        load();
      } }));
    }
    quick();
    setRange(30);
    document.getElementById("range").addEventListener("submit", (e) => { e.preventDefault(); load(); });
    document.getElementById("days").addEventListener("change", load);
    window.addEventListener("resize", () => Object.values(charts).forEach((c) => c.resize()));
    await load();
  }
  start();
})();
