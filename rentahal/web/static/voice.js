// Voice mode: the seed's wake-word assistant as an explicit state machine (SPEC §7).
//
//   off → listening ("Computer") → menu (a mode word) → dictating (… "Computer" sends)
//       → working → speaking → listening …            vision: menu → looking → working
//
// The microphone is cut into utterances (listener.js) which the realm's STT worker
// transcribes; the broker spots the wake and command words in each transcript
// (`speech_to_text {spot: true}` → `transcription_result.spotted`). Speech that began while
// the page itself was talking counts only for "shut up": the page must not obey its own voice;
// but a person who starts talking over a spoken answer interrupts it (barge-in, below).

import { $, blobUrl } from "./dom.js";
import { Camera } from "./media.js";

const SILENCE_MS = 15_000; // a state's patience; two silences in a row give up on it
const NO_DICTATION = new Set(["vision", "weather", "gmail"]); // modes that act at once
const WAITING = new Set(["listening", "menu", "dictating"]); // states with a silence timer
// Barge-in: while an answer is spoken, a person who starts talking stops it at once (the
// listener's `speechstart`, ~64 ms into the speech), and what they say is heard as the next
// utterance. The page asks for echo cancellation, which keeps its own voice out of the
// microphone; where a device has none, its voice comes back and must not interrupt itself.
// So speech counts as barge-in only (1) once the answer has been playing BARGE_IN_AFTER_MS,
// so that the listener has heard the page's voice for a while, and (2) when it starts
// BARGE_IN_LOUDER times louder than the loudest the microphone heard just before (the
// listener's decaying peak, ~1 s half-life): with echo cancellation that peak is the room's
// quiet and any speech passes; without it, it is the echo, which the page's next sentence
// does not outdo, while a person close to the device talking over it does. Speech that fails
// the test (or that the listener hears as going on from an echo it is already cutting) is
// treated as before: an echo, obeyed only for "shut up", so that such a device is no worse
// off than it was. The page's short prompts ("Ready. Say Computer.", the menu) are not
// interrupted: they are over in a moment, and what is said over them is not obeyed.
const BARGE_IN_AFTER_MS = 400;
const BARGE_IN_LOUDER = 2;
const LABELS = {
  off: "Off",
  starting: "Starting…",
  listening: "Listening for “Computer”",
  menu: "Say a mode",
  dictating: "Dictating",
  looking: "Looking through the camera",
  working: "Working on it",
  speaking: "Speaking (say “Shut up” to stop)",
};

export class VoiceMode {
  constructor({ bus, listener, speaker, results, intents, autospeak, notice }) {
    this.bus = bus;
    this.listener = listener;
    this.speaker = speaker;
    this.results = results;
    this.intents = intents; // () → the realm's available intents: the menu
    this.autospeak = autospeak; // () → answers are spoken in voice mode
    this.notice = notice;
    this.camera = new Camera(document.createElement("video"));
    this.state = "off";
    this.mode = null;
    this.prompt = "";
    this.silences = 0;
    this.timer = null;
    this.chain = Promise.resolve(); // transcripts are handled one at a time, in order
    this.session = 0; // bumped by start and stop: work begun before is dropped after an await
    this.turn = 0; // bumped by each question and each interruption: an older answer is dropped
    this.asking = null; // the query of the answer being written, while it is
    this.spokeAt = 0; // when the answer began to be spoken (performance.now())
    listener.addEventListener("speechstart", (event) => this.speechStarted(event.detail));
    listener.addEventListener("speechend", () => { if (WAITING.has(this.state)) this.armTimer(); });
    listener.addEventListener("utterance", (event) => this.utterance(event.detail.wav));
    speaker.addEventListener("start", () => this.show());
    speaker.addEventListener("idle", () => this.show());
  }

  get active() { return this.state !== "off"; }

  toggle() { return this.active ? this.stop("Voice mode off.") : this.start(); }

