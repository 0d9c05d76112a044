// The models pane: the Hugging Face models the broker knows, with a form to add one, and the
// models each worker offers.

import { el } from "./dom.js";
import { act, confirmed, submitting } from "./sysop-commands.js";
import { names, state } from "./sysop-state.js";
import { button, cell, field, input, scrollTable, select, statusLine, syncRows } from "./sysop-widgets.js";

const view = {};

export function buildModels(pane) {
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
  const type = field("Type", select("sysop-model-type", names().query_types));
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

/** The Hugging Face models huggingface_update lists. */
export function setModels(list) {
  const models = list || [];
  syncRows(view.modelRows, models, (m) => m.name, (model) => el("tr", {},
    el("th", { attrs: { scope: "row" }, text: model.name, class: "wrap" }),
    cell(model.type),
    el("td", {}, button("Remove", () => removeModel(model.name), {
      kind: "danger", label: `Remove model ${model.name}`, focus: "remove",
    }))));
  view.modelEmpty.hidden = models.length > 0;
}

async function removeModel(name) {
  if (!(await confirmed(`Remove the Hugging Face model ${name}?`))) return;
  await act({ type: "remove_huggingface_model", model_name: name }, view.modelStatus);
}

export function renderWorkerModels() {
  const offering = state.workers.filter((w) => w.models.length)
    .map((w) => ({ name: w.name, type: w.type, models: w.models }));
  syncRows(view.workerModelRows, offering, (w) => w.name, (worker) => el("tr", {},
    el("th", { attrs: { scope: "row" }, text: worker.name }),
    cell(worker.type),
    cell(worker.models.join(", "), "wrap")));
  view.workerModelEmpty.hidden = offering.length > 0;
}
