/* CanBridge web page: live values by polling the JSON API. No libraries, no inline script. */
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const page = document.body.dataset.page;
  const conn = document.getElementById("conn");

  async function api(method, url, body) {
    const opts = {method, credentials: "same-origin", headers: {"Accept": "application/json"}};
    if (method !== "GET") {
      opts.headers["X-CSRF-Token"] = csrf;
      if (body !== undefined) {
        opts.headers["Content-Type"] = "application/json";
        opts.body = JSON.stringify(body);
      }
    }
    let r;
    try {
      r = await fetch(url, opts);
    } catch (e) {
      conn.hidden = false;
      throw e;
    }
    conn.hidden = true;
    if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); }
    const data = await r.json().catch(() => ({}));
    return {status: r.status, data};
  }

  function poll(fn, ms) {
    let busy = false;
    const run = async () => {
      if (busy || document.hidden) return;
      busy = true;
      try { await fn(); } catch (e) { /* shown by the connection banner */ }
      busy = false;
    };
    run();
    return setInterval(run, ms);
  }

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  }

  function num(v, d, unit) {
    if (v === null || v === undefined || typeof v !== "number") return "---";
    return v.toFixed(d) + (unit ? " " + unit : "");
  }

  /* ---- settings pages ---- */
  function settingsPage() {
    const form = document.getElementById("settings-form");
    const banner = document.getElementById("unavailable");
    const inputs = Array.from(form.querySelectorAll("[data-key]"));
    const orig = new Map();
    const dirty = new Set();
    const valueOf = (i) => i.type === "checkbox" ? (i.checked ? "1" : "0") : i.value;
    inputs.forEach((i) => {
      orig.set(i, valueOf(i));
      i.addEventListener("input", () => dirty.add(i));
      i.addEventListener("change", () => dirty.add(i));
    });
    if (form.querySelector(".invalid")) inputs.forEach((i) => dirty.add(i));
    // Send only what the user changed: untouched fields are not submitted at all, so saving
    // one setting never rewrites another (the server checks the shown text too).
    form.addEventListener("submit", (ev) => {
      if (ev.submitter && ev.submitter.name === "reset") return;
      for (const i of inputs) {
        if (valueOf(i) !== orig.get(i)) continue;
        form.querySelectorAll('[name="' + CSS.escape(i.name) + '"], [name="' + CSS.escape("orig:" + i.name) + '"]')
          .forEach((x) => { x.disabled = true; });
      }
      // re-enable after the browser has built the request (bfcache / 400 re-render)
      setTimeout(() => form.querySelectorAll("[disabled]").forEach((x) => { x.disabled = false; }), 0);
    });
    const refusalBox = document.getElementById("refusals");
    const labels = new Map(inputs.map((i) => [i.dataset.key, (form.querySelector('label[for="' + i.id + '"]') || {}).textContent || i.dataset.key]));
    function showRefusals(list) {
      const mine = (list || []).filter((r) => labels.has(r.setting));
      refusalBox.replaceChildren(...mine.map((r) => el("p", {class: "flash warn refusal", role: "alert", "data-setting": r.setting,
        text: "The driver refused " + labels.get(r.setting) + " = " + r.value + ": " + r.rule + ". " + r.in_force +
          " is in force (and stored again)" + (r.time ? ", " + new Date(r.time * 1000).toLocaleString() : "") + "."})));
    }
    const show = (i, v) => {
      if (v === null || v === undefined) return "";
      if (i.type === "number" && typeof v === "number") return v.toFixed(+i.dataset.decimals);
      return String(v);
    };
    poll(async () => {
      const {status, data} = await api("GET", "/api/settings");
      banner.hidden = status !== 503;
      if (status !== 200) return;
      showRefusals(data.refusals);
      for (const i of inputs) {
        if (dirty.has(i) || document.activeElement === i) continue;
        const v = show(i, data.values[i.dataset.key]);
        if (v === orig.get(i)) continue;
        if (i.type === "checkbox") i.checked = v !== "0" && v !== ""; else i.value = v;
        orig.set(i, v);
        const row = i.closest(".setting");
        row.classList.remove("changed");
        void row.offsetWidth;
        row.classList.add("changed");
      }
    }, 2000);
  }

  /* ---- status page ---- */
  const ALARM_TEXT = {0: "ok", 1: "warning", 2: "alarm"};
  let history = {};

  function chart(title, series, t, d, unit) {
    const pts = [];
    const vals = series ? series.filter((v) => typeof v === "number") : [];
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 100 40");
    svg.setAttribute("preserveAspectRatio", "none");
    let label = "no data yet";
    if (vals.length >= 2) {
      let lo = Math.min(...vals), hi = Math.max(...vals);
      if (hi - lo < 1e-6) { lo -= 1; hi += 1; }
      const t0 = t[0], t1 = t[t.length - 1] || t0 + 1;
      series.forEach((v, k) => {
        if (typeof v !== "number") return;
        const x = ((t[k] - t0) / Math.max(1, t1 - t0)) * 100;
        const y = 38 - ((v - lo) / (hi - lo)) * 36;
        pts.push(x.toFixed(1) + "," + y.toFixed(1));
      });
      const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
      line.setAttribute("points", pts.join(" "));
      svg.append(line);
      const a = Math.min(...vals), b = Math.max(...vals);
      label = a === b ? num(a, d, unit) : num(a, d) + " – " + num(b, d, unit);
    }
    return el("div", {class: "chart"},
      el("div", {class: "t"}, el("span", {text: title}), el("span", {text: label})), svg);
  }

  function kv(rows) {
    const tb = el("tbody");
    for (const [k, v, cls] of rows) {
      tb.append(el("tr", {}, el("td", {text: k}), el("td", cls ? {class: cls, text: v} : {text: v})));
    }
    return el("table", {class: "kv"}, tb);
  }

  function batteryCard(b) {
    const on = b.connected === 1;
    const h = history[b.service] || {};
    const alarms = Object.entries(b.alarms || {}).filter(([, v]) => v);
    const limits = b.limits || {};
    return el("section", {class: "card dev", "data-service": b.service},
      el("h3", {}, el("span", {text: b.title + (b.aggregate && !/aggregate/i.test(b.title) ? " (aggregate)" : "")}),
        el("span", {class: "badge " + (on ? "on" : "off"), text: on ? "connected" : "disconnected"})),
      el("p", {class: "svc", text: b.service + (b.instance !== null ? " · instance " + b.instance : "")}),
      el("div", {class: "big"},
        el("div", {}, el("b", {class: "soc", text: num(b.soc, 1, "%")}), el("span", {text: "state of charge"})),
        el("div", {}, el("b", {class: "voltage", text: num(b.voltage, 2, "V")}), el("span", {text: "voltage"})),
        el("div", {}, el("b", {class: "current", text: num(b.current, 1, "A")}), el("span", {text: "current"})),
        el("div", {}, el("b", {class: "power", text: num(b.power, 0, "W")}), el("span", {text: "power"}))),
      el("div", {class: "charts"},
        chart("SoC", h.soc, h.t || [], 1, "%"),
        chart("Voltage", h.voltage, h.t || [], 2, "V"),
        chart("Current", h.current, h.t || [], 1, "A")),
      kv([
        ["Temperature", num(b.temperature, 1, "°C")],
        ["Charge voltage limit (CVL)", num(limits.charge_voltage, 2, "V")],
        ["Charge current limit (CCL)", num(limits.charge_current, 1, "A")],
        ["Discharge current limit (DCL)", num(limits.discharge_current, 1, "A")],
        ["Battery low voltage", num(limits.low_voltage, 2, "V")],
        ["Allowed to charge / discharge", (b.allow_charge ?? "---") + " / " + (b.allow_discharge ?? "---")],
        ["Alarms", alarms.length ? alarms.map(([k, v]) => k + ": " + ALARM_TEXT[v]).join(", ") : "none",
          alarms.length ? "alarm" + Math.max(...alarms.map(([, v]) => v)) : ""],
        ["Serial / firmware", (b.serial ?? "---") + " / " + (b.firmware ?? "---")],
        ["Last read by the driver", b.age === null || b.age === undefined ? "---" : b.age.toFixed(0) + " s ago"],
      ]));
  }

  function phases(obj) {
    return Object.entries(obj || {}).map(([ph, p]) =>
      [ph, num(p.V, 1, "V") + " · " + num(p.I, 1, "A") + " · " + num(p.F, 2, "Hz") + " · " + num(p.P, 0, "W")]);
  }

  function vebusCard(v) {
    const h = history[v.service] || {};
    const energy = Object.entries(v.energy || {});
    const bridge = Object.entries(v.bridge || {});
    return el("section", {class: "card dev", "data-service": v.service},
      el("h3", {}, el("span", {text: v.title}), el("span", {class: "badge info state", text: v.state_text})),
      el("p", {class: "svc", text: v.service + " · mode " + v.mode_text}),
      v.ladder !== undefined && v.ladder !== null ? el("p", {class: "ladder"},
        el("span", {class: "badge " + (v.ladder === "normal" ? "on" : "off"), text: "Safety ladder: " + v.ladder}),
        " ", v.charge_phase ? el("span", {class: "badge info", text: "Charge phase: " + v.charge_phase}) : null) : null,
      v.battery_source !== undefined && v.battery_source !== null ? el("p", {class: "source"},
        "Battery source: " + (v.battery_source || "none") + (v.battery_source_reason ? " (" + v.battery_source_reason + ")" : "")
        + " · SoC source: " + (v.soc_source || "none")) : null,
      el("div", {class: "big"},
        el("div", {}, el("b", {text: num(v.ac_in_p, 0, "W")}), el("span", {text: "AC in"})),
        el("div", {}, el("b", {text: num(v.ac_out_p, 0, "W")}), el("span", {text: "AC out"})),
        el("div", {}, el("b", {text: num(v.dc.voltage, 2, "V")}), el("span", {text: "DC voltage"})),
        el("div", {}, el("b", {text: num(v.dc.current, 1, "A")}), el("span", {text: "DC current"}))),
      el("div", {class: "charts"},
        chart("SoC", h.soc, h.t || [], 1, "%"),
        chart("Voltage", h.voltage, h.t || [], 2, "V"),
        chart("Current", h.current, h.t || [], 1, "A")),
      el("h4", {text: "AC in (V · A · Hz · W)"}),
      kv(Object.keys(v.ac_in).length ? phases(v.ac_in) : [["—", "no AC input"]]),
      el("h4", {text: "AC out"}),
      kv(Object.keys(v.ac_out).length ? phases(v.ac_out) : [["—", "---"]]),
      el("h4", {text: "Energy counters"}),
      kv(energy.length ? energy.map(([k, x]) => [k, num(x, 2, "kWh")]) : [["—", "none published"]]),
      bridge.length ? el("h4", {text: "Bridge (charge controller, safety ladder)"}) : null,
      bridge.length ? kv(bridge.map(([k, x]) => [k, x === null ? "---" : String(x)])) : null);
  }

  function statusPage() {
    const bat = document.getElementById("batteries");
    const veb = document.getElementById("vebus");
    const updated = document.getElementById("updated");
    // The hour of history is fetched once, then only what is new (?since=): each poll
    // carries a sample or two instead of the whole hour.
    let last = null;
    poll(async () => {
      const {status, data} = await api("GET", "/api/history" + (last === null ? "" : "?since=" + last));
      if (status !== 200) return;
      for (const [svc, h] of Object.entries(data)) {
        const cur = history[svc] || (history[svc] = {t: [], soc: [], voltage: [], current: []});
        for (const k of ["t", "soc", "voltage", "current"]) cur[k].push(...(h[k] || []));
        const n = h.t.length ? h.t[h.t.length - 1] : null;
        if (n !== null && (last === null || n > last)) last = n;
      }
      const cutoff = (last || 0) - 3600;
      for (const h of Object.values(history)) {
        let k = 0;
        while (k < h.t.length && h.t[k] < cutoff) k++;
        if (k) for (const key of ["t", "soc", "voltage", "current"]) h[key].splice(0, k);
      }
    }, 5000);
    poll(async () => {
      const {status, data} = await api("GET", "/api/status");
      if (status !== 200) return;
      document.getElementById("settings-down").hidden = data.settings_available;
      const ref = document.getElementById("refusals");
      ref.replaceChildren(...(data.refusals || []).map((r) => el("p", {class: "flash warn refusal", role: "alert",
        text: "A driver refused " + r.setting + " = " + r.value + ": " + r.rule + ". " + r.in_force +
          " is in force" + (r.time ? " (" + new Date(r.time * 1000).toLocaleString() + ")" : "") + "."})));
      bat.replaceChildren(...(data.batteries.length ? data.batteries.map(batteryCard)
        : [el("p", {class: "muted", text: "No battery service on D-Bus."})]));
      veb.replaceChildren(...(data.vebus.length ? data.vebus.map(vebusCard)
        : [el("p", {class: "muted", text: "No Sunny Island (vebus service) on D-Bus."})]));
      updated.textContent = "Updated " + new Date().toLocaleTimeString();
    }, 1000);
  }

  /* ---- diagnostics ---- */
  function diagnosticsPage() {
    const box = document.getElementById("diag");
    const stats = document.getElementById("web-stats");
    const open = new Map();
    const prev = new Map();  // service+path -> [value, time]: counter rates between polls
    poll(async () => {
      const {status, data} = await api("GET", "/api/diagnostics");
      if (status !== 200) return;
      box.querySelectorAll("details").forEach((d) => open.set(d.dataset.service, d.open));
      const w = data.web;
      stats.replaceChildren(el("h2", {text: "This web page's D-Bus link"}), kv([
        ["Settings service", w.settings_available ? "available" : "NOT available"],
        ["Signals received", String(w.signals)], ["Calls made", String(w.calls)],
        ["Call errors / timeouts", w.call_errors + " / " + w.timeouts],
        ["Last error", w.last_error || "none"],
      ]));
      if (!data.services.length) {
        box.replaceChildren(el("p", {class: "muted", text: "No CanBridge, battery or vebus service on D-Bus."}));
        return;
      }
      box.replaceChildren(...data.services.map((s) => {
        const tb = el("tbody");
        const now = Date.now() / 1000;
        for (const r of s.paths) {
          const key = s.service + r.path;
          let rate = "";
          if (typeof r.value === "number" && /Frames|Errors|Timeouts|Aborts|Failures|Reopens|Count/i.test(r.path)) {
            const p = prev.get(key);
            if (p && now > p[1] && r.value >= p[0]) rate = ((r.value - p[0]) / (now - p[1])).toFixed(1) + " /s";
            prev.set(key, [r.value, now]);
          }
          tb.append(el("tr", {}, el("td", {text: r.path}), el("td", {class: "num", text: r.text}),
            el("td", {class: "num", text: rate}),
            el("td", {class: "num", text: r.age === null ? "" : r.age.toFixed(0) + " s"})));
        }
        let nodes = null;
        if (s.nodes && s.nodes.length) {
          const cols = Object.keys(s.nodes[0]);
          nodes = el("table", {class: "data nodes"},
            el("thead", {}, el("tr", {}, ...cols.map((c) => el("th", {text: c.replace(/_/g, " ")})))),
            el("tbody", {}, ...s.nodes.map((n) => el("tr", {}, ...cols.map((c) =>
              el("td", {class: typeof n[c] === "number" ? "num" : "", text: n[c] === null || n[c] === undefined ? "---" : String(n[c])}))))));
        }
        const d = el("details", {"data-service": s.service},
          el("summary", {text: s.service + (s.process ? " (" + s.process + ")" : "") + " — " + s.paths.length + " paths"}),
          nodes ? el("h4", {text: "Batteries (per CANopen node)"}) : null, nodes,
          el("table", {class: "data"}, el("thead", {}, el("tr", {}, el("th", {text: "Path"}),
            el("th", {text: "Value"}), el("th", {text: "Rate"}), el("th", {text: "Unchanged for"}))), tb));
        d.open = open.has(s.service) ? open.get(s.service) : s.class === "canbridge";
        return d;
      }));
    }, 2000);
  }

  /* ---- finding batteries ---- */
  function scanPage() {
    const start = document.getElementById("scan-start");
    const stateEl = document.getElementById("scan-state");
    const err = document.getElementById("scan-error");
    const table = document.getElementById("scan-table");
    const use = document.getElementById("scan-use");
    const ok = document.getElementById("scan-ok");
    let ids = "";
    const refresh = async () => {
      const {data} = await api("GET", "/api/scan");
      start.disabled = !data.available || data.running;
      if (data.error) { err.textContent = "Last scan: " + data.error; err.hidden = false; }
      stateEl.textContent = !data.available ? data.message
        : data.running ? "Scanning… " + (data.progress ?? "") + (data.progress != null ? " %" : "")
        : (data.nodes.length ? data.nodes.length + " found" : "");
      const tb = table.querySelector("tbody");
      tb.replaceChildren(...(data.nodes || []).map((n) => el("tr", {},
        el("td", {text: String(n.node)}), el("td", {text: n.serial ?? "---"}),
        el("td", {text: n.firmware ?? "---"}), el("td", {text: n.product ?? "---"}))));
      table.hidden = !(data.nodes || []).length;
      ids = data.node_ids || "";
      use.hidden = !ids || data.running;
      document.getElementById("scan-ids").textContent = ids;
    };
    start.addEventListener("click", async () => {
      err.hidden = true;
      const {status, data} = await api("POST", "/api/scan");
      if (status !== 200) { err.textContent = data.error; err.hidden = false; }
      refresh();
    });
    use.addEventListener("click", async () => {
      err.hidden = true; ok.hidden = true;
      const {status, data} = await api("PUT", "/api/settings/Superb/NodeIds", {value: ids});
      if (status === 200) {
        ok.textContent = "Node IDs set to " + ids + " (the settings service answered OK).";
        ok.hidden = false;
        document.getElementById("current-ids").textContent = ids;
      } else {
        err.textContent = data.error + (data.errors ? ": " + Object.values(data.errors).join("; ") : "");
        err.hidden = false;
      }
    });
    poll(refresh, 1000);
  }

  if (page === "settings") settingsPage();
  else if (page === "status") statusPage();
  else if (page === "diagnostics") diagnosticsPage();
  else if (page === "scan") scanPage();
})();
