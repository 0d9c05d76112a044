// The running queries pane: every unfinished query, where it runs, and Terminate; and
// clearing the queue (the waiting queries of a realm, or all of them).

import { el, option, seconds, when } from "./dom.js";
import { act, confirmed } from "./sysop-commands.js";
import { state } from "./sysop-state.js";
import { button, cell, field, scrollTable, select, statusLine, syncRows } from "./sysop-widgets.js";

const view = {};

export function buildRunning(pane) {
  view.runningStatus = statusLine();
  view.runningRows = el("tbody");
  view.runningTable = scrollTable("Running queries",
    ["Query", "User", "Type", "Model", "State", "Worker", "Realm", "Prompt", "Waited", "Since", "Actions"],
    view.runningRows);
  view.runningEmpty = el("p", { class: "empty", text: "Nothing is running." });
  // One status line, between the Clear button and the table, says how Clear and Terminate went.
  pane.append(...buildClearQueue(),
    el("h3", { text: "Running queries" }), view.runningStatus, view.runningTable, view.runningEmpty);
}

/** Clear the queue: a realm (or all of them) and a button that asks first. */
function buildClearQueue() {
  const realm = field("Realm", select("sysop-clear-realm", []));
  view.clearRealm = realm.control;
  fillClearRealms();
  const clear = button("Clear the queue", clearQueue, { kind: "danger", label: "Clear the queue" });
  return [
    el("h3", { text: "Waiting queries" }),
    el("p", { text: "Clearing cancels the queries still waiting for a worker; running ones go on." }),
    el("div", { class: "grid" }, realm.wrap),
    el("div", { class: "buttons" }, clear),
  ];
}

/** The realms to clear, as the last pool_update named them. */
export function fillClearRealms() {
  if (!view.clearRealm) return;
  const chosen = view.clearRealm.value;
  view.clearRealm.replaceChildren(
    option("", "Every realm"),
    ...state.realms.map((name) => option(name, name, name === chosen)));
}

async function clearQueue() {
  const realm = view.clearRealm.value;
  const what = realm ? `the queue of ${realm}` : "the whole queue";
  if (!(await confirmed(`Clear ${what}? Its waiting queries are cancelled.`))) return;
  await act(realm ? { type: "clear_queue", realm } : { type: "clear_queue" }, view.runningStatus);
}

/** The queries running_queries lists; an empty list at stop forgets them. */
export function setRunning(list) {
  if (!view.runningRows) return;
  const running = list || [];
  syncRows(view.runningRows, running, (q) => q.query_id, (query) => el("tr", { dataset: { queryId: query.query_id } },
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
  view.runningTable.hidden = running.length === 0;
  view.runningEmpty.hidden = running.length > 0;
}

async function terminateQuery(query) {
  if (!(await confirmed(`Terminate this ${query.query_type} query of ${query.nickname}?`))) return;
  await act({ type: "terminate_query", query_id: query.query_id }, view.runningStatus);
}
