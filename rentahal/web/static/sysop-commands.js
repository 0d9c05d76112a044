// What the sysop panel sends to the broker, and the confirmations it asks of the page first.
// Showing the panel is cosmetic: the broker checks every sysop command.

import { state } from "./sysop-state.js";
import { say } from "./sysop-widgets.js";

const REPLY_TIMEOUT = 30_000; // a command's reply lost to a reconnect must not hang a form

/** Ask for users, worker health, active users, running queries and statistics. */
export function refresh() {
  state.bus.send({ type: "get_stats" });
}

/** Send a sysop command and say how it went; a success refreshes the numbers. */
export async function act(message, status) {
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
export async function submitting(form, message, status) {
  const controls = [...form.elements];
  for (const control of controls) control.disabled = true;
  try {
    return await act(message, status);
  } finally {
    for (const control of controls) control.disabled = false;
  }
}

export async function confirmed(text) {
  return state.ui && state.ui.confirm ? state.ui.confirm(text) : false;
}
