// The sysop panel (SPEC §8): workers with live health, pools and realms, models, users with
// ban/unban and roles, running queries with terminate, statistics with charts, a broadcast
// and a console of the bus. Showing it is cosmetic: the broker checks every sysop command.
//
// Everything shown comes from workers, users and models, so it is untrusted: it goes into the
// page as textContent only (the `el` helper), never as HTML.

import { $, el, option, seconds, dollars, when } from "./dom.js";
import { chart } from "./chart.js";

const STATS_EVERY = 10_000; // ms between get_stats while the panel is open
const REPLY_TIMEOUT = 30_000; // a command's reply lost to a reconnect must not hang a form
const CONSOLE_LINES = 500;
const CUT = 300; // console: longest JSON shown per message, and longest string kept whole
const KINDS = ["rentahal", "ollama", "openai", "a1111", "claude", "huggingface"];
const TYPES = ["chat", "vision", "imagine", "speech", "tts", "stt"];
const STRATEGIES = ["auto", "health", "round_robin", "least_busy", "random", "fastest", "power_of_two"];
const ROLES = ["user", "premium", "sysop"];
const MEDIA_FIELDS = new Set(["image", "audio", "chunk_data"]);

const state = {
  bus: null, ui: null, active: false, built: false, timer: null, soon: null,
  workers: [], pools: [], realms: [], realmTypes: {}, realmViews: null, queueByRealm: {},
  models: [], users: [], online: new Set(), running: [], stats: null, timeline: null,
  chartBy: "type", chartKey: "",
  log: [], paused: false, filter: "",
};
const view = {}; // the nodes each pane's renderer fills in

// --- starting and stopping ---------------------------------------------------------------

/** Show the panel for a sysop: build it once, listen to the bus, and keep the numbers fresh. */
export function startSysop(bus, ui) {
  state.ui = ui;
  if (state.bus !== bus) {
    subscribe(bus); // Bus has no `off`: handlers stay, and do nothing unless this bus is live
    state.bus = bus;
  }
  if (!state.built) {
    buildPanel();
    state.built = true;
  }
  if (state.active) return;
  state.active = true;
  $("sysop-panel").hidden = false;
  refresh();
  loadPools();
  loadRealms();
  state.timer = setInterval(tick, STATS_EVERY);
}

/** Hide the panel and forget what it showed: the next person at this page may not be a sysop. */
export function stopSysop() {
  state.active = false;
  clearInterval(state.timer);
  clearTimeout(state.soon);
  state.timer = state.soon = null;
  const panel = $("sysop-panel");
  if (panel) panel.hidden = true;
  Object.assign(state, { users: [], online: new Set(), running: [], log: [], stats: null, timeline: null, chartKey: "" });
  if (state.built) {
    renderUsers();
    renderRunning();
    renderConsole();
    for (const line of document.querySelectorAll("#sysop-panel .sysop-status")) say(line, "", true);
  }
}

function tick() {
  if (state.bus.state !== "connected") return; // the bus would only queue them up
  refresh();
  if (!$("pane-routing").hidden) loadRealms(); // queue depths move
}

/** Ask for users, worker health, active users, running queries and statistics. */
function refresh() {
  state.bus.send({ type: "get_stats" });
}

/** A refresh at most once a second, for bursts of queue changes. */
function refreshSoon() {
  if (state.soon) return;
  state.soon = setTimeout(() => {
    state.soon = null;
    if (state.active) refresh();
  }, 1000);
}

function subscribe(bus) {
  const handlers = {
    worker_update: (m) => setWorkers(m.workers),
    worker_health: (m) => setWorkers(m.data),
    pool_update: setPools,
    huggingface_update: (m) => { state.models = m.models || []; renderModels(); },
    user_stats: (m) => { state.users = m.data || []; renderUsers(); },
    active_users: (m) => { state.online = new Set(m.users || []); renderUsers(); },
    user_banned: (m) => setBanned(m.guid, true),
    user_unbanned: (m) => setBanned(m.guid, false),
    running_queries: (m) => { state.running = m.data || []; renderRunning(); },
    query_terminated: () => refreshSoon(),
    system_stats: (m) => { state.stats = m.data; renderStats(); },
    stats_timeline: (m) => { state.timeline = m.data; renderCharts(); },
    queue_update: (m) => {
      state.queueByRealm = m.realms || {};
      renderRealms();
      if (!$("pane-running").hidden) refreshSoon(); // a query started or finished
    },
  };
  const live = (handler) => (...args) => {
    if (state.active && state.bus === bus) handler(...args);
  };
  for (const [type, handler] of Object.entries(handlers)) bus.on(type, live(handler));
  bus.on("*", live(logMessage));
}

