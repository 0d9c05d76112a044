// The query composer: type, worker/pool/model picker fed by the broker, prompt, an image
// (drop, paste, file or camera) for vision, a recording for speech, and submitting.

import { $, option, toBase64 } from "./dom.js";
import { Camera, Recorder, fittedImage } from "./media.js";
import { describeError } from "./results.js";

const ANY = { chat: "Any chat worker", vision: "Any vision worker", imagine: "Any image worker", speech: "Any chat worker" };

export class Composer {
  constructor({ bus, results, notice, prefs }) {
    this.bus = bus;
    this.results = results;
    this.notice = notice;
    this.prefs = prefs;
    this.workers = [];
    this.pools = { pools: [], realms: [], realm_types: {} };
    this.image = null;
    this.recorder = new Recorder();
    this.camera = new Camera($("camera-video"));
    this.wire();
    this.typeChanged();
  }

  get type() { return $("query-type").value; }

  wire() {
    $("query-form").addEventListener("submit", (event) => { event.preventDefault(); this.submit(); });
    $("query-type").addEventListener("change", () => { this.typeChanged(); this.prefs.save({ queryType: this.type }); });
    $("model-select").addEventListener("change", () => {
      this.wanted = $("model-select").value;
      this.prefs.save({ model: this.wanted });
    });
    $("speak-answers").addEventListener("change", () => this.prefs.save({ speak: $("speak-answers").checked }));
    $("record-button").addEventListener("click", () => this.toggleRecording());

    const zone = $("image-drop-zone");
    zone.addEventListener("click", () => $("image-upload").click());
    zone.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("image-upload").click(); }
    });
    $("image-upload").addEventListener("change", () => this.takeImage($("image-upload").files[0]));
    for (const type of ["dragenter", "dragover"]) {
      zone.addEventListener(type, (event) => { event.preventDefault(); zone.classList.add("over"); });
    }
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      this.takeImage(event.dataTransfer.files[0]);
    });
    // Pasting an image anywhere on the page picks it for a vision query.
    document.addEventListener("paste", (event) => {
      const file = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
      if (!file) return;
      event.preventDefault();
      this.takeImage(file);
    });
    $("image-clear").addEventListener("click", () => this.setImage(null));
    $("camera-button").addEventListener("click", () => this.openCamera());
    $("camera-snap").addEventListener("click", async () => {
      try {
        this.setImage(await this.camera.snap());
      } catch {
        this.notice("The camera gave no picture; please try again.", "error");
      } finally {
        this.closeCamera();
      }
    });
    $("camera-close").addEventListener("click", () => this.closeCamera());
  }

  restore(prefs) {
    if (prefs.queryType) $("query-type").value = prefs.queryType;
    $("speak-answers").checked = Boolean(prefs.speak);
    this.wanted = prefs.model || ""; // chosen once the broker lists it
    this.typeChanged();
  }

  typeChanged() {
    const type = this.type;
    if (type !== "vision") this.closeCamera();
    $("image-field").hidden = type !== "vision";
    $("prompt-input").placeholder = {
      chat: "Ask anything…",
      vision: "What should it tell you about the image? (optional)",
      imagine: "Describe the picture to make…",
      speech: "Press Record and ask aloud; your words appear here.",
    }[type];
    $("record-button").textContent = type === "speech" ? "Record question" : "Record";
    this.renderPicker();
  }

  setWorkers(workers) { this.workers = workers; this.renderPicker(); }
  setPools(pools) { this.pools = pools; this.renderPicker(); }

  /** Any worker of the type, then pools and realms (`$NAME`) for it, then each model. */
  renderPicker() {
    const select = $("model-select");
    const chosen = this.wanted ?? select.value;
    const type = this.type === "speech" ? "chat" : this.type;
    select.replaceChildren(option("", ANY[this.type]));
    for (const pool of this.pools.pools.filter((p) => p.type === type)) {
      select.append(option(pool.name, `${pool.name} (pool of ${pool.members.length})`));
    }
    for (const realm of this.pools.realms.filter((r) => (this.pools.realm_types[r] || []).includes(type))) {
      select.append(option(realm, `${realm} (realm)`));
    }
    for (const worker of this.workers.filter((w) => w.capabilities.includes(type))) {
      const down = worker.is_blacklisted ? " (down)" : "";
      for (const name of worker.models.length ? worker.models : [worker.name]) {
        select.append(option(name, `${name} — ${worker.name}${down}`));
      }
    }
    select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "";
  }

  async takeImage(file) {
    if (!file) return;
    if (!file.type.startsWith("image/")) { this.notice("That file is not an image.", "error"); return; }
    try {
      this.setImage(await fittedImage(file));
      if (this.type !== "vision") { $("query-type").value = "vision"; this.typeChanged(); }
    } catch {
      this.notice("That image could not be read.", "error");
    }
  }

  setImage(base64) {
    this.image = base64;
    const preview = $("image-preview");
    preview.hidden = !base64;
    preview.src = base64 ? `data:image/jpeg;base64,${base64}` : "";
    $("image-clear").hidden = !base64;
    $("image-upload").value = "";
  }

  async openCamera() {
    $("camera").hidden = false;
    $("camera-snap").disabled = true; // until there is a picture to take
    try {
      await this.camera.start();
      $("camera-snap").disabled = false;
      $("camera-snap").focus();
    } catch {
      if ($("camera").hidden) return; // closed while the browser asked
      this.closeCamera();
      this.notice("The camera could not be opened. Please allow the page to use it.", "error");
    }
  }

  closeCamera() {
    const wasOpen = !$("camera").hidden;
    this.camera.stop();
    $("camera").hidden = true;
    if (wasOpen) $("camera-button").focus();
  }

  /** Record from the microphone; a speech query sends the recording, otherwise the words
   * are transcribed by the realm's STT worker into the prompt. */
  async toggleRecording() {
    const button = $("record-button");
    if (this.recorder.starting) return; // the browser is still asking for the microphone
    if (!this.recorder.recording) {
      try {
        await this.recorder.start();
      } catch {
        this.notice("The microphone could not be opened. Please allow the page to use it.", "error");
        return;
      }
      button.classList.add("recording");
      const started = Date.now();
      const tick = () => { button.textContent = `Stop recording (${Math.floor((Date.now() - started) / 1000)} s)`; };
      tick();
      this.ticker = setInterval(tick, 250);
      return;
    }
    clearInterval(this.ticker);
    const clip = await this.recorder.stop();
    button.classList.remove("recording");
    this.typeChanged();
    const audio = await toBase64(clip);
    if (this.type === "speech") {
      this.send({ prompt: "(spoken question)", query_type: "speech", audio });
      return;
    }
    const heard = await this.bus.run({ type: "speech_to_text", audio });
    if (heard.type === "error") { this.notice(`Error: ${describeError(heard)}`, "error"); return; }
    if (heard.type === "transcription_result") {
      const input = $("prompt-input");
      input.value = [input.value.trim(), heard.text.trim()].filter(Boolean).join(" ");
      input.focus();
    }
  }

  submit() {
    const prompt = $("prompt-input").value.trim();
    const type = this.type;
    if (type === "vision" && !this.image) { this.notice("Choose, drop, paste or take a picture for a vision query.", "error"); return; }
    if (type === "speech") { this.notice("Press “Record question” and ask aloud.", "error"); return; }
    if (!prompt && type !== "vision") { this.notice("Please type a prompt first.", "error"); $("prompt-input").focus(); return; }
    this.send({ prompt: prompt || "Describe this image in detail", query_type: type, image: type === "vision" ? this.image : undefined });
    $("prompt-input").value = "";
    if (type === "vision") this.setImage(null);
  }

  send(query) {
    const options = $("speak-answers").checked && query.query_type !== "imagine" ? { speak: true } : {};
    const id = this.bus.send({
      type: "submit_query",
      query: { model_type: "worker_node", model_name: $("model-select").value, options, ...query },
    });
    this.results.asked(id, query.prompt, query.query_type);
  }
}
