// What comes back: one card per query (newest first) with its streamed text, image or audio,
// time and cost; the image gallery; the session's running totals; the user's previous
// queries; the queue gauge; and a notice for every error or message the broker sends.

import { $, blobUrl, dollars, el, seconds, when } from "./dom.js";
import { renderAnswer } from "./highlight.js";

const ENDED = new Set(["done", "failed", "cancelled", "expired"]);
const MAX_CARDS = 200; // the oldest cards go: a long session must not grow the page forever

// What each broker error code means to a person (the broker's own message follows it).
const EXPLAIN = {
  malformed: "The page sent something the broker could not read.",
  unknown_type: "The broker does not know that request.",
  invalid: "That request was not accepted",
  too_large: "That is too large to send.",
  forbidden: "Only a sysop may do that.",
  unauthorized: "Please sign in again.",
  banned: "You have been banned from this service.",
  not_found: "Not found",
  conflict: "That clashes with something that exists",
  no_worker: "No worker can answer that right now",
  queue_full: "The queue is full; please try again in a moment.",
  user_limit: "You already have as many queries waiting as you may.",
  rate_limited: "You are sending faster than this realm allows",
  quota_exceeded: "You have used today's queries",
  insufficient_credit: "Your credit is too low for that",
  unsupported: "This realm does not offer that",
  worker_error: "The worker failed",
  timeout: "The worker took too long",
  cancelled: "Cancelled",
  expired: "It waited in the queue too long",
  not_configured: "This realm is not set up for that yet",
  not_connected: "Connect your account first",
  upstream_error: "A web service it needed failed",
  internal: "Something went wrong in the broker",
};

/** A person's sentence for a broker `error` message. */
export function describeError(message) {
  const lead = EXPLAIN[message.code];
  let text = lead && !message.message.toLowerCase().startsWith(lead.toLowerCase().slice(0, 12))
    ? `${lead}: ${message.message}` : message.message;
  if (message.retry_after) text += ` (try again in ${Math.ceil(message.retry_after)} s)`;
  return text;
}

export class Results {
  constructor({ onAudio }) {
    this.cards = new Map();
    this.prompts = new Map(); // message id → what was asked, until the broker names the query
    this.totals = { count: 0, time: 0, cost: 0 };
    this.answers = 0;
    this.gallery = new Set(); // cards whose image is in the gallery: their URLs stay alive
    this.depth = 0;
    this.onAudio = onAudio; // (url, card) → plays a spoken answer when the user wants it
    $("clear-results").addEventListener("click", () => this.clear());
  }

  /** Remember what message `id` asked, so its card can show the prompt. */
  asked(id, prompt, kind) {
    this.prompts.set(id, { prompt, kind });
  }

  card(queryId, messageId) {
    let card = this.cards.get(queryId);
    if (card) return card;
    const asked = this.prompts.get(messageId) || {};
    this.prompts.delete(messageId);
    const item = el("li", { class: "result", dataset: { queryId } });
    const head = el("div", { class: "result-head" });
    const promptNode = el("p", { class: "prompt", text: asked.prompt || "" });
    const kind = el("span", { class: "tag", text: asked.kind || "" });
    head.append(promptNode, kind);
    const answer = el("div", { class: "answer" });
    const media = el("div", { class: "media" });
    const meta = el("p", { class: "meta", text: "queued" });
    const cancel = el("button", {
      class: "secondary small cancel", text: "Cancel",
      attrs: { type: "button", "aria-label": `Cancel: ${(asked.prompt || "this query").slice(0, 60)}` },
    });
    item.append(head, answer, media, el("div", { class: "result-foot" }, meta, cancel));
    $("results").prepend(item);
    while ($("results").children.length > MAX_CARDS) this.drop($("results").lastElementChild);
    card = { item, promptNode, kind, answer, media, meta, cancel, text: "", worker: null, urls: [] };
    this.cards.set(queryId, card);
    return card;
  }

  setPrompt(queryId, prompt, kind) {
    const card = this.card(queryId);
    if (prompt) card.promptNode.textContent = prompt;
    if (kind) card.kind.textContent = kind;
  }

  accepted(message) {
    const card = this.card(message.query_id, message.response_to);
    card.meta.textContent = `queued, position ${message.position}`;
    return card;
  }

  status(message) {
    const card = this.card(message.query_id);
    if (message.state === "dispatched") { card.text = ""; card.answer.textContent = ""; } // a retry starts afresh
    if (message.worker) card.worker = message.worker;
    if (!ENDED.has(message.state)) {
      card.meta.textContent = message.state + (message.worker ? ` on ${message.worker}` : "");
    }
  }

  chunk(message) {
    const card = this.card(message.query_id);
    card.text += message.delta;
    card.answer.textContent = card.text;
  }

  /** A query's final answer: text, an image or audio, then its time and cost. */
  result(message) {
    const card = this.card(message.query_id);
    card.cancel.remove();
    if (message.worker) card.worker = message.worker;
    if (message.result_type === "image") {
      this.image(card, message.result, message.query_id);
    } else if (message.result_type === "audio") {
      this.audio(card, message.result);
    } else {
      card.text = message.result;
      renderAnswer(card.answer, message.result);
    }
    if (message.transcript) card.promptNode.textContent = message.transcript;
    if (message.audio) this.audio(card, message.audio);
    this.finish(card, message);
    return card;
  }