// --- small builders shared by the panes --------------------------------------------------

let fieldCount = 0;

/** A labelled control: `{wrap, control}`; the label's `for` points at the control. */
function field(label, control) {
  if (!control.id) control.id = `sysop-field-${++fieldCount}`;
  return { wrap: el("div", { class: "field" }, el("label", { text: label, attrs: { for: control.id } }), control), control };
}

function input(id, attrs = {}) {
  return el("input", { attrs: { id, name: id, autocomplete: "off", ...attrs } });
}

function select(id, values) {
  return el("select", { attrs: { id, name: id } }, ...values.map((v) => option(v, v)));
}

function button(text, onClick, { kind = "", label, focus } = {}) {
  return el("button", {
    class: `small ${kind}`.trim(), text,
    attrs: { type: "button", "aria-label": label }, dataset: focus ? { focus } : {}, on: { click: onClick },
  });
}

/** Where a pane says how a command went: read out politely, never stealing focus. */
function statusLine() {
  return el("p", { class: "sysop-status", attrs: { role: "status", "aria-live": "polite" } });
}

function say(node, text, ok) {
  node.textContent = text;
  node.classList.toggle("ok", ok);
  node.classList.toggle("error", !ok);
}

/** A table inside a horizontally scrolling box, so a wide table never widens a phone page. */
function scrollTable(caption, headers, tbody) {
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
function syncRows(tbody, items, key, build) {
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

function cell(text, className) {
  return el("td", { text: text === "" || text === null || text === undefined ? "—" : text, class: className });
}

/** Send a sysop command and say how it went; a success refreshes the numbers. */
async function act(message, status) {
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve({ type: "error", message: "No answer from the broker; try again." }), REPLY_TIMEOUT);
  });
  const reply = await Promise.race([state.bus.request(message), timeout]);
  clearTimeout(timer);
  const ok = reply.type !== "error";
  say(status, ok ? reply.message || "Done." : reply.message || "Refused.", ok);
  if (ok) refresh();
  return ok;
}

/** Run a form's command with its controls disabled, so a double click sends it once. */
async function submitting(form, message, status) {
  const controls = [...form.elements];
  for (const control of controls) control.disabled = true;
  try {
    return await act(message, status);
  } finally {
    for (const control of controls) control.disabled = false;
  }
}

async function confirmed(text) {
  return state.ui && state.ui.confirm ? state.ui.confirm(text) : false;
}

const me = () => (state.ui && state.ui.me ? state.ui.me() : null);

// --- the panel and its tabs --------------------------------------------------------------

function buildPanel() {
  buildWorkers($("pane-workers"));
  buildRouting($("pane-routing"));
  buildModels($("pane-models"));
  buildUsers($("pane-users"));
  buildRunning($("pane-running"));
  buildStats($("pane-stats"));
  buildBroadcast($("pane-broadcast"));
  buildConsole($("pane-console"));
  wireTabs();
  // Charts are drawn for the width they get: draw them again when that changes.
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => renderCharts(), 200);
  });
}

function tabs() {
  return [...$("sysop-tabs").querySelectorAll('[role="tab"]')];
}

/** The ARIA tabs pattern: arrows, Home and End move focus and select at once. */
function wireTabs() {
  const list = $("sysop-tabs");
  for (const tab of tabs()) tab.addEventListener("click", () => selectTab(tab));
  list.addEventListener("keydown", (event) => {
    const all = tabs();
    const at = all.indexOf(document.activeElement);
    if (at < 0) return;
    const to = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: all.length - 1 }[event.key];
    if (to === undefined) return;
    event.preventDefault();
    const tab = all[(to + all.length) % all.length];
    selectTab(tab);
    tab.focus();
  });
}

function selectTab(chosen) {
  for (const tab of tabs()) {
    const selected = tab === chosen;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    $(tab.getAttribute("aria-controls")).hidden = !selected;
  }
  // Opening a view shows it fresh rather than up to 10 s old.
  const pane = chosen.getAttribute("aria-controls");
  if (["pane-users", "pane-running", "pane-stats", "pane-workers"].includes(pane)) refresh();
  if (pane === "pane-routing") loadRealms();
  if (pane === "pane-stats") renderCharts();
  if (pane === "pane-console") renderConsole();
}

// --- workers -----------------------------------------------------------------------------

