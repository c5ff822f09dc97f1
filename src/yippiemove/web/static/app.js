// yippiemove: small enhancements for every page. The pages work without it.
"use strict";

(function () {
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  // Times: shown in the reader's own time zone.
  function localTimes(root) {
    $$("time[datetime]", root).forEach((el) => {
      const iso = el.getAttribute("datetime");
      if (!iso) return;
      const d = new Date(iso);
      if (isNaN(d)) return;
      el.textContent = d.toLocaleString(undefined, {
        year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
      });
      el.title = d.toString();
    });
  }
  window.yippiemoveLocalTimes = localTimes;

  // Forms that ask first.
  function confirmForms() {
    $$("form[data-confirm]").forEach((form) => {
      form.addEventListener("submit", (ev) => {
        if (!window.confirm(form.dataset.confirm)) ev.preventDefault();
      });
    });
  }

  // The printable receipt's "Print" button (no inline scripts: CSP).
  function printButtons() {
    $$("[data-print]").forEach((b) => b.addEventListener("click", () => window.print()));
  }

  // Forms that take a while (account checks): one submission, and say what is going on.
  function busyForms() {
    $$("form[data-busy-form]").forEach((form) => {
      form.addEventListener("submit", (ev) => {
        if (ev.defaultPrevented) return;
        if (form.dataset.sent) { ev.preventDefault(); return; }
        form.dataset.sent = "1";
        const btn = ev.submitter;
        if (btn && btn.dataset.busyText) {
          btn.classList.add("busy");
          btn.textContent = btn.dataset.busyText;
        }
      });
    });
    // Back/forward cache: a page restored from history must be usable again.
    window.addEventListener("pageshow", (ev) => {
      if (ev.persisted) $$("form[data-busy-form]").forEach((f) => delete f.dataset.sent);
    });
  }

  // Provider cards: show the server fields for "other", and the provider's hint.
  function providers() {
    $$("[data-providers]").forEach((fs) => {
      const role = fs.dataset.providers;
      const server = document.querySelector(`[data-server-for="${role}"]`);
      const hint = document.querySelector(`[data-hint-for="${role}"]`);
      const update = (focus) => {
        const checked = fs.querySelector("input[type=radio]:checked");
        const value = checked ? checked.value : "";
        if (server) {
          server.hidden = value !== "other";
          if (focus && value === "other") {
            const host = server.querySelector("input[type=text]");
            if (host) host.focus();
          }
        }
        if (hint) {
          const text = checked ? checked.dataset.hint : "";
          hint.textContent = text || "";
          hint.hidden = !text;
        }
        if (focus && value && value !== "other") {
          const user = document.querySelector(`input[name="${role}_username"]`);
          if (user && !user.value) user.focus();
        }
      };
      fs.addEventListener("change", () => update(true));
      update(false);
    });
    // The usual port follows the encryption, unless someone typed their own.
    $$("select[data-security-for]").forEach((sel) => {
      const port = document.querySelector(`[data-port-for="${sel.dataset.securityFor}"]`);
      if (!port) return;
      const usual = { tls: "993", starttls: "143", none: "143" };
      sel.addEventListener("change", () => {
        if (!port.value || Object.values(usual).includes(port.value)) port.value = usual[sel.value] || "";
      });
    });
  }

  function fmtSize(n) {
    let v = Number(n) || 0;
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    if (i === 0) return `${Math.round(v)} B`;
    return `${Math.abs(v) < 100 ? v.toFixed(1) : v.toFixed(0)} ${units[i]}`;
  }
  window.yippiemoveSize = fmtSize;

  // Folder step: select all / none / default, and the running total.
  function folderSelection() {
    const boxes = $$("input[type=checkbox][name=folder]");
    const total = document.querySelector("[data-selection-total]");
    if (!boxes.length) return;
    const refresh = () => {
      let n = 0, msgs = 0, bytes = 0;
      boxes.forEach((b) => {
        b.closest("tr").classList.toggle("unselected", !b.checked);
        if (!b.checked) return;
        n++; msgs += Number(b.dataset.messages) || 0; bytes += Number(b.dataset.bytes) || 0;
      });
      if (total) {
        total.innerHTML = "";
        const parts = [[String(n), ` of ${boxes.length} folders · `], [msgs.toLocaleString("en-US"), " messages · "], [fmtSize(bytes), ""]];
        parts.forEach(([strong, rest]) => {
          const b = document.createElement("b"); b.textContent = strong; total.appendChild(b);
          total.appendChild(document.createTextNode(rest));
        });
      }
    };
    boxes.forEach((b) => b.addEventListener("change", refresh));
    $$("[data-select]").forEach((btn) => {
      btn.addEventListener("click", () => {
        const how = btn.dataset.select;
        boxes.forEach((b) => { b.checked = how === "all" ? true : how === "none" ? false : b.dataset.default === "1"; });
        refresh();
      });
    });
    refresh();
  }

  // Copy buttons (the new API token).
  function copyButtons() {
    $$("[data-copy]").forEach((btn) => {
      btn.addEventListener("click", async () => {
        const el = document.querySelector(btn.dataset.copy);
        if (!el) return;
        const text = el.textContent.trim();
        try {
          await navigator.clipboard.writeText(text);
        } catch (e) {
          const range = document.createRange(); range.selectNodeContents(el);
          const s = window.getSelection(); s.removeAllRanges(); s.addRange(range);
          document.execCommand && document.execCommand("copy");
        }
        btn.textContent = "Copied ✓";
        setTimeout(() => { btn.textContent = "Copy"; }, 2000);
      });
    });
  }

  // Batch upload: say at once when a file is too big, instead of after the upload.
  function fileLimits() {
    $$("input[type=file][data-max-bytes]").forEach((input) => {
      const warn = document.querySelector("[data-file-too-big]");
      const max = Number(input.dataset.maxBytes);
      input.addEventListener("change", () => {
        const f = input.files && input.files[0];
        const tooBig = !!(f && f.size > max);
        if (warn) warn.hidden = !tooBig;
        input.setCustomValidity(tooBig ? warn.textContent : "");
      });
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    localTimes(document);
    confirmForms();
    busyForms();
    providers();
    folderSelection();
    copyButtons();
    fileLimits();
    printButtons();
  });
})();