  /** An intent that answered by itself (weather, mail): a card with no query behind it. */
  answered(intent, prompt, answer) {
    const card = this.card(`intent-${++this.answers}`);
    card.cancel.remove();
    card.kind.textContent = intent;
    card.promptNode.textContent = prompt;
    card.answer.textContent = answer;
    card.meta.textContent = intent;
  }

  transcription(message) {
    const card = this.card(message.query_id);
    if (!message.final) { card.promptNode.textContent = message.text; return; } // a speech query goes on
    card.cancel.remove();
    card.text = message.text;
    card.answer.textContent = message.text;
    this.finish(card, message);
  }

  speech(message) {
    const card = this.card(message.query_id);
    card.cancel.remove();
    this.audio(card, message.audio);
    this.finish(card, message);
  }

  /** Take a card off the page, and free what it held (its media's object URLs). */
  drop(item) {
    const card = this.cards.get(item.dataset.queryId);
    if (card && !this.gallery.has(card)) for (const url of card.urls) URL.revokeObjectURL(url);
    this.cards.delete(item.dataset.queryId);
    item.remove();
  }

  finish(card, message) {
    card.meta.textContent = (card.worker ? `${card.worker} · ` : "") +
      `${seconds(message.processing_time)} · ${dollars(message.cost)}`;
    this.totals.count += 1;
    this.totals.time += message.processing_time || 0;
    this.totals.cost += message.cost || 0;
    const { count, time, cost } = this.totals;
    $("cumulative").textContent =
      `This window: ${count} answer${count === 1 ? "" : "s"} · ${seconds(time)} · ${dollars(cost)}`;
    this.announce(`Answer ready: ${card.promptNode.textContent.slice(0, 80)}`);
  }

  image(card, base64, queryId) {
    const url = blobUrl(base64, "image/png");
    card.urls.push(url);
    this.gallery.add(card); // the gallery keeps showing it after the card goes
    const prompt = card.promptNode.textContent || "generated image";
    card.media.append(el("img", { attrs: { src: url, alt: `Image for: ${prompt}` } }));
    const name = `rentahal-${queryId.slice(0, 8)}.png`;
    const figure = el("li", {},
      el("figure", {},
        el("img", { attrs: { src: url, alt: prompt, loading: "lazy" } }),
        el("figcaption", {},
          el("span", { text: prompt }), " ",
          el("a", { text: "Download", attrs: { href: url, download: name } }))));
    $("gallery").prepend(figure);
    $("gallery-section").hidden = false;
  }

  audio(card, base64) {
    const url = blobUrl(base64, "audio/wav");
    card.urls.push(url);
    const player = el("audio", { attrs: { controls: true, src: url, preload: "auto" } });
    player.setAttribute("aria-label", "Spoken answer");
    card.media.append(player);
    this.onAudio(url, card);
  }

  /** A broker `error`: on its query's card if it has one, else as a notice. */
  error(message) {
    const card = message.query_id && this.cards.get(message.query_id);
    if (card) {
      card.item.classList.add("error");
      card.cancel.remove();
      card.meta.textContent = describeError(message);
      this.announce(`Failed: ${describeError(message)}`);
      return;
    }
    this.notice(`Error: ${describeError(message)}`, "error");
  }

  notice(text, kind = "info") {
    $("results").prepend(el("li", { class: `notice ${kind}`, text }));
    this.announce(text);
  }

  /** Tell a screen reader what happened, once (the streaming answers are not announced). */
  announce(text) {
    $("announcer").textContent = text;
  }

  clear() {
    for (const item of [...$("results").children]) this.drop(item);
  }

  queue(message) {
    this.depth = message.depth;
    const gauge = $("queue-gauge");
    gauge.max = Math.max(1, message.total, message.depth);
    gauge.value = message.depth;
    $("queue").textContent = `Queue: ${message.depth} waiting · ${message.total} worker${message.total === 1 ? "" : "s"}`;
  }

  history(queries) {
    const list = $("history");
    list.replaceChildren();
    if (!queries.length) list.append(el("li", { class: "muted", text: "No previous queries." }));
    for (const query of queries) {
      const failed = query.state !== "done";
      const item = el("li", { class: "result" + (failed ? " error" : "") });
      item.append(el("p", { class: "prompt", text: query.prompt || `(${query.query_type})` }));
      if (query.result) item.append(el("p", { class: "answer clamp", text: query.result }));
      if (query.error) item.append(el("p", { class: "answer", text: query.error }));
      if (query.output_url && query.result_type === "image") {
        item.append(el("img", { class: "thumb", attrs: { src: query.output_url, alt: query.prompt, loading: "lazy" } }));
      } else if (query.output_url) {
        item.append(el("audio", { attrs: { controls: true, preload: "none", src: query.output_url, "aria-label": "Spoken answer" } }));
      }
      const model = [query.model_type, query.model_name].filter(Boolean).join(" · ");
      const cost = failed ? query.state : `${seconds(query.processing_time)} · ${dollars(query.cost)}`;
      item.append(el("p", { class: "meta", text: `${query.query_type} · ${model} · ${cost} · ${when(query.timestamp)}` }));
      list.append(item);
    }
  }
}