function buildWorkers(pane) {
  view.workerStatus = statusLine();
  view.workerRows = el("tbody");
  view.workerEmpty = el("p", { class: "empty", text: "No workers yet: add one below." });
  pane.append(
    el("h3", { text: "Workers" }),
    view.workerStatus,
    scrollTable("Workers and their health",
      ["Name", "Realm", "Kind", "Type", "Models", "Address", "Health", "Circuit", "Status", "Load", "Last active", "Actions"],
      view.workerRows),
    view.workerEmpty,
    workerForm(),
  );
}

function workerForm() {
  const name = field("Name", input("sysop-worker-name", { required: true, maxlength: 64, placeholder: "gpu-1" }));
  const address = field("Address", input("sysop-worker-address", { required: true, maxlength: 512, placeholder: "host:port or https://…" }));
  const kind = field("Kind", select("sysop-worker-kind", KINDS));
  const type = field("Type", select("sysop-worker-type", TYPES));
  const models = field("Models (comma separated, optional)", input("sysop-worker-models", { maxlength: 4000 }));
  const realm = field("Realm (optional)", select("sysop-worker-realm", []));
  const concurrency = field("Queries at once", input("sysop-worker-concurrency", { type: "number", min: 1, max: 1024, value: 4 }));
  view.workerRealm = realm.control;
  view.addWorkerStatus = statusLine();
  fillRealmSelect();
  const form = el("form", { class: "sysop-form", attrs: { "aria-labelledby": "sysop-add-worker" } },
    el("h3", { text: "Add a worker", attrs: { id: "sysop-add-worker" } }),
    el("div", { class: "grid" }, name.wrap, address.wrap, kind.wrap, type.wrap, models.wrap, realm.wrap, concurrency.wrap),
    el("div", { class: "buttons" }, el("button", { text: "Add worker", attrs: { type: "submit" } })),
    view.addWorkerStatus);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const worker = {
      name: name.control.value.trim(),
      address: address.control.value.trim(),
      kind: kind.control.value,
      type: type.control.value,
      models: models.control.value.split(",").map((m) => m.trim()).filter(Boolean),
      max_concurrency: Number(concurrency.control.value) || 4,
    };
    if (realm.control.value) worker.realm = realm.control.value;
    if (await submitting(form, { type: "add_worker", worker }, view.addWorkerStatus)) {
      form.reset();
      name.control.focus();
    }
  });
  return form;
}

/** The seed's colours: blacklisted black, under 50 red, under 80 yellow, else green. */
function healthClass(worker) {
  if (worker.is_blacklisted) return "down";
  if (worker.health_score < 50) return "bad";
  if (worker.health_score < 80) return "warn";
  return "good";
}

function healthBar(score) {
  const rounded = Math.round(score);
  const meter = el("meter", { attrs: { min: 0, max: 100, low: 50, high: 80, optimum: 100, "aria-label": "Health" } });
  meter.value = score;
  return el("span", { class: "health" }, meter, el("span", { class: "health-number", text: rounded }));
}

function workerRow(worker) {
  const types = [worker.type, ...worker.capabilities.filter((c) => c !== worker.type)].join(", ");
  return el("tr", { class: `health-${healthClass(worker)}`, dataset: { worker: worker.name } },
    el("th", { attrs: { scope: "row" }, text: worker.name }),
    cell(worker.realm),
    cell(worker.kind),
    cell(types),
    cell(worker.models.join(", "), "wrap"),
    cell(worker.address, "wrap"),
    el("td", {}, healthBar(worker.health_score)),
    cell(worker.circuit),
    cell(worker.is_blacklisted ? "down" : "up", "state"),
    cell(`${worker.in_flight}/${worker.max_concurrency}`),
    cell(worker.last_active ? when(worker.last_active) : "never"),
    el("td", {}, button("Remove", () => removeWorker(worker.name), {
      kind: "danger", label: `Remove worker ${worker.name}`, focus: "remove",
    })),
  );
}

async function removeWorker(name) {
  if (!(await confirmed(`Remove worker ${name}? Queries running on it are retried elsewhere.`))) return;
  await act({ type: "remove_worker", worker_name: name }, view.workerStatus);
}

function setWorkers(workers) {
  state.workers = workers || [];
  renderWorkers();
  renderWorkerModels();
  renderPoolMembers();
}

function renderWorkers() {
  // A row is rebuilt whenever its health check moves `last_active`; syncRows keeps the
  // focus on its Remove button when that happens.
  syncRows(view.workerRows, state.workers, (w) => w.name, workerRow);
  view.workerEmpty.hidden = state.workers.length > 0;
}

