// The console pane: the bus's messages both ways, newest last, with a filter by type, pause
// and clear.

import { $, el } from "./dom.js";
import { button, field, input } from "./sysop-widgets.js";

const CONSOLE_LINES = 500;
const CUT = 300; // longest JSON shown per message, and longest string kept whole
const MEDIA_FIELDS = new Set(["image", "audio", "chunk_data"]);

const view = {};
let log = []; // the last CONSOLE_LINES messages, shown or not
let paused = false;
let filter = "";

export function buildConsole(pane) {
  const filterField = field("Filter by type", input("sysop-console-filter", { type: "search", placeholder: "e.g. worker" }));
  filterField.control.addEventListener("input", () => {
    filter = filterField.control.value.trim().toLowerCase();
    renderConsole();
  });
  view.pause = button("Pause", () => {
    paused = !paused;
    view.pause.textContent = paused ? "Resume" : "Pause";
    view.pause.setAttribute("aria-pressed", String(paused));
    if (paused) updateConsoleCount();
    else renderConsole(); // catch up with what came while paused
  }, { kind: "secondary" });
  view.pause.setAttribute("aria-pressed", "false");
  const clear = button("Clear", clearConsole, { kind: "secondary" });
  view.consoleCount = el("p", { class: "hint" });
  // Not role=log: a screen reader would read every ping aloud. It can be scrolled by keyboard.
  view.console = el("ol", { class: "console", attrs: { tabindex: 0, "aria-label": "Bus messages, newest last" } });
  pane.append(
    el("h3", { text: "Console" }),
    el("div", { class: "console-controls" }, filterField.wrap, view.pause, clear),
    view.consoleCount,
    view.console);
}

/** The Clear button, and the stop: the next person at this page may not be a sysop. */
export function clearConsole() {
  log = [];
  renderConsole();
}

/** A message as one line of JSON, with media and long text cut so a line stays short. */
function compact(message) {
  const { type: _type, ...rest } = message;
  const json = JSON.stringify(rest, (key, value) => {
    if (typeof value !== "string") return value;
    if (MEDIA_FIELDS.has(key) || value.length > CUT) return `${value.slice(0, 16)}…(${value.length} chars)`;
    return value;
  });
  return json.length > CUT ? `${json.slice(0, CUT)}…` : json;
}

/** Every message on the bus, in (`direction` "in") or out. */
export function logMessage(message, direction) {
  const type = typeof message.type === "string" ? message.type : "?";
  const time = new Date().toTimeString().slice(0, 8);
  const entry = { type, direction, text: `${time} ${direction === "out" ? "→" : "←"} ${type} ${compact(message)}` };
  log.push(entry);
  if (log.length > CONSOLE_LINES) log.shift();
  if (paused || !view.console || $("pane-console").hidden) return; // drawn when shown
  appendLine(entry);
}

function shown(entry) {
  return !filter || entry.type.toLowerCase().includes(filter);
}

function line(entry) {
  return el("li", { class: entry.direction === "out" ? "out" : "in", text: entry.text });
}

function atBottom(box) {
  return box.scrollHeight - box.scrollTop - box.clientHeight < 24;
}

function appendLine(entry) {
  const box = view.console;
  const follow = atBottom(box);
  if (shown(entry)) box.append(line(entry));
  while (box.childElementCount > CONSOLE_LINES) box.firstElementChild.remove();
  updateConsoleCount();
  if (follow) box.scrollTop = box.scrollHeight; // stay at the newest, unless reading back
}

export function renderConsole() {
  if (!view.console) return;
  view.console.replaceChildren(...log.filter(shown).map(line));
  updateConsoleCount();
  view.console.scrollTop = view.console.scrollHeight;
}

function updateConsoleCount() {
  const visible = view.console.childElementCount;
  view.consoleCount.textContent = `${visible} of the last ${log.length} messages shown${paused ? " (paused)" : ""}.`;
}
