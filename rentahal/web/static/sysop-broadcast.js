// The broadcast pane: a message to everyone connected.

import { el } from "./dom.js";
import { submitting } from "./sysop-commands.js";
import { field, statusLine } from "./sysop-widgets.js";

export function buildBroadcast(pane) {
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
