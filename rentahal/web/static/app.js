// RENT A HAL in the browser: wires the bus to the composer, the answers, voice mode and (for
// a sysop) the sysop panel. Every piece of user, worker or broker text is inserted as text.

import { Bus } from "./bus.js";
import { Composer } from "./composer.js";
import { $, dollars, seconds } from "./dom.js";
import { Listener } from "./listener.js";
import { Prefs } from "./prefs.js";
import { Results, describeError } from "./results.js";
import { Speaker } from "./speaker.js";
import { startSysop, stopSysop } from "./sysop.js";
import { VoiceMode } from "./voice.js";

const prefs = new Prefs();
prefs.apply();
const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const bus = new Bus(`${scheme}//${location.host}/ws`);
// `vocabulary`: the query types, worker kinds, strategies and roles the broker knows (its greeting).
const realm = { workers: [], intents: [], me: null, sysop: false, vocabulary: null };

const offers = (type) => realm.workers.some((w) => w.capabilities.includes(type) && !w.is_blacklisted);
const speaker = new Speaker({ bus, canSpeak: () => offers("tts"), browserVoice: () => prefs.get("browserVoice", false) });
// Answers are spoken outside voice mode when the person ticked "Speak answers"; an answer
// whose sentences were spoken as they came (`speech_chunk`) is not said again when whole.
const speakAnswers = () => !voice.active && $("speak-answers").checked;
const results = new Results({
  onAudio: (url, card) => { if (speakAnswers() && !speaker.streamed(card.item.dataset.queryId)) speaker.play(url); },
});
const notice = (text, kind) => results.notice(text, kind);
const composer = new Composer({ bus, results, notice, prefs });
const voice = new VoiceMode({
  bus, speaker, results, notice,
  listener: new Listener(),
  intents: () => realm.intents.filter((i) => i.available),
  autospeak: () => prefs.get("autospeakVoice", true),
});

// --- the connection ---------------------------------------------------------------------

bus.addEventListener("state", ({ detail }) => {
  const node = $("connection");
  node.dataset.state = detail.state;
  node.textContent = {
    connecting: "Connecting…",
    connected: "Connected",
    reconnecting: `Reconnecting in ${Math.round((detail.delay || 1000) / 1000)} s…`,
    banned: "Banned",
  }[detail.state];
  if (detail.state === "banned") banned();
});

function banned() {
  const banner = $("banner");
  banner.textContent = "You have been banned from this service. Queries are closed to you.";
  banner.hidden = false;
  for (const id of ["submit-button", "record-button", "voice-button", "prompt-input"]) $(id).disabled = true;
  if (voice.active) voice.stop();
}

// Events of a query the page runs for itself have no card; nor have another tab's helper
// queries (its transcripts and spoken feedback reach every connection of the user): a
// status or a transcript/speech result only shows on a card that already exists.
const shown = (message) => !(message.query_id && bus.own.has(message.query_id));
const onCard = (message) => shown(message) && results.cards.has(message.query_id);

const handlers = {
  vocabulary(names) { realm.vocabulary = names; },
  user_info({ data: user }) {
    realm.me = user;
    $("user-info").textContent = `${user.nickname} (${user.role})`;
    $("user-costs").textContent =
      `Queries: ${user.query_count} · Total time: ${seconds(user.total_query_time)} · Total cost: ${dollars(user.total_cost)}`;
    $("nickname-input").placeholder = user.nickname;
    // Started at once (not lazily loaded): the panel must see the lists the broker sends
    // right after this message.
    if (user.is_sysop && !realm.sysop) startSysop(bus, sysopUi);
    else if (!user.is_sysop && realm.sysop) stopSysop();
    realm.sysop = user.is_sysop;
  },
  worker_update({ workers }) {
    realm.workers = workers;
    composer.setWorkers(workers);
    results.queue({ depth: results.depth, total: workers.filter((w) => !w.is_blacklisted).length });
  },
  pool_update(message) { composer.setPools(message); },
  intents({ intents }) {
    realm.intents = intents;
    $("voice-modes").textContent = intents.filter((i) => i.available).map((i) => i.name).join(", ");
  },
  query_accepted(message) { if (results.prompts.has(String(message.response_to))) results.accepted(message); },
  query_status(message) { if (onCard(message)) results.status(message); },
  query_chunk(message) { if (shown(message)) results.chunk(message); },
  speech_chunk(message) {
    const asked = voice.active ? voice.asking === message.query_id : onCard(message) && speakAnswers();
    if (asked) speaker.chunk(message);
  },
  query_result(message) {
    if (!shown(message)) return;
    results.result(message);
    speaker.finished(message.query_id); // any chunks still to come are late: dropped
    bus.send({ type: "get_previous_queries" });
  },
  transcription_result(message) { if (onCard(message)) results.transcription(message); },
  speech_result(message) { if (onCard(message)) results.speech(message); },
  queue_update(message) { results.queue(message); },
  previous_queries({ data }) { results.history(data); },
  sysop_message({ message }) { notice(`Sysop: ${message}`, "sysop"); },
  user_banned({ guid }) { if (realm.me && guid === realm.me.guid) banned(); },
  query_terminated({ guid }) { if (realm.me && guid === realm.me.guid) notice("A sysop terminated your query.", "error"); },
  error(message) {
    if (message.code === "banned") { banned(); return; }
    if (message.awaited || !shown(message)) return; // its sender shows it
    results.error(message);
  },
  ping() { bus.send({ type: "pong" }); },
};
for (const [type, handler] of Object.entries(handlers)) bus.on(type, handler);