// --- pools and realms --------------------------------------------------------------------

function buildRouting(pane) {
  view.poolStatus = statusLine();
  view.poolRows = el("tbody");
  view.poolEmpty = el("p", { class: "empty", text: "No pools yet." });
  view.realmRows = el("tbody");
  view.realmNote = el("p", { class: "hint" });
  pane.append(
    el("h3", { text: "Pools" }),
    view.poolStatus,
    scrollTable("Pools", ["Pool", "Type", "Strategy", "Members", "Actions"], view.poolRows),
    view.poolEmpty,
    poolForm(),
    el("h3", { text: "Realms" }),
    scrollTable("Realms", ["Realm", "Primary for", "Backup for", "Strategy", "Workers", "Queue", "Limits"], view.realmRows),
    view.realmNote,
  );
}

function poolForm() {
  const name = field("Name, like $FAST", input("sysop-pool-name", { required: true, maxlength: 64, placeholder: "$FAST" }));
  const type = field("Type", select("sysop-pool-type", TYPES));
  const strategy = field("Strategy", select("sysop-pool-strategy", STRATEGIES));
  view.poolMembers = el("div", { class: "checks" });
  view.addPoolStatus = statusLine();
  const form = el("form", { class: "sysop-form", attrs: { "aria-labelledby": "sysop-add-pool" } },
    el("h3", { text: "Add a pool", attrs: { id: "sysop-add-pool" } }),
    el("div", { class: "grid" }, name.wrap, type.wrap, strategy.wrap),
    el("fieldset", {}, el("legend", { text: "Members" }), view.poolMembers),
    el("div", { class: "buttons" }, el("button", { text: "Add pool", attrs: { type: "submit" } })),
    view.addPoolStatus);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    // A pool is named like `$FAST`: accept "fast" too rather than refuse it.
    let poolName = name.control.value.trim().toUpperCase();
    if (poolName && !poolName.startsWith("$")) poolName = `$${poolName}`;
    const members = [...view.poolMembers.querySelectorAll("input:checked")].map((box) => box.value);
    const pool = { name: poolName, type: type.control.value, members, strategy: strategy.control.value };
    if (await submitting(form, { type: "add_pool", pool }, view.addPoolStatus)) form.reset();
  });
  renderPoolMembers();
  return form;
}

/** One checkbox per worker; rebuilt only when the set of workers changes, keeping ticks. */
function renderPoolMembers() {
  if (!view.poolMembers) return;
  const sig = JSON.stringify(state.workers.map((w) => [w.name, w.type]));
  if (view.poolMembers.dataset.sig === sig) return;
  view.poolMembers.dataset.sig = sig;
  const ticked = new Set([...view.poolMembers.querySelectorAll("input:checked")].map((box) => box.value));
  if (!state.workers.length) {
    view.poolMembers.replaceChildren(el("p", { class: "empty", text: "No workers to choose from yet." }));
    return;
  }
  view.poolMembers.replaceChildren(...state.workers.map((worker, i) => {
    const box = el("input", { attrs: { type: "checkbox", id: `sysop-pool-member-${i}`, name: "members" } });
    box.value = worker.name;
    box.checked = ticked.has(worker.name);
    return el("label", { class: "check", attrs: { for: box.id } }, box, el("span", { text: `${worker.name} (${worker.type})` }));
  }));
}

function setPools(message) {
  state.pools = message.pools || [];
  state.realms = message.realms || [];
  state.realmTypes = message.realm_types || {};
  renderPools();
  fillRealmSelect();
  loadRealms(); // a routing change may have moved workers between realms
}

function renderPools() {
  syncRows(view.poolRows, state.pools, (p) => p.name, (pool) => el("tr", {},
    el("th", { attrs: { scope: "row" }, text: pool.name }),
    cell(pool.type),
    cell(pool.strategy),
    cell(pool.members.join(", "), "wrap"),
    el("td", {}, button("Remove", () => removePool(pool.name), {
      kind: "danger", label: `Remove pool ${pool.name}`, focus: "remove",
    }))));
  view.poolEmpty.hidden = state.pools.length > 0;
}

async function removePool(name) {
  if (!(await confirmed(`Remove pool ${name}? Queries naming it will no longer be routed.`))) return;
  await act({ type: "remove_pool", name }, view.poolStatus);
}

function fillRealmSelect() {
  const chosen = view.workerRealm.value;
  view.workerRealm.replaceChildren(
    option("", "The primary realm of its type"),
    ...state.realms.map((name) => option(name, name, name === chosen)));
}

