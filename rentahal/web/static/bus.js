// The page's connection to the broker's bus (`/ws`, SPEC §3): one socket, reconnecting with
// backoff (1 s doubling to 30 s), messages sent while away queued and sent on return, and
// every inbound message dispatched by its `type`. `request` pairs a message with the reply
// that names it in `response_to`; `run` also waits for the query it started to end.

const MAX_BACKOFF = 30_000;
const BANNED = 4003;
const SILENT_LIMIT = 60_000; // the broker pings every 25 s: a minute of nothing is a dead link
const QUERY_LIMIT = 180_000; // longest wait for a query the page runs for itself

const lost = (code, message) => ({ type: "error", code, message });

export class Bus extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.socket = null;
    this.backoff = 1000;
    this.nextId = 1;
    this.pending = [];
    this.waiting = new Map();
    this.handlers = new Map();
    this.own = new Set(); // queries the page runs for itself (dictation, voice): no cards
    this.state = "connecting";
    this.timer = null;
    this.heard = Date.now();
    setInterval(() => this.checkAlive(), 10_000);
  }

  /** Call `handler(message)` for every message of `type` ("*" for all). */
  on(type, handler) {
    if (!this.handlers.has(type)) this.handlers.set(type, []);
    this.handlers.get(type).push(handler);
  }

  off(type, handler) {
    this.handlers.set(type, (this.handlers.get(type) || []).filter((h) => h !== handler));
  }

  connect() {
    clearTimeout(this.timer);
    const socket = new WebSocket(this.url);
    this.socket = socket;
    this.setState("connecting");
    socket.onopen = () => {
      this.backoff = 1000;
      this.heard = Date.now();
      this.setState("connected");
      for (const message of this.pending.splice(0)) this.transmit(message);
    };
    socket.onmessage = (event) => {
      this.heard = Date.now();
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return; // the broker only sends JSON; a broken frame is not worth stopping for
      }
      this.dispatch(message);
    };
    socket.onclose = (event) => {
      if (socket !== this.socket) return;
      this.abandon();
      if (event.code === BANNED) {
        this.setState("banned");
        return;
      }
      this.setState("reconnecting", this.backoff);
      this.timer = setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF);
    };
  }

  /** Replies to messages that went out on a connection now gone will never come. */
  abandon() {
    const queued = new Set(this.pending.map((message) => message.id));
    for (const [id, resolve] of this.waiting) {
      if (queued.has(id)) continue;
      this.waiting.delete(id);
      resolve(lost("disconnected", "The connection was lost; please try again."));
    }
  }

  /** A socket that says nothing for a minute is dead though it looks open (a phone that
   * slept, a changed network): close it and reconnect. */
  checkAlive() {
    if (this.state === "connected" && Date.now() - this.heard > SILENT_LIMIT) this.socket.close();
  }

  /** Close and open again at once (after signing in: the new cookie takes over). */
  reconnect() {
    const old = this.socket;
    this.socket = null;
    if (old) old.close(1000);
    this.abandon();
    this.connect();
  }

  setState(state, delay) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, delay } }));
  }

  dispatch(message) {
    const reply = message.response_to !== undefined && this.waiting.get(String(message.response_to));
    if (reply) {
      // Its sender handles this reply (and any error in it) itself.
      Object.defineProperty(message, "awaited", { value: true });
      this.waiting.delete(String(message.response_to));
      reply(message);
    }
    for (const handler of [...(this.handlers.get(message.type) || []), ...(this.handlers.get("*") || [])]) {
      try {
        handler(message, "in");
      } catch (error) {
        console.error(`handling ${message.type}:`, error); // one bad handler must not stop the rest
      }
    }
  }

  transmit(message) {
    this.socket.send(JSON.stringify(message));
    for (const handler of this.handlers.get("*") || []) handler(message, "out");
  }

  /** Send `message` (now, or once connected) and return the `id` it was given. */
  send(message) {
    message.id = String(this.nextId++);
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.transmit(message);
    else this.pending.push(message);
    return message.id;
  }

  /** Send `message` and resolve with the broker's direct reply to it. */
  request(message) {
    return new Promise((resolve) => {
      const id = this.send(message);
      this.waiting.set(id, resolve);
    });
  }

  /** Resolve with the event that ends query `queryId` (its result, or an error), or a
   * `timeout` error after `limit` ms. A result finished while the page was reconnecting
   * still arrives: the broker delivers it on the new connection. */
  finished(queryId, limit = QUERY_LIMIT) {
    return new Promise((resolve) => {
      const done = (message) => {
        clearTimeout(timer);
        this.off("*", watcher);
        resolve(message);
      };
      const watcher = (message, direction) => {
        if (direction !== "in" || message.query_id !== queryId) return;
        if (message.is_final === true) done(message); // the broker marks the event that ends a query
      };
      const timer = setTimeout(() => done(lost("timeout", "No answer came in time.")), limit);
      this.on("*", watcher);
    });
  }

  /** Run a query for the page itself (a transcript, spoken feedback): no card is shown for
   * it. Resolves with its final event, or the error that stopped it. */
  async run(message) {
    const accepted = await this.request(message);
    if (accepted.type !== "query_accepted") return accepted;
    this.own.add(accepted.query_id);
    const outcome = await this.finished(accepted.query_id);
    this.own.delete(accepted.query_id);
    return outcome;
  }
}
