// Shared by every page: language, API calls with the CSRF token, the live
// stream, sounds, vibration, notifications, service worker and Web Push.
// Plain script (no modules, no build step) so that older in-app browsers
// (WeChat's) run it; every newer API is feature-detected.
"use strict";
(function () {
  const MR = (window.MR = {});
  // Older in-app browsers (WeChat's X5 kernel, iOS 13) lack replaceChildren.
  [Element, DocumentFragment].forEach((C) => {
    if (!C.prototype.replaceChildren) {
      C.prototype.replaceChildren = function () {
        while (this.firstChild) this.removeChild(this.firstChild);
        this.append.apply(this, arguments);
      };
    }
  });
  const LANG_KEY = "mamaroom.lang";

  MR.lang = (function () {
    try { return localStorage.getItem(LANG_KEY) || "zh"; } catch (e) { return "zh"; }
  })();
  MR.store = {
    get(key, fallback) {
      try { const v = localStorage.getItem(key); return v === null ? fallback : JSON.parse(v); } catch (e) { return fallback; }
    },
    set(key, value) { try { localStorage.setItem(key, JSON.stringify(value)); } catch (e) { /* private mode */ } },
  };

  // texts: {zh: {...}, en: {...}}; a value may be a function of arguments.
  MR.i18n = function (texts) {
    const t = function (key) {
      const args = Array.prototype.slice.call(arguments, 1);
      const own = texts[MR.lang] && texts[MR.lang][key];
      const v = own !== undefined ? own : texts.zh[key] !== undefined ? texts.zh[key] : key;
      return typeof v === "function" ? v.apply(null, args) : v;
    };
    t.apply = function () {
      document.documentElement.lang = MR.lang === "zh" ? "zh-CN" : "en";
      document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
      document.querySelectorAll("[data-i18n-label]").forEach((el) => { el.setAttribute("aria-label", t(el.dataset.i18nLabel)); });
      const title = document.querySelector("[data-i18n-title]");
      if (title) document.title = t(title.dataset.i18nTitle);
    };
    return t;
  };
  MR.setLang = function (lang) { MR.lang = lang; try { localStorage.setItem(LANG_KEY, lang); } catch (e) { /* ignore */ } };
  // A language button shows the other language's name.
  MR.langButton = function (button, onChange) {
    // The accessible name starts with the visible text (WCAG 2.5.3).
    const label = () => {
      const zh = MR.lang === "zh";
      button.textContent = zh ? "EN" : "中文";
      button.setAttribute("lang", zh ? "en" : "zh-CN");
      button.setAttribute("aria-label", zh ? "EN: English" : "中文：切换到中文");
    };
    label();
    button.addEventListener("click", () => { MR.setLang(MR.lang === "zh" ? "en" : "zh"); label(); onChange(); });
  };

  // el("li", {class: "x", onclick: f}, child, "text", ...)
  MR.el = function (tag, attrs) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (let i = 2; i < arguments.length; i++) {
      const c = arguments[i];
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : String(c));
    }
    return node;
  };

  function cookie(name) {
    const m = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : null;
  }

  // fetch JSON; unsafe methods carry the session's CSRF token (server/security.py).
  MR.api = async function (path, opts) {
    opts = opts || {};
    const headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
    const method = (opts.method || "GET").toUpperCase();
    if (method !== "GET" && method !== "HEAD") {
      const csrf = MR.csrf || cookie("mamaroom_csrf");
      if (csrf) headers["X-CSRF-Token"] = csrf;
    }
    let body = opts.body;
    if (body !== undefined && !(body instanceof FormData) && !(body instanceof URLSearchParams) && typeof body !== "string") {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(body);
    }
    const r = await fetch(path, { method, headers, body, credentials: "same-origin" });
    // Served by the proxy's public listener (server/surfaces.py): the staff side is not here.
    if (r.headers.get("X-Mamaroom-Surface") === "public") MR.surface = "public";
    const type = r.headers.get("Content-Type") || "";
    const data = r.status === 204 ? null : type.includes("json") ? await r.json() : await r.text();
    if (!r.ok) {
      // What the server refused, in the page's language (detail_zh: mamaroom/said.py).
      const detail = data && (MR.lang === "zh" && data.detail_zh ? data.detail_zh : data.detail);
      const err = new Error((detail && (typeof detail === "string" ? detail : JSON.stringify(detail))) || r.statusText);
      err.status = r.status;
      throw err;
    }
    return data;
  };

  // The live stream; EventSource reconnects by itself (the server sends retry).
  // A browser without EventSource (some in-app browsers) polls instead: the
  // room list (and, for staff, the open alerts) every POLL_MS, handed to the
  // same handlers as the stream's snapshot.
  const POLL_MS = 10000;
  MR.stream = function (handlers, onConnection) {
    if (!("EventSource" in window)) {
      const poll = async () => {
        try {
          const list = await MR.api("/api/rooms");
          if (handlers.snapshot) handlers.snapshot(list);
          if (handlers.alert) (await MR.api("/api/alerts?limit=200")).forEach(handlers.alert);
          onConnection && onConnection(true);
        } catch (e) { onConnection && onConnection(false); }
      };
      poll();
      return { close: clearInterval.bind(null, setInterval(poll, POLL_MS)) };
    }
    const es = new EventSource("/api/stream", { withCredentials: true });
    for (const [event, fn] of Object.entries(handlers)) {
      es.addEventListener(event, (e) => { fn(JSON.parse(e.data)); });
    }
    es.addEventListener("open", () => onConnection && onConnection(true));
    es.addEventListener("snapshot", () => onConnection && onConnection(true));
    es.onerror = () => onConnection && onConnection(false);
    return es;
  };

  // --- sound: Web Audio, unlocked by a tap (browsers block audio before) ----
  const AC = window.AudioContext || window.webkitAudioContext;
  let audio = null;
  MR.sound = {
    supported: !!AC,
    get unlocked() { return !!audio && audio.state === "running"; },
    // Call from a tap or click handler.
    unlock() {
      if (!AC) return Promise.resolve(false);
      if (!audio) audio = new AC();
      // A short silent buffer: the older iOS way of unlocking.
      try {
        const src = audio.createBufferSource();
        src.buffer = audio.createBuffer(1, 1, 22050);
        src.connect(audio.destination);
        src.start(0);
      } catch (e) { /* ignore */ }
      const p = audio.resume ? audio.resume() : Promise.resolve();
      return Promise.resolve(p).then(() => MR.sound.unlocked, () => false);
    },
    // tones: [[frequency Hz, start s, length s], ...]
    play(tones, volume) {
      if (!MR.sound.unlocked) return false;
      const t0 = audio.currentTime + 0.02;
      for (const [f, start, len] of tones) {
        const osc = audio.createOscillator();
        const gain = audio.createGain();
        osc.type = "sine";
        osc.frequency.value = f;
        gain.gain.setValueAtTime(0.0001, t0 + start);
        gain.gain.exponentialRampToValueAtTime(volume || 0.4, t0 + start + 0.02);
        gain.gain.exponentialRampToValueAtTime(0.0001, t0 + start + len);
        osc.connect(gain);
        gain.connect(audio.destination);
        osc.start(t0 + start);
        osc.stop(t0 + start + len + 0.05);
      }
      return true;
    },
    // A gentle two-note chime (a room is free).
    chime() { return MR.sound.play([[784, 0, 0.35], [1047, 0.3, 0.6]], 0.3); },
    // An urgent alarm: three high beeps (an emergency call).
    alarm() { return MR.sound.play([[1400, 0, 0.18], [1000, 0.25, 0.18], [1400, 0.5, 0.18], [1000, 0.75, 0.18]], 0.6); },
  };

  MR.vibrate = function (pattern) {
    try { return !!(navigator.vibrate && navigator.vibrate(pattern)); } catch (e) { return false; }
  };

  // --- service worker, notifications, Web Push ------------------------------
  MR.swReady = null;
  MR.registerSW = function () {
    if (!("serviceWorker" in navigator) || !window.isSecureContext) return null;
    MR.swReady = navigator.serviceWorker.register("/sw.js", { scope: "/" })
      .then(() => navigator.serviceWorker.ready).catch(() => null);
    return MR.swReady;
  };
  MR.notifySupported = function () { return "Notification" in window; };
  // Ask in a tap handler; resolves to "granted", "denied", "default" or "unsupported".
  MR.askNotify = function () {
    if (!MR.notifySupported()) return Promise.resolve("unsupported");
    if (Notification.permission !== "default") return Promise.resolve(Notification.permission);
    try {
      const p = Notification.requestPermission();
      return p && p.then ? p : Promise.resolve(Notification.permission);
    } catch (e) { return Promise.resolve("unsupported"); }
  };
  MR.notify = function (title, body, url, tag) {
    if (!MR.notifySupported() || Notification.permission !== "granted") return false;
    const opts = { body, tag, data: { url }, renotify: true };
    // Android Chrome allows notifications only through the service worker.
    if (MR.swReady) {
      MR.swReady.then((reg) => reg ? reg.showNotification(title, opts) : new Notification(title, opts)).catch(() => {});
      return true;
    }
    try { new Notification(title, opts); return true; } catch (e) { return false; }
  };
  function b64ToBytes(s) {
    const pad = "=".repeat((4 - (s.length % 4)) % 4);
    const raw = atob((s + pad).replace(/-/g, "+").replace(/_/g, "/"));
    return Uint8Array.from(raw, (c) => c.charCodeAt(0));
  }
  MR.pushSupported = function () { return "serviceWorker" in navigator && "PushManager" in window && window.isSecureContext; };
  // Subscribe this browser and register it at `path` with `extra` fields.
  // Resolves to true when the server has the subscription.
  MR.pushSubscribe = async function (path, extra) {
    if (!MR.pushSupported()) return false;
    const key = await MR.api("/api/push/key");
    if (!key.enabled) return false;
    const reg = await (MR.swReady || MR.registerSW());
    if (!reg) return false;
    let sub = await reg.pushManager.getSubscription();
    if (!sub) sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: b64ToBytes(key.public_key) });
    await MR.api(path, { method: "POST", body: Object.assign({ subscription: sub.toJSON() }, extra || {}) });
    return true;
  };

  // Tell the server to forget this browser's subscription (a cancelled reminder).
  MR.pushUnsubscribe = async function () {
    if (!MR.pushSupported()) return false;
    const reg = await (MR.swReady || MR.registerSW());
    const sub = reg ? await reg.pushManager.getSubscription() : null;
    if (!sub) return false;
    await MR.api("/api/push/unsubscribe", { method: "POST", body: { endpoint: sub.endpoint } });
    return true;
  };

  // --- time -----------------------------------------------------------------
  MR.duration = function (seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    const m = Math.floor(seconds / 60), s = seconds % 60, h = Math.floor(m / 60);
    if (MR.lang === "zh") return h ? `${h} 小时 ${m % 60} 分` : m ? `${m} 分 ${s} 秒` : `${s} 秒`;
    return h ? `${h} h ${m % 60} min` : m ? `${m} min ${s} s` : `${s} s`;
  };
  MR.clock = function (ms) {
    const d = new Date(ms);
    const p = (n) => String(n).padStart(2, "0");
    return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  };

  // --- login for staff pages -------------------------------------------------
  const LOGIN_TEXT = {
    zh: { title: "工作人员登录", user: "用户名", pass: "密码", go: "登录", bad: "用户名或密码错误", many: "失败次数过多，请稍后再试", busy: "服务器正忙，请几秒后再试", role: "此账号无权访问本页" },
    en: { title: "Staff login", user: "User name", pass: "Password", go: "Log in", bad: "Wrong name or password", many: "Too many failed logins; try again later", busy: "The server is busy; try again in a few seconds", role: "This account may not use this page" },
  };
  const ROLES = ["staff", "manager", "admin"];
  MR.hasRole = (me, role) => ROLES.indexOf(me.role) >= ROLES.indexOf(role);
  // Resolves with {name, role} once logged in with at least `role`.
  MR.requireLogin = async function (container, role) {
    try {
      const me = await MR.api("/api/auth/me");
      if (MR.hasRole(me, role)) return me;
    } catch (e) { if (e.status !== 401) throw e; }
    return new Promise((resolve) => {
      const L = LOGIN_TEXT[MR.lang] || LOGIN_TEXT.zh;
      const msg = MR.el("p", { class: "error", role: "alert" });
      const user = MR.el("input", { id: "login-user", name: "username", autocomplete: "username", required: true, autocapitalize: "none" });
      const pass = MR.el("input", { id: "login-pass", name: "password", type: "password", autocomplete: "current-password", required: true });
      const form = MR.el("form", { class: "card login", "aria-labelledby": "login-title" },
        MR.el("h2", { id: "login-title", text: L.title }),
        MR.el("label", { for: "login-user", text: L.user }), user,
        MR.el("label", { for: "login-pass", text: L.pass }), pass,
        MR.el("button", { type: "submit", class: "primary big", text: L.go }), msg);
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        msg.textContent = "";
        try {
          const s = await MR.api("/api/auth/session", { method: "POST", body: new URLSearchParams({ username: user.value, password: pass.value }) });
          MR.csrf = s.csrf_token;
          const me = await MR.api("/api/auth/me");
          if (!MR.hasRole(me, role)) { msg.textContent = L.role; return; }
          form.remove();
          resolve(me);
        } catch (e) {
          // 503: too many logins at once (not a wrong password); 429: too many failures.
          msg.textContent = e.status === 429 ? L.many : e.status === 503 ? L.busy : L.bad;
        }
      });
      container.replaceChildren(form);
      user.focus();
    });
  };
  MR.logout = async function () {
    try { await MR.api("/api/auth/logout", { method: "POST" }); } catch (e) { /* already out */ }
    location.reload();
  };
})();