/** The pool list at start: the sysop may have been promoted after pool_update went by. */
async function loadPools() {
  try {
    const response = await fetch("/api/v1/pools", { credentials: "same-origin" });
    if (response.ok && state.active) setPools(await response.json());
  } catch {
    // pool_update on the bus brings the same; nothing to tell the sysop
  }
}

let realmsLoading = null;

/** Realm details (workers, queue depth, limits) come from REST, which only a sysop may read. */
function loadRealms() {
  if (realmsLoading || !state.active) return realmsLoading;
  realmsLoading = (async () => {
    try {
      const response = await fetch("/api/v1/realms", { credentials: "same-origin" });
      if (!response.ok) throw new Error(`the broker answered ${response.status}`);
      state.realmViews = await response.json();
      view.realmNote.textContent = "";
    } catch (error) {
      state.realmViews = null;
      view.realmNote.textContent = `Realm details are unavailable (${error.message}); showing names and types only.`;
    } finally {
      realmsLoading = null;
    }
    renderRealms();
  })();
  return realmsLoading;
}

function renderRealms() {
  if (!view.realmRows) return;
  // Without the REST details, the names and types pool_update carries still say something.
  const realms = state.realmViews || state.realms.map((name) => ({
    name, primary_for: state.realmTypes[name] || [], backup_for: [], strategy: "", workers: null,
  }));
  const rows = realms.map((realm) => ({
    ...realm, live_depth: state.queueByRealm[realm.name] ?? realm.queue_depth ?? null,
  }));
  syncRows(view.realmRows, rows, (r) => r.name, (realm) => el("tr", {},
    el("th", { attrs: { scope: "row" }, text: realm.name }),
    cell(realm.primary_for.join(", "), "wrap"),
    cell(realm.backup_for.join(", "), "wrap"),
    cell(realm.strategy),
    cell(realm.workers ? `${realm.workers.length}${realm.workers_short ? ` (${realm.workers_short} short)` : ""}` : ""),
    cell(realm.live_depth === null ? "" : String(realm.live_depth)),
    cell(realm.max_workers ? `${realm.min_workers}–${realm.max_workers} workers, queue ≤ ${realm.max_queue_size}` : "")));
}

// --- models ------------------------------------------------------------------------------

function buildModels(pane) {
  view.modelStatus = statusLine();
  view.modelRows = el("tbody");
  view.modelEmpty = el("p", { class: "empty", text: "No Hugging Face models." });
  view.workerModelRows = el("tbody");
  view.workerModelEmpty = el("p", { class: "empty", text: "No worker offers a model yet." });
  pane.append(
    el("h3", { text: "Hugging Face models" }),
    view.modelStatus,
    scrollTable("Hugging Face models", ["Model", "Type", "Actions"], view.modelRows),
    view.modelEmpty,
    modelForm(),
    el("h3", { text: "Models the workers offer" }),
    scrollTable("Models the workers offer", ["Worker", "Type", "Models"], view.workerModelRows),
    view.workerModelEmpty,
  );
}

function modelForm() {
  const name = field("Model id", input("sysop-model-name", { required: true, maxlength: 256, placeholder: "owner/model" }));
  const type = field("Type", select("sysop-model-type", TYPES));
  view.addModelStatus = statusLine();
  const form = el("form", { class: "sysop-form", attrs: { "aria-labelledby": "sysop-add-model" } },
    el("h3", { text: "Add a Hugging Face model", attrs: { id: "sysop-add-model" } }),
    el("div", { class: "grid" }, name.wrap, type.wrap),
    el("div", { class: "buttons" }, el("button", { text: "Add model", attrs: { type: "submit" } })),
    view.addModelStatus);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const model = { name: name.control.value.trim(), type: type.control.value };
    if (await submitting(form, { type: "add_huggingface_model", model }, view.addModelStatus)) form.reset();
  });
  return form;
}

function renderModels() {
  syncRows(view.modelRows, state.models, (m) => m.name, (model) => el("tr", {},
    el("th", { attrs: { scope: "row" }, text: model.name, class: "wrap" }),
    cell(model.type),
    el("td", {}, button("Remove", () => removeModel(model.name), {
      kind: "danger", label: `Remove model ${model.name}`, focus: "remove",
    }))));
  view.modelEmpty.hidden = state.models.length > 0;
}

async function removeModel(name) {
  if (!(await confirmed(`Remove the Hugging Face model ${name}?`))) return;
  await act({ type: "remove_huggingface_model", model_name: name }, view.modelStatus);
}