  async start() {
    const session = ++this.session;
    this.set("starting");
    try {
      await this.listener.start();
    } catch {
      if (session !== this.session) return;
      this.set("off");
      this.notice("Voice mode needs the microphone. Please allow the page to use it.", "error");
      return;
    }
    if (session !== this.session) { this.listener.stop(); return; } // stopped while asking
    this.meter();
    this.listen();
    await this.speaker.say("Ready. Say Computer.");
  }

  async stop(farewell) {
    this.session += 1;
    this.asking = null; // its text goes on to its card; the turn is dropped (`session`)
    clearTimeout(this.timer);
    this.speaker.stop();
    this.camera.stop();
    this.listener.stop();
    this.set("off");
    if (farewell) this.notice(farewell, "info");
  }

  // --- states ------------------------------------------------------------------------------

  set(state) {
    this.state = state;
    clearTimeout(this.timer);
    if (WAITING.has(state)) this.armTimer();
    this.show();
  }

  show() {
    const speaking = this.speaker.speaking && this.active;
    const shown = speaking ? "speaking" : this.state;
    let label = LABELS[shown];
    if (shown === "menu") label = this.menuLine();
    if (shown === "dictating") label = `Dictating a ${this.mode} prompt (say “Computer” to send)`;
    $("voice-state").dataset.state = $("voice-badge").dataset.state = shown;
    $("voice-state").textContent = label;
    $("voice-badge").textContent = `Voice: ${LABELS[shown]}`; // short: it must fit a phone's header
    $("voice-badge").setAttribute("aria-hidden", String(!this.active));
    $("voice-button").textContent = this.active ? "Stop voice mode" : "Start voice mode";
    $("voice-button").classList.toggle("active", this.active);
    $("voice-prompt").textContent = this.state === "dictating" ? (this.prompt || "…") : "—";
  }

  listen() { this.silences = 0; this.set("listening"); }

