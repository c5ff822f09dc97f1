"""Does a page fit a phone?  One call per page in a browser test (issue 17).

    from tests.web.phone import assert_fits_phone, assert_fits_both

    page.goto(base + "/transfers")
    assert_fits_phone(page, "transfers")   # 390 x 844: asserts, keeps transfers-390.png
    assert_fits_both(page, "transfers")    # the same at 1280 x 900 and at 390 x 844

What is asserted, at the width the page is shown at (docs/web.md, "Phone widths"):

- nothing sideways: ``document.documentElement.scrollWidth <= window.innerWidth``;
- no visible element reaches past the window's left or right edge;
- no text clipped: no element with text whose content is wider than its box while its
  overflow hides the rest (``overflow: hidden/clip/auto/scroll``, which includes
  ``text-overflow: ellipsis`` and sideways-scrolling boxes such as a table wrapper).
- no plain word (letters only, up to 14 of them) broken over two lines: its box is too
  narrow (``overflow-wrap: anywhere`` in a squeezed column, a flex row that cut a sentence
  into columns); long addresses, tokens and folder names may break.
- no text drawn over other text (an absolutely placed badge over a name, a negative
  margin, a fixed height that lines spill out of).
  Form fields (their value scrolls inside them) and screen-reader-only text (1 px boxes)
  are not text a reader sees clipped.

A failure lists every offender as ``tag.class "text..." (why)``.  The screenshot
(full page) is kept either way, as ``NAME-WIDTH.png`` under ``YIPPIEMOVE_SCREENSHOTS``
when set, else under ``$TMPDIR/yippiemove-screenshots``; the path is returned.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from playwright.sync_api import Page

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}

# One pass over the document in the page; returns what does not fit, in words.
_PROBLEMS_JS = """
() => {
  window.scrollTo(0, 0);  // a sticky bar lies over the content only once scrolled
  const vw = window.innerWidth;
  // Not drawn: display none, visibility hidden, opacity 0, a closed <details>' content.
  const unseen = (el) => el.checkVisibility
    ? !el.checkVisibility({ opacityProperty: true, visibilityProperty: true,
                            contentVisibilityAuto: true })
    : false;
  const out = [];
  const doc = document.documentElement.scrollWidth;
  if (doc > vw) out.push(`the page is ${doc - vw} px wider than the window (${vw} px)`);
  const skip = new Set(["INPUT", "SELECT", "TEXTAREA", "OPTION", "SCRIPT", "STYLE",
                        "HEAD", "TITLE", "META", "LINK", "BR", "svg"]);
  const name = (el) => {
    const cls = typeof el.className === "string" && el.className.trim()
      ? "." + el.className.trim().split(/\\s+/).join(".") : "";
    const text = (el.innerText || el.textContent || "").trim().replace(/\\s+/g, " ");
    return `${el.tagName.toLowerCase()}${cls} "${text.slice(0, 60)}"`;
  };
  const flagged = [];  // the outermost offenders only, not each of their descendants
  const inFlagged = (el) => flagged.some((f) => f.contains(el));
  for (const el of document.body.querySelectorAll("*")) {
    if (skip.has(el.tagName) || el.closest("svg") || inFlagged(el)) continue;
    const rects = el.getClientRects();
    if (!rects.length) continue;  // not rendered (display: none, hidden)
    const st = getComputedStyle(el);
    if (st.visibility === "hidden" || st.opacity === "0" || unseen(el)) continue;
    const r = el.getBoundingClientRect();
    if (r.width <= 1 || r.height <= 1) continue;  // screen-reader-only text
    if (st.position === "fixed") continue;
    const x = window.scrollX;
    if (r.right + x > vw + 1 || r.left + x < -1) {
      out.push(`${name(el)} (reaches ${Math.round(r.left + x)}..${Math.round(r.right + x)} px`
               + ` of a ${vw} px window)`);
      flagged.push(el);
      continue;
    }
    const hides = ["hidden", "clip", "auto", "scroll"].includes(st.overflowX);
    const text = (el.innerText || "").trim();
    if (hides && text && el.scrollWidth > el.clientWidth + 1) {
      const how = st.textOverflow === "ellipsis" ? "cut off with an ellipsis"
        : st.overflowX === "auto" || st.overflowX === "scroll" ? "in a sideways-scrolling box"
        : "clipped";
      out.push(`${name(el)} (${el.scrollWidth - el.clientWidth} px ${how})`);
      flagged.push(el);
    }
  }
  // Text drawn over other text (one hides the other): each line of each text node.
  const tiny = (el) => {
    for (let a = el, k = 0; a && k < 4; a = a.parentElement, k++) {
      const r = a.getBoundingClientRect();
      if (r.width <= 1 || r.height <= 1) return true;  // screen-reader-only text
    }
    return false;
  };
  const shown = (el, r) => {  // not scrolled or clipped out of sight by a box around it
    for (let a = el; a && a !== document.body; a = a.parentElement) {
      if (getComputedStyle(a).overflowY === "visible") continue;
      const b = a.getBoundingClientRect();
      if (r.bottom <= b.top || r.top >= b.bottom || r.right <= b.left || r.left >= b.right) {
        return false;
      }
    }
    return true;
  };
  const lines = [];
  const broken = new Set();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!el || !n.textContent.trim() || skip.has(el.tagName) || el.closest("svg")) continue;
    if (inFlagged(el) || tiny(el) || unseen(el)) continue;
    const range = document.createRange();
    range.selectNodeContents(n);
    const rects = range.getClientRects();
    for (const r of rects) {
      if (r.width > 2 && r.height > 2 && shown(el, r)) lines.push({ r, el, n });
    }
    if (rects.length < 2 || broken.has(el)) continue;
    // A plain word (letters only, up to 14) split over two lines: its box is too narrow.
    for (const m of n.textContent.matchAll(/[^\\s]+/g)) {
      const word = m[0].replace(/^[^\\p{L}]+|[^\\p{L}]+$/gu, "");
      if (!/^\\p{L}{2,14}$/u.test(word)) continue;
      const at = m.index + m[0].indexOf(word);
      const w = document.createRange();
      w.setStart(n, at);
      w.setEnd(n, at + word.length);
      const tops = new Set([...w.getClientRects()].filter((r) => r.width > 0)
        .map((r) => Math.round(r.top)));
      if (tops.size > 1) {
        broken.add(el);
        out.push(`${name(el)} (the word "${word}" broken over ${tops.size} lines)`);
        break;
      }
    }
  }
  lines.sort((a, b) => a.r.top - b.r.top);
  const told = new Set();
  for (let i = 0; i < lines.length; i++) {
    const a = lines[i];
    for (let j = i + 1; j < lines.length && lines[j].r.top < a.r.bottom; j++) {
      const b = lines[j];
      if (a.n === b.n) continue;
      const w = Math.min(a.r.right, b.r.right) - Math.max(a.r.left, b.r.left);
      const h = Math.min(a.r.bottom, b.r.bottom) - Math.max(a.r.top, b.r.top);
      if (w > 3 && h > 0.4 * Math.min(a.r.height, b.r.height) && !told.has(a.el)) {
        told.add(a.el);
        out.push(`${name(a.el)} (text drawn over ${name(b.el)})`);
      }
    }
  }
  return out;
}
"""


def screenshot_dir() -> Path:
    out = Path(
        os.environ.get("YIPPIEMOVE_SCREENSHOTS")
        or Path(tempfile.gettempdir()) / "yippiemove-screenshots"
    )
    out.mkdir(parents=True, exist_ok=True)
    return out


def problems(page: Page) -> list[str]:
    """What does not fit the page's current window, in words (empty: it fits)."""
    found: list[str] = page.evaluate(_PROBLEMS_JS)
    return found


def assert_fits(page: Page, name: str) -> Path:
    """Assert the page fits its current window; keep a screenshot ``NAME-WIDTH.png``."""
    width = page.viewport_size["width"] if page.viewport_size else 0
    page.evaluate("document.fonts.ready")  # laid out with its final fonts
    path = screenshot_dir() / f"{name}-{width}.png"
    page.screenshot(path=str(path), full_page=True)
    found = problems(page)
    assert not found, f"{page.url} at {width} px ({path}):\n  " + "\n  ".join(found)
    return path


def assert_fits_phone(page: Page, name: str) -> Path:
    """Show the page at 390 x 844 (it stays so) and :func:`assert_fits`."""
    if page.viewport_size != PHONE:
        page.set_viewport_size(PHONE)
    return assert_fits(page, name)


def assert_fits_both(page: Page, name: str) -> list[Path]:
    """:func:`assert_fits` at 1280 x 900, then at 390 x 844; the window is put back after."""
    before = page.viewport_size
    try:
        page.set_viewport_size(DESKTOP)
        shots = [assert_fits(page, name)]
        page.set_viewport_size(PHONE)
        shots.append(assert_fits(page, name))
    finally:
        if before:
            page.set_viewport_size(before)
    return shots