function renderWorkerModels() {
  const offering = state.workers.filter((w) => w.models.length)
    .map((w) => ({ name: w.name, type: w.type, models: w.models }));
  syncRows(view.workerModelRows, offering, (w) => w.name, (worker) => el("tr", {},
    el("th", { attrs: { scope: "row" }, text: worker.name }),
    cell(worker.type),
    cell(worker.models.join(", "), "wrap")));
  view.workerModelEmpty.hidden = offering.length > 0;
}

// --- users -------------------------------------------------------------------------------

function buildUsers(pane) {
  view.userStatus = statusLine();
  view.userRows = el("tbody");
  view.userEmpty = el("p", { class: "empty", text: "No users yet." });
  pane.append(
    el("h3", { text: "Users" }),
    el("p", { class: "hint", text: "Online users are marked. A ban closes every connection of theirs at once." }),
    view.userStatus,
    scrollTable("Users", ["User", "Role", "Queries", "Time", "Cost", "Status", "Actions"], view.userRows),
    view.userEmpty,
  );
}

function renderUsers() {
  if (!view.userRows) return;
  const mine = me()?.guid;
  const rows = state.users.map((user) => ({ ...user, online: state.online.has(user.guid), me: user.guid === mine }));
  syncRows(view.userRows, rows, (u) => u.guid, userRow);
  view.userEmpty.hidden = rows.length > 0;
}

function userRow(user) {
  const who = el("th", { attrs: { scope: "row" } },
    el("span", { class: "nickname", text: user.nickname }),
    user.online ? el("span", { class: "badge online", text: "online" }) : null,
    user.me ? el("span", { class: "badge", text: "you" }) : null,
    el("code", { class: "guid", text: user.guid.slice(0, 8), attrs: { title: user.guid } }));
  return el("tr", { class: user.is_banned ? "banned" : "", dataset: { guid: user.guid } },
    who,
    el("td", {}, roleSelect(user)),
    cell(String(user.query_count)),
    cell(seconds(user.total_query_time)),
    cell(dollars(user.total_cost)),
    cell(user.is_banned ? "Banned" : "Active", "state"),
    el("td", {}, el("div", { class: "actions" },
      user.is_banned
        ? button("Unban", () => unban(user), { label: `Unban ${user.nickname}`, focus: "ban" })
        : banButton(user),
      button("Terminate queries", () => terminateUser(user), {
        kind: "warn", label: `Terminate the queries of ${user.nickname}`, focus: "terminate",
      }))));
}

function banButton(user) {
  const ban = button("Ban", () => banUser(user), { kind: "danger", label: `Ban ${user.nickname}`, focus: "ban" });
  if (user.me) {
    ban.disabled = true; // the broker refuses it anyway
    ban.title = "You cannot ban yourself";
  }
  return ban;
}

function roleSelect(user) {
  const roles = ROLES.includes(user.role) ? ROLES : [user.role, ...ROLES];
  const choice = el("select", {
    attrs: { "aria-label": `Role of ${user.nickname}` }, dataset: { focus: "role" },
  }, ...roles.map((role) => option(role, role, role === user.role)));
  // A guest's role is shown but cannot be chosen: only registering gives one.
  if (!ROLES.includes(user.role)) choice.options[0].disabled = true;
  choice.addEventListener("change", async () => {
    const role = choice.value;
    if (role === "sysop" && !(await confirmed(`Make ${user.nickname} a sysop? They can then do all you can.`))) {
      choice.value = user.role;
      return;
    }
    if (!(await act({ type: "set_role", user_guid: user.guid, role }, view.userStatus))) choice.value = user.role;
  });
  return choice;
}

async function banUser(user) {
  if (!(await confirmed(`Ban ${user.nickname}? Their connections close and their queries stop at once.`))) return;
  await act({ type: "ban_user", user_guid: user.guid }, view.userStatus);
}

async function unban(user) {
  await act({ type: "unban_user", user_guid: user.guid }, view.userStatus);
}

async function terminateUser(user) {
  if (!(await confirmed(`Terminate every query of ${user.nickname}?`))) return;
  await act({ type: "terminate_query", user_guid: user.guid }, view.userStatus);
}

/** A ban or unban shows at once, before the next user_stats. */
function setBanned(guid, banned) {
  state.users = state.users.map((user) => (user.guid === guid ? { ...user, is_banned: banned } : user));
  renderUsers();
}

// --- running queries ---------------------------------------------------------------------

