// Speaking to the person: audio made by the realm's TTS workers (or a spoken answer the
// broker already made), one clip at a time, stopped at once by `stop()` ("shut up"). Where
// the realm has no TTS worker, the browser's own speech synthesis may stand in (a preference).
// A spoken answer may come sentence by sentence (`speech_chunk`) while it is being written:
// its clips are queued in their order as they come, each said once.

import { blobUrl } from "./dom.js";

const STREAMS_KEPT = 50; // answers whose chunks are remembered (a few numbers each)

export class Speaker extends EventTarget {
  constructor({ bus, canSpeak, browserVoice }) {
    super();
    this.bus = bus;
    this.canSpeak = canSpeak; // () → the realm has a TTS worker
    this.browserVoice = browserVoice; // () → the person allows the browser's voice
    // Two players taking turns: while one plays a clip, the other has already loaded the
    // next, so that sentences follow each other with no gap for loading.
    this.players = [new Audio(), new Audio()];
    this.player = 0; // the index of the one that plays next
    this.cache = new Map(); // phrase → object URL: the voice menu's lines are said often
    this.queue = []; // {url, owned?} or {text}, each with the `resolve` of the promise that waits on it
    this.current = null;
    this.generation = 0; // bumped by stop(): speech asked for before it is dropped
    this.streams = new Map(); // query id → the chunks of its spoken answer (see stream())
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

  // --- a spoken answer, sentence by sentence -----------------------------------------------

  /** What has come of query `queryId`'s spoken answer: `next` is the seq it waits for,
   * `held` the chunks that came before their predecessor, `said` the promise of its last
   * queued clip (null until one is), `begun` a promise resolved at its first clip. */
  stream(queryId) {
    let stream = this.streams.get(queryId);
    if (stream) return stream;
    let begin;
    const begun = new Promise((resolve) => { begin = resolve; });
    stream = { next: 0, held: new Map(), open: true, said: null, begun, begin };
    this.streams.set(queryId, stream);
    if (this.streams.size > STREAMS_KEPT) this.streams.delete(this.streams.keys().next().value);
    return stream;
  }

  /** A `speech_chunk`: queued once its predecessors are; a seq already had, or one of an
   * answer that was stopped or has ended, is dropped (nothing is said twice). Its audio is
   * decoded now, while earlier clips play, not when its turn comes. */
  chunk({ query_id: queryId, seq, audio }) {
    const stream = this.stream(queryId);
    if (!stream.open || seq < stream.next || stream.held.has(seq)) return;
    stream.held.set(seq, blobUrl(audio, "audio/wav"));
    while (stream.held.has(stream.next)) {
      const url = stream.held.get(stream.next);
      stream.held.delete(stream.next);
      stream.next += 1;
      stream.said = this.enqueue({ url, owned: true });
      stream.begin();
    }
  }

  /** Resolves when the first chunk of `queryId` is queued. */
  begun(queryId) { return this.stream(queryId).begun; }

  /** Whether chunks of `queryId` were queued: its whole audio need not be said again. */
  streamed(queryId) { return Boolean(this.streams.get(queryId)?.said); }

  /** The answer `queryId` is whole: later chunks are dropped. Resolves when its queued
   * clips have been said (or stopped). */
  async finished(queryId) {
    const stream = this.streams.get(queryId);
    if (!stream) return;
    this.close(stream);
    await stream.said;
  }

  close(stream) {
    stream.open = false;
    for (const url of stream.held.values()) URL.revokeObjectURL(url);
    stream.held.clear();
  }

  // --- playing -------------------------------------------------------------------------------

  enqueue(item) {
    return new Promise((resolve) => {
      this.queue.push({ ...item, resolve });
      if (!this.current) this.next();
      else this.preload();
    });
  }

  next() {
    const item = this.queue.shift() || null;
    this.current = item;
    this.dispatchEvent(new Event(item ? "start" : "idle"));
    if (!item) return;
    const done = () => {
      if (this.current !== item) return;
      this.release(item);
      item.resolve();
      this.next();
    };
    if (item.text) {
      const utterance = new SpeechSynthesisUtterance(item.text);
      utterance.onend = utterance.onerror = done;
      speechSynthesis.speak(utterance);
      return;
    }
    const audio = this.players[this.player];
    this.player = 1 - this.player;
    audio.onended = done;
    audio.onerror = done;
    if (audio.src !== item.url) audio.src = item.url; // else preload() has loaded it,
    else if (audio.currentTime > 0) audio.currentTime = 0; // or it said this phrase before
    audio.play().catch(done); // a browser that refuses to play must not stall the voice flow
    this.preload();
  }

  /** Load the queue's next clip into the player whose turn is next. */
  preload() {
    const coming = this.queue[0];
    const audio = this.players[this.player];
    if (coming?.url && audio.src !== coming.url) {
      audio.onended = audio.onerror = null; // a failure is met when its turn comes
      audio.src = coming.url;
      audio.load();
    }
  }

  /** A chunk's object URL is the speaker's own: freed once said. */
  release(item) {
    if (item.owned) URL.revokeObjectURL(item.url);
  }

  /** Stop speaking at once and forget what was queued, and the rest of any answer that is
   * still coming in chunks. */
  stop() {
    this.generation += 1;
    for (const audio of this.players) if (!audio.paused) audio.pause();
    if ("speechSynthesis" in window) speechSynthesis.cancel();
    for (const stream of this.streams.values()) if (stream.open) this.close(stream);
    const pending = [this.current, ...this.queue].filter(Boolean);
    this.queue = [];
    this.current = null;
    for (const item of pending) { this.release(item); item.resolve(); }
    this.dispatchEvent(new Event("idle"));
  }
}