  armTimer() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.silent(), SILENCE_MS);
  }

  /** 15 s without a word: ask again, and after a second silence step back. */
  async silent() {
    this.silences += 1;
    const twice = this.silences >= 2;
    if (this.state === "listening") {
      if (twice) return this.stop("Voice mode ended after 30 s of silence.");
      this.armTimer();
    } else if (this.state === "menu") {
      if (twice) { this.listen(); return; }
      this.armTimer();
      await this.speaker.say(this.menuLine());
    } else if (this.state === "dictating") {
      if (twice) { this.silences = 0; this.set("menu"); await this.speaker.say(`Back to the menu. ${this.menuLine()}`); return; }
      this.armTimer();
      await this.speaker.say("Still listening. Say Computer to send.");
    }
  }

  menuLine() { return `Say a mode: ${[...this.intents().map((intent) => intent.name), "goodbye"].join(", ")}.`; }

  /** The intent a spotted word names: its name or one of its menu words ("email"). */
  modeOf(word) {
    return this.intents().find((intent) => intent.name === word || intent.triggers.includes(word))?.name;
  }

  // --- hearing -----------------------------------------------------------------------------

  speechStarted({ level, before }) {
    // (In "speaking" the page may be silent a moment, waiting for the next sentence.)
    const bargeIn = this.state === "speaking" &&
      performance.now() - this.spokeAt >= BARGE_IN_AFTER_MS && level > before * BARGE_IN_LOUDER;
    if (bargeIn) { this.interrupt(); this.listen(); }
    this.startedWhileSpeaking = this.speaker.speaking;
    clearTimeout(this.timer); // no silence while the person talks; speechend re-arms it
  }

  /** "Shut up" (said, the Stop speaking button or Esc): silence, and an answer on its way
   * is dropped, so that voice mode listens again at once. */
  shutUp() {
    if (this.state === "speaking" || this.state === "working") { this.interrupt(); this.listen(); }
    else this.speaker.stop();
  }

  /** Stop the answer being worked on or spoken: its audio at once, and its query if it is
   * still running (the broker then stops writing and speaking it; chunks still on their way
   * are dropped by the speaker, which stop() closed them to). */
  interrupt() {
    this.turn += 1;
    this.speaker.stop();
    if (this.asking) this.act(this.bus.request({ type: "cancel_query", query_id: this.asking }));
    this.asking = null;
  }

  utterance(wav) {
    const echo = this.startedWhileSpeaking;
    this.chain = this.chain.then(() => this.transcribe(wav, echo)).catch((error) => console.warn(error));
  }

  async transcribe(wav, echo) {
    if (!this.active) return;
    const heard = await this.bus.run({ type: "speech_to_text", audio: wav, spot: true });
    if (heard.code === "no_worker") { await this.stop("Voice mode needs a speech-to-text worker in this realm."); return; }
    if (heard.type === "error") { this.results.error(heard); return; }
    if (heard.type !== "transcription_result" || !this.active) return;
    const text = heard.text.trim();
    const spotted = heard.spotted || [];
    if (!text) return;
    $("voice-heard").textContent = text;
    this.hear(text, spotted, echo);
  }

  /** One transcript, with the command words the broker spotted in it. Decisions (the state)
   * are made here, in order; what follows from them (speaking, asking) runs on by itself, so
   * that "shut up" is heard while an answer is being spoken. */
  hear(text, spotted, echo) {
    const said = (word) => spotted.includes(word);
    if (said("shut up")) { this.shutUp(); return; }
    if (echo || this.state === "speaking") return;
    if (said("goodbye") && this.state !== "dictating") { this.act(this.stop("Goodbye.")); return; }
    this.silences = 0;
    if (this.state === "listening" && said("computer")) {
      // "Computer, chat" wakes and picks the mode in one breath. The answer to a bare
      // "Computer" is short: speech that starts while the page talks is not obeyed, so a
      // long menu would swallow the mode of a person who knows it; hesitating says it all.
      if (!this.pick(spotted)) { this.set("menu"); this.act(this.speaker.say("Yes? Say a mode.")); }
    } else if (this.state === "menu") {
      if (!this.pick(spotted)) this.act(this.speaker.say(this.menuLine()));
    } else if (this.state === "dictating") {
      this.dictate(text, spotted);
    } // looking, working: nothing to say yet
  }

  /** Enter the first mode named in `spotted`; false when none was. */
  pick(spotted) {
    const mode = spotted.map((word) => this.modeOf(word)).find(Boolean);
    if (!mode) return false;
    this.mode = mode;
    this.prompt = "";
    if (mode === "vision") this.act(this.look());
    else if (NO_DICTATION.has(mode)) this.act(this.ask(mode, mode));
    else {
      this.set("dictating");
      this.act(this.speaker.say(`${mode[0].toUpperCase()}${mode.slice(1)}. Speak, then say Computer.`));
    }
    return true;
  }

  dictate(text, spotted) {
    if (spotted.includes("backspace")) {
      this.prompt = this.prompt.split(" ").slice(0, -1).join(" ");
      this.show();
      this.act(this.speaker.say(this.prompt ? "Erased the last word." : "The prompt is empty."));
      return;
    }
    if (spotted.includes("cancel")) { this.prompt = ""; this.set("menu"); this.act(this.speaker.say("Cancelled. Say a mode.")); return; }
    // Words before "Computer" in the same breath belong to the prompt.
    const [before] = text.split(/\bcomputer'?s?\b/i);
    const words = before.replace(/[\s,.!?;:]+$/, "").trim();
    if (words) this.prompt = `${this.prompt} ${words}`.trim();
    this.show();
    if (!spotted.includes("computer")) return;
    if (!this.prompt) { this.act(this.speaker.say("I did not hear a prompt. Speak, then say Computer.")); return; }
    this.act(this.ask(this.mode, this.prompt));
  }

  /** Let an action run on; its failure is logged, never left unhandled. */
  act(promise) {
    promise.catch((error) => console.warn("voice mode:", error));
  }

  // --- acting ------------------------------------------------------------------------------

  async look() {
    this.set("looking");
    let image;
    try {
      await this.camera.start();
      image = await this.camera.snap();
    } catch {
      if (this.state !== "looking") return;
      this.listen();
      await this.speaker.say("I could not open the camera.");
      return;
    } finally {
      this.camera.stop();
    }
    if (this.state !== "looking") return; // stopped or shut up meanwhile
    const snapshot = $("voice-snapshot");
    snapshot.src = `data:image/jpeg;base64,${image}`;
    snapshot.hidden = false;
    await this.ask("vision", "Describe this image in detail", { image });
  }

  /** Send the words to the intent, show the answer, speak it, and listen again. */
  async ask(intent, text, extra = {}) {
    const turn = ++this.turn;
    const now = (state) => this.active && this.turn === turn && this.state === state; // else stopped or interrupted
    this.set("working");
    const speak = this.autospeak();
    const reply = await this.bus.request({ type: "intent", intent, text: text.slice(0, 4000), speak, ...extra });
    if (!now("working")) return;
    if (reply.type === "error") {
      this.results.error(reply);
      this.listen();
      await this.speaker.say(reply.message); // the broker's words say what to do ("connect Gmail first")
      return;
    }
    let spoken = null;
    if (reply.query_id) {
      this.results.setPrompt(reply.query_id, reply.prompt, reply.intent);
      // A spoken answer may come sentence by sentence (app.js hands the speaker the chunks
      // of `asking`): speaking starts at the first, and ends when the last has been said.
      this.asking = reply.query_id;
      const finished = this.bus.finished(reply.query_id);
      const first = await Promise.race([finished, this.speaker.begun(reply.query_id)]);
      if (!now("working")) return;
      if (!first) this.speaking();
      const answer = await finished;
      if (this.turn !== turn) return;
      this.asking = null;
      if (this.speaker.streamed(reply.query_id)) {
        await this.speaker.finished(reply.query_id);
        if (now("speaking") && answer.type === "error") await this.speaker.say(`Sorry: ${answer.message}`);
        if (now("speaking")) this.listen();
        return;
      }
      if (!now("working")) return;
      if (answer.type === "error") spoken = { text: `Sorry: ${answer.message}` };
      else if (answer.audio) spoken = { audio: answer.audio };
      else if (answer.result_type === "image") spoken = { text: "Here is your picture." };
      else spoken = { text: answer.result };
    } else {
      this.results.answered(reply.intent, reply.prompt, reply.answer);
      if (reply.speech_query_id) {
        this.bus.own.add(reply.speech_query_id);
        const audio = await this.bus.finished(reply.speech_query_id);
        this.bus.own.delete(reply.speech_query_id);
        spoken = audio.type === "speech_result" ? { audio: audio.audio } : { text: reply.answer };
      } else spoken = { text: reply.answer };
    }
    if (!now("working")) return;
    this.speaking();
    if (spoken.audio) await this.speaker.play(blobUrl(spoken.audio, "audio/wav"));
    else if (speak) await this.speaker.say(spoken.text);
    if (now("speaking")) this.listen();
  }

  speaking() {
    this.spokeAt = performance.now();
    this.set("speaking");
  }

  /** The microphone's level on the little canvas, while voice mode is on. */
  meter() {
    const canvas = $("voice-level");
    const context = canvas.getContext("2d");
    const draw = () => {
      if (!this.active) { context.clearRect(0, 0, canvas.width, canvas.height); return; }
      const level = Math.min(1, this.listener.level * 8);
      context.clearRect(0, 0, canvas.width, canvas.height);
      context.fillStyle = getComputedStyle(canvas).color;
      context.fillRect(0, 0, canvas.width * level, canvas.height);
      requestAnimationFrame(draw);
    };
    requestAnimationFrame(draw);
  }
}
