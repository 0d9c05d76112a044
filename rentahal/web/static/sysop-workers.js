// The workers pane: each worker with its live health, a form to add one, and Remove.

import { el, option, when } from "./dom.js";
import { act, confirmed, submitting } from "./sysop-commands.js";
import { names, state } from "./sysop-state.js";
import { button, cell, field, input, scrollTable, select, statusLine, syncRows } from "./sysop-widgets.js";

const view = {};

export function buildWorkers(pane) {
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
  const kind = field("Kind", select("sysop-worker-kind", names().worker_kinds));
  const type = field("Type", select("sysop-worker-type", names().query_types));
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

/** The form's realm choice: the realms the last pool_update named, keeping the one chosen. */
export function fillRealmSelect() {
  const chosen = view.workerRealm.value;
  view.workerRealm.replaceChildren(
    option("", "The primary realm of its type"),
    ...state.realms.map((name) => option(name, name, name === chosen)));
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

export function renderWorkers() {
  // A row is rebuilt whenever its health check moves `last_active`; syncRows keeps the
  // focus on its Remove button when that happens.
  syncRows(view.workerRows, state.workers, (w) => w.name, workerRow);
  view.workerEmpty.hidden = state.workers.length > 0;
}
