// Speaking to the person: audio made by the realm's TTS workers (or a spoken answer the
// broker already made), one clip at a time, stopped at once by `stop()` ("shut up"). Where
// the realm has no TTS worker, the browser's own speech synthesis may stand in (a preference).

import { blobUrl } from "./dom.js";

export class Speaker extends EventTarget {
  constructor({ bus, canSpeak, browserVoice }) {
    super();
    this.bus = bus;
    this.canSpeak = canSpeak; // () → the realm has a TTS worker
    this.browserVoice = browserVoice; // () → the person allows the browser's voice
    this.audio = new Audio();
    this.cache = new Map(); // phrase → object URL: the voice menu's lines are said often
    this.queue = []; // {url} or {text}, each with the `resolve` of the promise that waits on it
    this.current = null;
    this.generation = 0; // bumped by stop(): speech asked for before it is dropped
  }

  get speaking() { return this.current !== null; }

  /** Say `text`; resolves when it has been said, or stopped. */
  async say(text) {
    const generation = this.generation;
    const url = await this.synthesise(text);
    if (generation !== this.generation) return;
    if (url) return this.enqueue({ url });
    if (this.browserVoice() && "speechSynthesis" in window) return this.enqueue({ text });
  }

  async synthesise(text) {
    if (this.cache.has(text)) return this.cache.get(text);
    if (!this.canSpeak()) return null;
    const spoken = await this.bus.run({ type: "text_to_speech", text });
    if (spoken.type !== "speech_result") return null;
    const url = blobUrl(spoken.audio, "audio/wav");
    if (text.length < 120) this.cache.set(text, url);
    return url;
  }

  /** Play the audio at `url`, after whatever is playing. */
  play(url) { return this.enqueue({ url }); }

  enqueue(item) {
    return new Promise((resolve) => {
      this.queue.push({ ...item, resolve });
      if (!this.current) this.next();
    });
  }

  next() {
    const item = this.queue.shift() || null;
    this.current = item;
    this.dispatchEvent(new Event(item ? "start" : "idle"));
    if (!item) return;
    const done = () => { if (this.current === item) { item.resolve(); this.next(); } };
    if (item.text) {
      const utterance = new SpeechSynthesisUtterance(item.text);
      utterance.onend = utterance.onerror = done;
      speechSynthesis.speak(utterance);
      return;
    }
    this.audio.onended = done;
    this.audio.onerror = done;
    this.audio.src = item.url;
    this.audio.play().catch(done); // a browser that refuses to play must not stall the voice flow
  }

  /** Stop speaking at once and forget what was queued. */
  stop() {
    this.generation += 1;
    this.audio.pause();
    if ("speechSynthesis" in window) speechSynthesis.cancel();
    const pending = [this.current, ...this.queue].filter(Boolean);
    this.queue = [];
    this.current = null;
    for (const item of pending) item.resolve();
    this.dispatchEvent(new Event("idle"));
  }
}
