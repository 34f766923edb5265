/* The diagnostic bundle page: start a bundle and show its progress (no inline script). */
"use strict";
(function () {
  if (document.body.dataset.page !== "bundle") return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const form = document.getElementById("bundle-form");
  const box = document.getElementById("bundle-progress");
  const bar = document.getElementById("bundle-bar");
  const text = document.getElementById("bundle-text");
  const err = document.getElementById("bundle-error");
  const ready = document.getElementById("bundle-ready");
  const name = document.getElementById("bundle-name");
  const size = document.getElementById("bundle-size");
  const start = document.getElementById("bundle-start");
  let timer = null;

  function show(s) {
    box.hidden = !s.running;
    bar.value = s.fraction || 0;
    text.textContent = s.running ? `${Math.round((s.fraction || 0) * 100)} % — ${s.text || ""}` : "";
    err.hidden = !s.error;
    err.textContent = s.error || "";
    ready.hidden = !(s.done && s.available);
    name.textContent = s.name || "";
    size.textContent = s.size ? `${s.size} bytes` : "";
    start.disabled = !!s.running;
  }

  async function refresh() {
    const r = await fetch("/config/bundle/status", {credentials: "same-origin",
                                                     headers: {"Accept": "application/json"}});
    if (r.status === 401) { location.href = "/login?next=/config/bundle"; return; }
    const s = await r.json();
    show(s);
    if (!s.running && timer !== null) { clearInterval(timer); timer = null; }
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = new FormData(form);
    const r = await fetch(form.action, {method: "POST", body, credentials: "same-origin",
                                        headers: {"Accept": "application/json",
                                                  "X-CSRF-Token": csrf}});
    if (r.status !== 200) {
      const data = await r.json().catch(() => ({}));
      err.hidden = false;
      err.textContent = data.error || `error ${r.status}`;
      return;
    }
    ready.hidden = true;
    show({running: true, fraction: 0, text: "starting"});
    if (timer === null) timer = setInterval(refresh, 500);
  });

  refresh();
  if (!box.hidden) timer = setInterval(refresh, 500);
})();