// --- what the sysop panel may ask of the page ---------------------------------------------

function confirmed(text) {
  const dialog = $("confirm-dialog");
  $("confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true }));
}
const sysopUi = { notice, confirm: confirmed, me: () => realm.me, vocabulary: () => realm.vocabulary };

// --- the rest of the page -----------------------------------------------------------------

$("results").addEventListener("click", async (event) => {
  const button = event.target.closest("button.cancel");
  if (!button) return;
  button.disabled = true;
  const reply = await bus.request({ type: "cancel_query", query_id: button.closest("li").dataset.queryId });
  if (reply.type === "error") { button.disabled = false; notice(`Error: ${describeError(reply)}`, "error"); }
});

$("nickname-form").addEventListener("submit", (event) => {
  event.preventDefault();
  bus.send({ type: "set_nickname", nickname: $("nickname-input").value.trim() });
  $("nickname-input").value = "";
});

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = $("key-input").value.trim();
  $("key-input").value = "";
  const response = await fetch("/api/v1/session", { method: "POST", headers: { Authorization: `Bearer ${key}` } });
  if (!response.ok) { notice("That API key was not accepted.", "error"); return; }
  bus.reconnect(); // the session cookie the broker just set now names the user
});

$("voice-button").addEventListener("click", () => voice.toggle());
// In voice mode, as saying "shut up": the answer on its way is dropped too.
const shutUp = () => (voice.active ? voice.shutUp() : speaker.stop());
$("shutup-button").addEventListener("click", shutUp);
$("shortcuts-button").addEventListener("click", () => $("shortcuts").showModal());

function bindPreference(id, name, fallback, apply) {
  const input = $(id);
  const value = prefs.get(name, fallback);
  if (input.type === "checkbox") input.checked = value; else input.value = value;
  input.addEventListener("change", () => {
    prefs.save({ [name]: input.type === "checkbox" ? input.checked : input.value });
    if (apply) prefs.apply();
  });
}
bindPreference("pref-autospeak-voice", "autospeakVoice", true);
bindPreference("pref-browser-voice", "browserVoice", false);
bindPreference("pref-font", "font", "17px", true);
bindPreference("pref-theme", "theme", "auto", true);
composer.restore(prefs.values);

// The seed's shortcuts; Ctrl and Cmd alike. Alt+W stands in where the browser keeps
// Ctrl+Shift+W (close window) for itself.
document.addEventListener("keydown", (event) => {
  const ctrl = event.ctrlKey || event.metaKey;
  const key = event.key.toLowerCase();
  // A shortcut does what its button does, and nothing when that button is disabled (a
  // banned user) or a dialog is open.
  const press = (id) => () => { if (!$(id).disabled) $(id).click(); };
  let action = null;
  if (ctrl && key === "enter") action = press("submit-button");
  else if (ctrl && key === "l") action = press("clear-results");
  else if (ctrl && event.shiftKey && key === "v") action = press("record-button");
  else if (ctrl && event.shiftKey && key === "s") action = press("speak-answers");
  else if ((ctrl && event.shiftKey && key === "w") || (event.altKey && key === "w")) action = press("voice-button");
  else if (key === "escape" && speaker.speaking) action = shutUp;
  if (!action || document.querySelector("dialog[open]")) return;
  event.preventDefault();
  action();
});

bus.connect();
