// The page's connection to the broker's bus (`/ws`, SPEC §3): one socket, reconnecting with
// backoff (1 s doubling to 30 s), messages sent while away queued and sent on return, and
// every inbound message dispatched by its `type`. `request` pairs a message with the reply
// that names it in `response_to`.

const MAX_BACKOFF = 30_000;
const BANNED = 4003;

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
    this.state = "connecting";
    this.timer = null;
  }

  /** Call `handler(message)` for every message of `type` ("*" for all). */
  on(type, handler) {
    if (!this.handlers.has(type)) this.handlers.set(type, []);
    this.handlers.get(type).push(handler);
  }

  connect() {
    clearTimeout(this.timer);
    const socket = new WebSocket(this.url);
    this.socket = socket;
    this.setState("connecting");
    socket.onopen = () => {
      this.backoff = 1000;
      this.setState("connected");
      for (const message of this.pending.splice(0)) this.transmit(message);
    };
    socket.onmessage = (event) => {
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
      if (event.code === BANNED) {
        this.setState("banned");
        return;
      }
      this.setState("reconnecting", this.backoff);
      this.timer = setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF);
    };
  }

  /** Close and open again at once (after signing in: the new cookie takes over). */
  reconnect() {
    const old = this.socket;
    this.socket = null;
    if (old) old.close(1000);
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
    for (const handler of this.handlers.get(message.type) || []) handler(message);
    for (const handler of this.handlers.get("*") || []) handler(message, "in");
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

  /** Resolve with the first message for which `test(message)` holds. */
  waitFor(test) {
    return new Promise((resolve) => {
      const watcher = (message, direction) => {
        if (direction !== "in" || !test(message)) return;
        this.handlers.set("*", this.handlers.get("*").filter((h) => h !== watcher));
        resolve(message);
      };
      this.on("*", watcher);
    });
  }

  /** Resolve with the event that ends query `queryId`: its result, or an error. */
  finished(queryId) {
    const FINAL = ["query_result", "speech_result", "error"];
    return this.waitFor((m) => m.query_id === queryId &&
      (FINAL.includes(m.type) || (m.type === "transcription_result" && m.final !== false)));
  }

  /** Send `message` and resolve with the broker's direct reply to it. */
  request(message) {
    return new Promise((resolve) => {
      const id = this.send(message);
      this.waiting.set(id, resolve);
    });
  }
}
