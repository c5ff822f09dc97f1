// yippiemove job page: live progress over Server-Sent Events (GET /transfers/ID/events).
"use strict";

(function () {
  const TERMINAL = new Set(["done", "failed", "cancelled"]);
  const LABELS = { queued: "Waiting to start", running: "Running", done: "Finished", failed: "Failed", cancelled: "Cancelled", awaiting_payment: "Waiting for payment" };
  const PHASES = {
    queued: "Waiting for a free worker…",
    resuming: "Resuming after an interruption…",
    connecting: "Connecting to the mail servers…",
    planning: "Listing the folders and comparing both sides…",
    copying: "Copying…",
    verifying: "Verifying…",
    interrupted: "Interrupted; resuming shortly…",
  };
  const $ = (sel, root) => (root || document).querySelector(sel);

  const size = (n) => window.yippiemoveSize(n);
  const rate = (n) => (n == null ? "–" : `${size(n)}/s`);
  const num = (n) => (Number(n) || 0).toLocaleString("en-US");
  function duration(s) {
    if (s == null || !isFinite(s) || s < 0) return "–";
    s = Math.round(s);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }
  // "about 3–4 min" from the job's eta_range [low, high] (seconds); as fmt.py eta_range.
  function etaRange(span) {
    if (!Array.isArray(span) || span.length !== 2) return "–";
    const [lo, hi] = span.map(Number);
    if (!isFinite(lo) || !isFinite(hi) || lo < 0 || hi < lo) return "–";
    for (const [unit, secs] of [["d", 86400], ["h", 3600], ["min", 60]]) {
      if (hi >= secs * (unit !== "min" ? 1.5 : 1)) {
        const a = Math.max(1, Math.floor(lo / secs)), b = Math.max(1, Math.ceil(hi / secs));
        return a === b ? `about ${a} ${unit}` : `about ${a}–${b} ${unit}`;
      }
    }
    if (hi < 10) return "a few seconds";
    const a = Math.max(10, Math.floor(lo / 10) * 10), b = Math.ceil(hi / 10) * 10;
    return a === b ? `about ${a} s` : `about ${a}–${b} s`;
  }
  function percent(done, total) {
    if (!total || total <= 0) return 0;
    return Math.max(0, Math.min(100, Math.floor((done * 100) / total)));
  }
  function setText(sel, text) {
    const el = $(sel);
    if (el && el.textContent !== text) el.textContent = text;
  }

  // -- the rate graph: bytes/s between consecutive points of rate_history -----------------
  function drawGraph(history) {
    const svg = $("[data-rate-graph]");
    if (!svg) return;
    const pts = [];
    for (let i = 1; i < (history || []).length; i++) {
      const [t0, b0] = history[i - 1], [t1, b1] = history[i];
      if (t1 > t0) pts.push([t1, Math.max(0, (b1 - b0) / (t1 - t0))]);
    }
    const empty = $("[data-graph-empty]");
    if (pts.length < 2) { if (empty) empty.hidden = false; return; }
    if (empty) empty.hidden = true;
    // At most ~240 points, averaged in buckets; then a light moving average.
    const step = Math.ceil(pts.length / 240);
    let series = [];
    for (let i = 0; i < pts.length; i += step) {
      const chunk = pts.slice(i, i + step);
      series.push([chunk[chunk.length - 1][0], chunk.reduce((a, p) => a + p[1], 0) / chunk.length]);
    }
    series = series.map((p, i) => {
      const w = series.slice(Math.max(0, i - 1), i + 2);
      return [p[0], w.reduce((a, q) => a + q[1], 0) / w.length];
    });
    const t0 = history[0][0], t1 = series[series.length - 1][0];
    const span = Math.max(1e-6, t1 - t0);
    const max = Math.max(...series.map((p) => p[1])) * 1.15 || 1;
    const W = 600, H = 140;
    const xy = series.map(([t, r]) => [((t - t0) / span) * W, H - (r / max) * (H - 6)]);
    const line = "M" + [[0, xy[0][1]], ...xy].map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" L");
    svg.querySelector(".line").setAttribute("d", line);
    svg.querySelector(".area").setAttribute("d", `${line} L${W},${H} L0,${H} Z`);
    setText("[data-graph-max]", `peak ${rate(max / 1.15)}`);
    setText("[data-graph-span]", `${duration(span)}`);
  }

  // -- per-folder table ----------------------------------------------------------------
  function folderRow(name) {
    const tbody = $("[data-per-folder]");
    let row = Array.from(tbody.rows).find((r) => r.dataset.folder === name);
    if (row) return row;
    const ph = tbody.querySelector(".placeholder");
    if (ph) ph.remove();
    row = document.createElement("tr");
    row.dataset.folder = name;
    // data-label: the cell's heading when rows are cards at phone widths (style.css).
    row.innerHTML = '<td class="foldername"></td><td class="muted" data-label="At the destination"></td>' +
      '<td class="barcol"><progress class="bar" max="100" value="0"></progress><small class="state"></small></td>' +
      '<td class="num" data-label="Messages"></td><td class="num" data-label="Size"></td>' +
      '<td class="num" data-label="Failed"></td>';
    row.cells[0].textContent = name;
    tbody.appendChild(row);
    return row;
  }
  function updateFolders(per) {
    if (!per) return;
    const key = (n) => [n.toUpperCase() === "INBOX" || n.toUpperCase().startsWith("INBOX/") ? 0 : 1, n.toLowerCase()];
    const entries = Object.entries(per).sort((a, b) => {
      const [x, y] = [key(a[0]), key(b[0])];
      return x[0] - y[0] || (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0);
    });
    for (const [name, f] of entries) {
      const row = folderRow(name);
      const total = f.messages != null ? f.messages : f.messages_total;
      const bytes = f.bytes != null ? f.bytes : f.bytes_total;
      const pc = (bytes || total) ? percent(f.bytes_done || f.messages_done || 0, bytes || total) : (f.state === "done" ? 100 : 0);
      row.cells[1].textContent = f.dest || name;
      row.cells[2].querySelector("progress").value = pc;
      const st = row.cells[2].querySelector(".state");
      st.textContent = f.state || "";
      st.className = `state st-text-${f.state || ""}`;
      row.cells[3].textContent = `${num(f.messages_done)} / ${num(total)}`;
      row.cells[4].textContent = `${size(f.bytes_done || 0)} / ${size(bytes || 0)}`;
      row.cells[5].textContent = String(f.failed || 0);
      row.cells[5].classList.toggle("text-error", !!f.failed);
    }
  }

  function updateFailures(list) {
    const card = $("[data-failures-card]");
    if (!card || !Array.isArray(list)) return;
    // Once the report is shown, it lists the failed messages: do not say it twice.
    card.hidden = list.length === 0 || !!$("[data-summary] table.failures");
    setText("[data-failures-count]", String(list.length));
    const tbody = $("[data-failures]");
    if (tbody.rows.length === list.length) return;
    tbody.innerHTML = "";
    list.forEach((x) => {
      const tr = document.createElement("tr");
      const labels = ["Folder", "UID", "Size", "Message-ID", "Reason"];
      [x.folder, x.uid, size(x.size), x.message_id || "–", x.reason].forEach((v, i) => {
        const td = document.createElement("td");
        td.textContent = v == null ? "" : String(v);
        td.dataset.label = labels[i];
        if (i === 1 || i === 2) td.className = "num";
        if (i === 3) td.className = "mono small";
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
  }

  // -- the whole job ---------------------------------------------------------------------
  function update(job) {
    const p = job.progress || {};
    const root = $("#job");
    root.dataset.status = job.status;
    const badge = $("[data-status-badge]");
    badge.className = `badge badge-large st-${job.status}`;
    setText("[data-status-badge]", LABELS[job.status] || job.status);
    const terminal = TERMINAL.has(job.status);
    // "Your transfer is on its way" is over once it has ended.
    if (terminal) document.querySelectorAll("[data-while-running]").forEach((el) => el.remove());
    $("[data-cancel-form]").hidden = terminal;
    $("[data-rerun-form]").hidden = !(terminal && job.can_rerun !== false);
    $("[data-live]").hidden = terminal;

    const pc = job.status === "done" ? 100 : percent(p.bytes_done || p.messages_done || 0, p.bytes_total || p.messages_total);
    setText("[data-percent]", String(pc));
    $("[data-overall-bar]").value = pc;
    let phase = LABELS[job.status] || job.status;
    if (job.status === "queued" && p.phase === "waiting" && p.waiting_for)
      phase = `Waiting for transfer ${p.waiting_for} into the same mailbox…`;
    else if (job.status === "queued" && p.phase === "waiting" && typeof p.waiting_reason === "string")
      phase = p.waiting_reason.charAt(0).toUpperCase() + p.waiting_reason.slice(1);
    else if (job.status === "queued") phase = PHASES[p.phase === "resuming" ? "resuming" : "queued"];
    else if (job.status === "running") {
      const cur = Array.isArray(p.current) ? p.current : [];
      phase = cur.length ? `Copying ${cur.join(", ")}` : (PHASES[p.phase] || "Working…");
      // The server asked us to slow down (policy/retry.py): say until when.
      if (p.throttled_until && p.throttled_until * 1000 > Date.now()) {
        const until = new Date(p.throttled_until * 1000);
        const hhmm = until.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
        phase += ` — throttled by the server until ${hhmm}`;
      }
    }
    setText("[data-phase]", phase);
    const running = job.status === "running";
    setText("[data-stat=messages]", `${num(p.messages_done)} of ${num(p.messages_total)}`);
    setText("[data-stat=bytes]", `${size(p.bytes_done || 0)} of ${size(p.bytes_total || 0)}`);
    setText("[data-stat=folders]", `${p.folders_done || 0} of ${p.folders_total || 0}`);
    setText("[data-stat=rate]", running ? rate(p.rate) : "–");
    setText("[data-stat=eta]", running && p.eta_range ? etaRange(p.eta_range) : "–");
    setText("[data-stat=failed]", String(p.failed || 0));
    $("[data-stat=failed]").classList.toggle("text-error", !!p.failed);
    const err = $("[data-job-error]");
    err.hidden = !job.error || terminal;  // when it has ended, the outcome says it
    if (job.error) err.textContent = job.error;
    for (const [what, ts] of [["started", job.started], ["finished", job.finished]]) {
      const box = $(`[data-${what}]`);
      box.hidden = !ts;
      if (!ts) continue;
      $(`[data-${what}-time]`).setAttribute("datetime", new Date(ts * 1000).toISOString());
      window.yippiemoveLocalTimes && window.yippiemoveLocalTimes(box);
    }
    setText("[data-took]", job.started && job.finished ? ` · took ${duration(job.finished - job.started)}` : "");
    const empty = $("[data-graph-empty]");
    if (empty && terminal) empty.textContent = "No rate was recorded for this transfer.";
    drawGraph(p.rate_history);
    updateFolders(p.per_folder);
    updateFailures(p.failures);
  }

  // -- when it ends: the report, from the server ------------------------------------------
  async function loadSummary(id, attempt) {
    try {
      const r = await fetch(`/transfers/${encodeURIComponent(id)}/summary`, { credentials: "same-origin" });
      if (!r.ok) throw new Error(String(r.status));
      const html = await r.text();
      const box = $("[data-summary]");
      box.innerHTML = html;
      window.yippiemoveLocalTimes && window.yippiemoveLocalTimes(box);
      // The report lists the failed messages: the live list would say it twice.
      if (box.querySelector("table.failures")) $("[data-failures-card]").hidden = true;
      const sec = box.querySelector("[data-ready]");
      if (sec && sec.dataset.ready === "0" && attempt < 20) {
        setTimeout(() => loadSummary(id, attempt + 1), 1000 + attempt * 500);
      }
    } catch (e) {
      if (attempt < 20) setTimeout(() => loadSummary(id, attempt + 1), 2000);
    }
  }

  function follow(id) {
    const live = $("[data-live]");
    const es = new EventSource(`/transfers/${encodeURIComponent(id)}/events`);
    es.addEventListener("progress", (ev) => {
      live.classList.remove("stale");
      live.textContent = "live";
      try { update(JSON.parse(ev.data)); } catch (e) { /* a bad frame: wait for the next */ }
    });
    es.addEventListener("end", () => {
      es.close();
      loadSummary(id, 0).then(watchSchedule);
    });
    es.addEventListener("gone", () => { es.close(); window.location.reload(); });
    // The server ends long streams now and then: open a new one at once, quietly.
    es.addEventListener("reconnect", () => { es.close(); follow(id); });
    es.onerror = () => {
      // EventSource reconnects by itself; say so meanwhile.
      live.classList.add("stale");
      live.textContent = "reconnecting";
    };
  }

  // -- a staged move (issue 17): reload when its next pass is due --------------------------
  let scheduleTimer = null;
  function watchSchedule() {
    const card = $("[data-staged]");
    const root = $("#job");
    clearTimeout(scheduleTimer);
    if (!card || !card.dataset.stagedNext || !root) return;
    if (!TERMINAL.has(root.dataset.status)) return;  // a pass runs: its end reloads the summary
    const wait = parseFloat(card.dataset.stagedNext) * 1000 - Date.now() + 1500;
    scheduleTimer = setTimeout(() => window.location.reload(), Math.min(Math.max(wait, 3000), 600000));
  }

  document.addEventListener("DOMContentLoaded", () => {
    const data = $("#job-data");
    const root = $("#job");
    if (!data || !root) return;
    let job;
    try { job = JSON.parse(data.textContent); } catch (e) { return; }
    update(job);
    if (!TERMINAL.has(job.status)) follow(job.id);
    else watchSchedule();
  });
})();