function buildRunning(pane) {
  view.runningStatus = statusLine();
  view.runningRows = el("tbody");
  view.runningTable = scrollTable("Running queries",
    ["Query", "User", "Type", "Model", "State", "Worker", "Realm", "Prompt", "Waited", "Since", "Actions"],
    view.runningRows);
  view.runningEmpty = el("p", { class: "empty", text: "Nothing is running." });
  pane.append(el("h3", { text: "Running queries" }), view.runningStatus, view.runningTable, view.runningEmpty);
}

function renderRunning() {
  if (!view.runningRows) return;
  syncRows(view.runningRows, state.running, (q) => q.query_id, (query) => el("tr", { dataset: { queryId: query.query_id } },
    el("th", { attrs: { scope: "row" } }, el("code", { text: query.query_id.slice(0, 8), attrs: { title: query.query_id } })),
    cell(query.nickname),
    cell(query.query_type),
    cell(query.model_name),
    cell(query.state),
    cell(query.worker),
    cell(query.realm),
    el("td", { class: "prompt-cell", text: query.prompt || "—", attrs: { title: query.prompt } }),
    cell(seconds(query.waited)),
    cell(when(query.created_at)),
    el("td", {}, button("Terminate", () => terminateQuery(query), {
      kind: "danger", label: `Terminate query ${query.query_id.slice(0, 8)} of ${query.nickname}`, focus: "terminate",
    }))));
  view.runningTable.hidden = state.running.length === 0;
  view.runningEmpty.hidden = state.running.length > 0;
}

async function terminateQuery(query) {
  if (!(await confirmed(`Terminate this ${query.query_type} query of ${query.nickname}?`))) return;
  await act({ type: "terminate_query", query_id: query.query_id }, view.runningStatus);
}

// --- statistics --------------------------------------------------------------------------

function buildStats(pane) {
  view.figures = el("dl", { class: "figures" });
  view.typeRows = el("tbody");
  view.chartBy = el("select", { attrs: { id: "sysop-chart-by" } },
    option("type", "per query type"), option("worker", "per worker"));
  view.chartBy.addEventListener("change", () => {
    state.chartBy = view.chartBy.value;
    renderCharts();
  });
  view.charts = el("div", { class: "charts" }, el("p", { class: "empty", text: "No timeline yet." }));
  pane.append(
    el("h3", { text: "Totals" }),
    view.figures,
    el("h3", { text: "By query type" }),
    scrollTable("Totals by query type", ["Type", "Queries", "Processing time", "Mean time", "Cost"], view.typeRows),
    el("h3", { text: "Over time" }),
    el("div", { class: "field inline-field" }, el("label", { text: "Show", attrs: { for: "sysop-chart-by" } }), view.chartBy),
    view.charts,
  );
}

function figure(label, value) {
  return el("div", { class: "figure" }, el("dt", { text: label }), el("dd", { text: value }));
}

function renderStats() {
  const stats = state.stats;
  if (!stats) {
    view.figures.replaceChildren();
    return;
  }
  view.figures.replaceChildren(
    figure("Queries", String(stats.total_queries)),
    figure("Processing time", seconds(stats.total_processing_time)),
    figure("Cost", dollars(stats.total_cost)),
    figure("Connected now", String(stats.connected_users)),
    figure("Most connected", String(stats.max_connected_users)),
    figure("Updated", stats.last_updated ? when(stats.last_updated) : "never"),
  );
  const byType = stats.by_type || {};
  const types = [...new Set([...Object.keys(byType), ...Object.keys(stats.average_times || {})])].sort();
  const rows = types.map((type) => ({
    type, ...(byType[type] || { queries: 0, processing_time: 0, cost: 0 }), mean: (stats.average_times || {})[type] ?? null,
  }));
  syncRows(view.typeRows, rows, (r) => r.type, (row) => el("tr", {},
    el("th", { attrs: { scope: "row" }, text: row.type }),
    cell(String(row.queries)),
    cell(seconds(row.processing_time)),
    cell(row.mean === null ? "" : seconds(row.mean)),
    cell(dollars(row.cost))));
}

/** The timeline's start as a Date: epoch seconds or an ISO timestamp. */
function startOf(timeline) {
  const start = timeline.start;
  return new Date(typeof start === "number" ? start * 1000 : start);
}

