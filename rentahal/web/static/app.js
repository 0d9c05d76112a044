// RENT A HAL minimal client: nickname, chat prompt, streamed answers over the /ws bus.
// Every piece of user or worker text is inserted with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  socket: null, backoff: 1000, cards: new Map(), pending: [], nextId: 1, workers: [], targets: [],
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function send(message) {
  message.id = String(state.nextId++);
  if (state.socket && state.socket.readyState === WebSocket.OPEN) {
    state.socket.send(JSON.stringify(message));
  } else {
    state.pending.push(message); // sent once the connection is back
  }
  return message.id;
}

function notice(text, isError) {
  const item = el("li", "notice" + (isError ? " error" : ""), text);
  $("results").prepend(item);
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/ws`);
  state.socket = socket;
  socket.onopen = () => {
    $("connection").textContent = "Connected";
    state.backoff = 1000;
    for (const message of state.pending.splice(0)) socket.send(JSON.stringify(message));
  };
  socket.onmessage = (event) => handle(JSON.parse(event.data));
  socket.onclose = (event) => {
    if (event.code === 4003) {
      $("connection").textContent = "Banned";
      $("submit-button").disabled = true;
      return;
    }
    $("connection").textContent = `Reconnecting in ${state.backoff / 1000} s…`;
    setTimeout(connect, state.backoff);
    state.backoff = Math.min(state.backoff * 2, 30000);
  };
}

function resultCard(queryId, prompt) {
  let card = state.cards.get(queryId);
  if (!card) {
    const item = el("li", "result");
    item.dataset.queryId = queryId;
    const promptNode = el("p", "prompt", prompt || "");
    const answer = el("p", "answer");
    const meta = el("p", "meta", "queued");
    item.append(promptNode, answer, meta);
    $("results").prepend(item);
    card = { item, answer, meta, promptNode };
    state.cards.set(queryId, card);
  }
  return card;
}

const handlers = {
  user_info(message) {
    const user = message.data;
    $("user-info").textContent = `${user.nickname} (${user.role})`;
    $("user-costs").replaceChildren(
      el("span", "nowrap", `Queries: ${user.query_count}`), " · ",
      el("span", "nowrap", `Total time: ${user.total_query_time.toFixed(2)} s`), " · ",
      el("span", "nowrap", `Total cost: $${user.total_cost.toFixed(4)}`),
    );
    $("nickname-input").placeholder = user.nickname;
  },
  worker_update(message) {
    state.workers = message.workers;
    renderPicker();
  },
  pool_update(message) {
    state.targets = [
      ...message.pools.filter((pool) => pool.type === "chat").map((pool) => pool.name),
      ...message.realms.filter((realm) => (message.realm_types[realm] || []).includes("chat")),
    ];
    renderPicker();
  },
  query_accepted(message) {
    const prompt = state.prompts?.[message.response_to];
    const card = resultCard(message.query_id, prompt);
    card.meta.textContent = `queued, position ${message.position}`;
  },
  query_status(message) {
    const card = resultCard(message.query_id);
    if (message.state === "dispatched") card.answer.textContent = ""; // a retry starts afresh
    if (message.worker) card.worker = message.worker;
    if (!["done", "failed", "cancelled", "expired"].includes(message.state)) {
      card.meta.textContent = message.state + (message.worker ? ` on ${message.worker}` : "");
    }
  },
  query_chunk(message) {
    resultCard(message.query_id).answer.textContent += message.delta;
  },
  query_result(message) {
    const card = resultCard(message.query_id);
    card.answer.textContent = message.result;
    card.meta.textContent = (card.worker ? `${card.worker} · ` : "") +
      `${message.processing_time.toFixed(2)} s · $${message.cost.toFixed(4)}`;
    send({ type: "get_previous_queries" });
  },
  queue_update(message) {
    $("queue").textContent = `Queue: ${message.depth} · workers: ${message.total}`;
  },
  previous_queries(message) {
    const list = $("history");
    list.replaceChildren();
    for (const query of message.data) {
      const item = el("li", "result" + (query.state === "done" ? "" : " error"));
      item.append(el("p", "prompt", query.prompt));
      if (query.result) item.append(el("p", "answer", query.result));
      item.append(el("p", "meta", `${query.state} · ${new Date(query.timestamp).toLocaleString()}`));
      list.append(item);
    }
  },
  sysop_message(message) { notice(`Sysop: ${message.message}`, false); },
  user_banned() { notice("You have been banned from this service.", true); },
  ok(message) { notice(message.message, false); },
  error(message) {
    if (message.query_id) {
      const card = resultCard(message.query_id);
      card.item.classList.add("error");
      card.meta.textContent = `${message.code}: ${message.message}`;
    } else {
      notice(`Error: ${message.message}`, true);
    }
  },
  ping() { send({ type: "pong" }); },
};

function renderPicker() {
  // Any worker, then pools and realms ($NAME), then each worker's models.
  const select = $("model-select");
  const chosen = select.value;
  const option = (value, label) => { const node = el("option", "", label); node.value = value; return node; };
  select.replaceChildren(option("", "Any chat worker"));
  for (const target of state.targets) select.append(option(target, target));
  for (const worker of state.workers) {
    if (!worker.capabilities.includes("chat")) continue;
    const down = worker.is_blacklisted ? " (down)" : "";
    for (const name of worker.models.length ? worker.models : [worker.name]) {
      select.append(option(name, `${name} — ${worker.name}${down}`));
    }
  }
  select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "";
}

function handle(message) {
  const handler = handlers[message.type];
  if (handler) handler(message);
}

function submitPrompt() {
  const prompt = $("prompt-input").value.trim();
  if (!prompt) return;
  const id = send({
    type: "submit_query",
    query: { prompt, query_type: "chat", model_type: "worker_node", model_name: $("model-select").value },
  });
  state.prompts = state.prompts || {};
  state.prompts[id] = prompt;
  $("prompt-input").value = "";
}

document.addEventListener("DOMContentLoaded", () => {
  $("query-form").addEventListener("submit", (event) => { event.preventDefault(); submitPrompt(); });
  $("prompt-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && event.ctrlKey) { event.preventDefault(); submitPrompt(); }
  });
  $("nickname-form").addEventListener("submit", (event) => {
    event.preventDefault();
    send({ type: "set_nickname", nickname: $("nickname-input").value.trim() });
  });
  $("key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const response = await fetch("/api/v1/session", {
      method: "POST",
      headers: { Authorization: `Bearer ${$("key-input").value.trim()}` },
    });
    $("key-input").value = "";
    if (!response.ok) { notice("That API key was not accepted.", true); return; }
    state.socket.close(1000); // reconnect with the new session cookie
  });
  connect();
});
