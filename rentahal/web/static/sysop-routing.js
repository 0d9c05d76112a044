// The routing pane: pools (a name like $FAST for a set of workers and a strategy) with a form
// to add one, and the realms with their workers, queue depth and limits.

import { el } from "./dom.js";
import { act, confirmed, submitting } from "./sysop-commands.js";
import { names, state } from "./sysop-state.js";
import { button, cell, field, input, scrollTable, select, statusLine, syncRows } from "./sysop-widgets.js";

const view = {};
let realmViews = null; // the REST details of each realm, when the broker gave them
let queueByRealm = {}; // the live depths queue_update sends
let realmsLoading = null;

export function buildRouting(pane) {
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
  const type = field("Type", select("sysop-pool-type", names().query_types));
  const strategy = field("Strategy", select("sysop-pool-strategy", names().strategies));
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
export function renderPoolMembers() {
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

export function renderPools() {
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

/** Realm details (workers, queue depth, limits) come from REST, which only a sysop may read. */
export function loadRealms() {
  if (realmsLoading || !state.active) return realmsLoading;
  realmsLoading = (async () => {
    try {
      const response = await fetch("/api/v1/realms", { credentials: "same-origin" });
      if (!response.ok) throw new Error(`the broker answered ${response.status}`);
      realmViews = await response.json();
      view.realmNote.textContent = "";
    } catch (error) {
      realmViews = null;
      view.realmNote.textContent = `Realm details are unavailable (${error.message}); showing names and types only.`;
    } finally {
      realmsLoading = null;
    }
    renderRealms();
  })();
  return realmsLoading;
}

/** The queue depth of each realm, live from queue_update. */
export function setQueues(realms) {
  queueByRealm = realms || {};
  renderRealms();
}

function renderRealms() {
  if (!view.realmRows) return;
  // Without the REST details, the names and types pool_update carries still say something.
  const realms = realmViews || state.realms.map((name) => ({
    name, primary_for: state.realmTypes[name] || [], backup_for: [], strategy: "", workers: null,
  }));
  const rows = realms.map((realm) => ({
    ...realm, live_depth: queueByRealm[realm.name] ?? realm.queue_depth ?? null,
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
