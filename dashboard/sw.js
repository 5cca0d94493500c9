// Service worker: shows Web Push messages (a free room for a mother, a new
// emergency call for staff) and opens the page when one is tapped.
// It caches nothing: stale room states must never be shown.
"use strict";
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let msg = {};
  try { msg = event.data ? event.data.json() : {}; } catch (e) { msg = { title: "母婴室", body: event.data ? event.data.text() : "" }; }
  event.waitUntil(self.registration.showNotification(msg.title || "母婴室", {
    body: msg.body || "",
    tag: msg.tag,
    renotify: true,
    requireInteraction: !!msg.requireInteraction,
    vibrate: msg.requireInteraction ? [500, 200, 500, 200, 500] : [200, 100, 200],
    data: { url: msg.url || "/" },
  }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = (event.notification.data && event.notification.data.url) || "/";
  event.waitUntil(self.clients.matchAll({ type: "window", includeUncontrolled: true }).then((list) => {
    for (const c of list) {
      if (new URL(c.url).pathname === new URL(url, self.location.origin).pathname && "focus" in c) return c.focus();
    }
    return self.clients.openWindow(url);
  }));
});