function renderCharts() {
  const timeline = state.timeline;
  if (!view.charts || !timeline || $("pane-stats").hidden) return; // drawn when shown, at its width
  const width = view.charts.clientWidth || 640;
  const key = JSON.stringify([timeline, state.chartBy, width]);
  if (key === state.chartKey) return; // nothing new: keep the open tables open and the reader in place
  state.chartKey = key;
  const perWorker = state.chartBy === "worker";
  const counts = (perWorker ? timeline.by_worker : timeline.by_type) || {};
  const means = (perWorker ? timeline.latency_by_worker : timeline.latency_by_type) || {};
  const step = timeline.bucket_seconds * 1000;
  const first = startOf(timeline).getTime();
  const labels = Array.from({ length: timeline.buckets }, (_, i) => new Date(first + i * step));
  const series = (table) => Object.keys(table).sort().map((name) => ({ name, values: table[name] }));
  const open = [...view.charts.querySelectorAll("details")].map((d) => d.open);
  const by = perWorker ? "worker" : "query type";
  view.charts.replaceChildren(
    chart({
      title: `Queries per ${by}`, labels, bucketSeconds: timeline.bucket_seconds, series: series(counts),
      stacked: true, format: (n) => String(Math.round(n)), yTitle: "Queries", width,
    }),
    chart({
      title: `Mean latency per ${by}`, labels, bucketSeconds: timeline.bucket_seconds, series: series(means),
      stacked: false, format: (n) => `${n < 10 ? n.toFixed(2) : n.toFixed(1)} s`,
      tickFormat: (n) => String(+n.toFixed(2)), yTitle: "Seconds", width,
    }),
  );
  view.charts.querySelectorAll("details").forEach((d, i) => { d.open = Boolean(open[i]); });
}

// --- broadcast ---------------------------------------------------------------------------

function buildBroadcast(pane) {
  const text = field("Message to everyone connected", el("textarea", {
    attrs: { id: "sysop-broadcast-text", rows: 3, maxlength: 2000, required: true },
  }));
  const status = statusLine();
  const form = el("form", { class: "sysop-form", attrs: { "aria-labelledby": "sysop-broadcast-heading" } },
    el("h3", { text: "Broadcast", attrs: { id: "sysop-broadcast-heading" } }),
    text.wrap,
    el("div", { class: "buttons" }, el("button", { text: "Send to everyone", attrs: { type: "submit" } })),
    status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = text.control.value.trim();
    if (!message) return;
    if (await submitting(form, { type: "sysop_message", message }, status)) form.reset();
  });
  pane.append(form);
}

// --- console -----------------------------------------------------------------------------

function buildConsole(pane) {
  const filter = field("Filter by type", input("sysop-console-filter", { type: "search", placeholder: "e.g. worker" }));
  filter.control.addEventListener("input", () => {
    state.filter = filter.control.value.trim().toLowerCase();
    renderConsole();
  });
  view.pause = button("Pause", () => {
    state.paused = !state.paused;
    view.pause.textContent = state.paused ? "Resume" : "Pause";
    view.pause.setAttribute("aria-pressed", String(state.paused));
    if (state.paused) updateConsoleCount();
    else renderConsole(); // catch up with what came while paused
  }, { kind: "secondary" });
  view.pause.setAttribute("aria-pressed", "false");
  const clear = button("Clear", () => {
    state.log = [];
    renderConsole();
  }, { kind: "secondary" });
  view.consoleCount = el("p", { class: "hint" });
  // Not role=log: a screen reader would read every ping aloud. It can be scrolled by keyboard.
  view.console = el("ol", { class: "console", attrs: { tabindex: 0, "aria-label": "Bus messages, newest last" } });
  pane.append(
    el("h3", { text: "Console" }),
    el("div", { class: "console-controls" }, filter.wrap, view.pause, clear),
    view.consoleCount,
    view.console);
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

function logMessage(message, direction) {
  const type = typeof message.type === "string" ? message.type : "?";
  const time = new Date().toTimeString().slice(0, 8);
  const entry = { type, direction, text: `${time} ${direction === "out" ? "→" : "←"} ${type} ${compact(message)}` };
  state.log.push(entry);
  if (state.log.length > CONSOLE_LINES) state.log.shift();
  if (state.paused || !view.console || $("pane-console").hidden) return; // drawn when shown
  appendLine(entry);
}

function shown(entry) {
  return !state.filter || entry.type.toLowerCase().includes(state.filter);
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

function renderConsole() {
  if (!view.console) return;
  view.console.replaceChildren(...state.log.filter(shown).map(line));
  updateConsoleCount();
  view.console.scrollTop = view.console.scrollHeight;
}

function updateConsoleCount() {
  const visible = view.console.childElementCount;
  view.consoleCount.textContent = `${visible} of the last ${state.log.length} messages shown${state.paused ? " (paused)" : ""}.`;
}
