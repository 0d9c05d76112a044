// Small builders shared by the sysop panes: labelled fields, buttons, status lines, and
// tables that keep their rows (and the focus in them) across refreshes.

import { el, option } from "./dom.js";

let fieldCount = 0;

/** A labelled control: `{wrap, control}`; the label's `for` points at the control. */
export function field(label, control) {
  if (!control.id) control.id = `sysop-field-${++fieldCount}`;
  return { wrap: el("div", { class: "field" }, el("label", { text: label, attrs: { for: control.id } }), control), control };
}

export function input(id, attrs = {}) {
  return el("input", { attrs: { id, name: id, autocomplete: "off", ...attrs } });
}

export function select(id, values) {
  return el("select", { attrs: { id, name: id } }, ...values.map((v) => option(v, v)));
}

export function button(text, onClick, { kind = "", label, focus } = {}) {
  return el("button", {
    class: `small ${kind}`.trim(), text,
    attrs: { type: "button", "aria-label": label }, dataset: focus ? { focus } : {}, on: { click: onClick },
  });
}

/** Where a pane says how a command went: read out politely, never stealing focus. */
export function statusLine() {
  return el("p", { class: "sysop-status", attrs: { role: "status", "aria-live": "polite" } });
}

export function say(node, text, ok) {
  node.textContent = text;
  node.classList.toggle("ok", ok);
  node.classList.toggle("error", !ok);
}

/** A table inside a horizontally scrolling box, so a wide table never widens a phone page. */
export function scrollTable(caption, headers, tbody) {
  return el("div", { class: "table-scroll" },
    el("table", { class: "sysop-table" },
      el("caption", { class: "visually-hidden", text: caption }),
      el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { attrs: { scope: "col" }, text: h })))),
      tbody));
}

/**
 * Fill `tbody` with one row per item, rebuilding a row only when what it shows changed: a
 * refresh every 10 s must not steal focus from a button or close an open select.
 * `key(item)` names the row; `build(item)` makes it from the item.
 */
export function syncRows(tbody, items, key, build) {
  const old = new Map([...tbody.children].map((tr) => [tr.dataset.key, tr]));
  items.forEach((item, i) => {
    const name = key(item);
    const sig = JSON.stringify(item);
    let row = old.get(name);
    old.delete(name);
    if (!row || row.dataset.sig !== sig) {
      const fresh = build(item);
      fresh.dataset.key = name;
      fresh.dataset.sig = sig;
      const focused = row && row.contains(document.activeElement) ? document.activeElement.dataset.focus : null;
      if (row) row.replaceWith(fresh);
      row = fresh;
      if (focused) row.querySelector(`[data-focus="${focused}"]`)?.focus();
    }
    if (tbody.children[i] !== row) tbody.insertBefore(row, tbody.children[i] || null);
  });
  for (const row of old.values()) row.remove();
}

export function cell(text, className) {
  return el("td", { text: text === "" || text === null || text === undefined ? "—" : text, class: className });
}
