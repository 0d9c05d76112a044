// The sysop panel (SPEC §8): workers with live health, pools and realms, models, users with
// ban/unban and roles, running queries with terminate, statistics with charts, a broadcast
// and a console of the bus. Showing it is cosmetic: the broker checks every sysop command.
// Everything shown comes from workers, users and models, so it is untrusted: it goes into the
// page as textContent only (the `el` helper), never as HTML.
//
// Each pane is a module of its own (sysop-workers.js …); they share sysop-state.js and never
// import each other. This module starts and stops the panel, routes the bus's messages to the
// panes, and updates together what several panes show (workers, pools and realms).

import { $ } from "./dom.js";
import { buildBroadcast } from "./sysop-broadcast.js";
import { refresh } from "./sysop-commands.js";
import { buildConsole, clearConsole, logMessage, renderConsole } from "./sysop-console.js";
import { buildModels, renderWorkerModels, setModels } from "./sysop-models.js";
import { buildRunning, fillClearRealms, setRunning } from "./sysop-queries.js";
import { buildRouting, loadRealms, renderPoolMembers, renderPools, setQueues } from "./sysop-routing.js";
import { state } from "./sysop-state.js";
import { buildStats, forgetStats, renderCharts, setStats, setTimeline } from "./sysop-stats.js";
import { wireTabs } from "./sysop-tabs.js";
import { buildUsers, forgetUsers, setBanned, setOnline, setUsers } from "./sysop-users.js";
import { say } from "./sysop-widgets.js";
import { buildWorkers, fillRealmSelect, renderWorkers } from "./sysop-workers.js";

const STATS_EVERY = 10_000; // ms between get_stats while the panel is open

let built = false;
let timer = null; // the get_stats every STATS_EVERY
let soon = null; // a refreshSoon waiting

// --- starting and stopping ---------------------------------------------------------------

/** Show the panel for a sysop: build it once, listen to the bus, and keep the numbers fresh. */
export function startSysop(bus, ui) {
  state.ui = ui;
  if (state.bus !== bus) {
    subscribe(bus); // Bus has no `off`: handlers stay, and do nothing unless this bus is live
    state.bus = bus;
  }
  if (!built) {
    buildPanel();
    built = true;
  }
  if (state.active) return;
  state.active = true;
  $("sysop-panel").hidden = false;
  refresh();
  loadPools();
  loadRealms();
  timer = setInterval(tick, STATS_EVERY);
}

/** Hide the panel and forget what it showed: the next person at this page may not be a sysop. */
export function stopSysop() {
  state.active = false;
  clearInterval(timer);
  clearTimeout(soon);
  timer = soon = null;
  const panel = $("sysop-panel");
  if (panel) panel.hidden = true;
  forgetStats();
  forgetUsers();
  setRunning([]);
  clearConsole();
  for (const line of document.querySelectorAll("#sysop-panel .sysop-status")) say(line, "", true);
}

function tick() {
  if (state.bus.state !== "connected") return; // the bus would only queue them up
  refresh();
  if (!$("pane-routing").hidden) loadRealms(); // queue depths move
}

/** A refresh at most once a second, for bursts of queue changes. */
function refreshSoon() {
  if (soon) return;
  soon = setTimeout(() => {
    soon = null;
    if (state.active) refresh();
  }, 1000);
}

// --- the bus -----------------------------------------------------------------------------

function subscribe(bus) {
  const handlers = {
    worker_update: (m) => setWorkers(m.workers),
    worker_health: (m) => setWorkers(m.data),
    pool_update: setRouting,
    huggingface_update: (m) => setModels(m.models),
    user_stats: (m) => setUsers(m.data),
    active_users: (m) => setOnline(m.users),
    user_banned: (m) => setBanned(m.guid, true),
    user_unbanned: (m) => setBanned(m.guid, false),
    running_queries: (m) => setRunning(m.data),
    query_terminated: () => refreshSoon(),
    system_stats: (m) => setStats(m.data),
    stats_timeline: (m) => setTimeline(m.data),
    queue_update: (m) => {
      setQueues(m.realms);
      if (!$("pane-running").hidden) refreshSoon(); // a query started or finished
    },
  };
  const live = (handler) => (...args) => {
    if (state.active && state.bus === bus) handler(...args);
  };
  for (const [type, handler] of Object.entries(handlers)) bus.on(type, live(handler));
  bus.on("*", live(logMessage));
}

// --- what several panes show ---------------------------------------------------------------

/** Workers show in their pane, as the pool form's members, and with the models they offer. */
function setWorkers(workers) {
  state.workers = workers || [];
  renderWorkers();
  renderWorkerModels();
  renderPoolMembers();
}

/** Pools and realms show in the routing pane; the realms also in the worker form's choice
 * and the queue's. */
function setRouting(message) {
  state.pools = message.pools || [];
  state.realms = message.realms || [];
  state.realmTypes = message.realm_types || {};
  renderPools();
  fillRealmSelect();
  fillClearRealms();
  loadRealms(); // a routing change may have moved workers between realms
}

/** The pool list at start: the sysop may have been promoted after pool_update went by. */
async function loadPools() {
  try {
    const response = await fetch("/api/v1/pools", { credentials: "same-origin" });
    if (response.ok && state.active) setRouting(await response.json());
  } catch {
    // pool_update on the bus brings the same; nothing to tell the sysop
  }
}

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
  wireTabs(showPane);
  // Charts are drawn for the width they get: draw them again when that changes.
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => renderCharts(), 200);
  });
}

/** Opening a view shows it fresh rather than up to 10 s old. */
function showPane(pane) {
  if (["pane-users", "pane-running", "pane-stats", "pane-workers"].includes(pane)) refresh();
  if (pane === "pane-routing") loadRealms();
  if (pane === "pane-stats") renderCharts();
  if (pane === "pane-console") renderConsole();
}
