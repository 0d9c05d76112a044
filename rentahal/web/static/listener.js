// The microphone in voice mode: always listening, cut into utterances where the person
// pauses (an energy-based voice activity detector with an adaptive noise floor), each sent
// on as a 16 kHz WAV for the realm's STT worker to transcribe. Nothing is recorded between
// utterances, and the microphone is released when voice mode ends.

const RATE = 16_000;
const PRE_ROLL = 10; // blocks kept from before speech starts (~0.3 s): the first syllable
const START_BLOCKS = 2; // blocks above the threshold that start an utterance
// Blocks of quiet that end one: ~0.58 s. Every turn waits this long after the last word,
// so shorter is a faster reply. Measured with the test utterances (piper's voice, the page's
// 0.01 threshold): the longest pause inside one is 0.45 s (the commas of the long Roman
// Empire question); most have none over 0.2 s. 18 blocks keeps those whole with a margin and
// saves 0.22 s a turn over the 0.8 s it was. A person who pauses longer mid-sentence is cut
// in two, which costs little here: dictation adds each piece to the prompt until
// "Computer", and the other states hear one or two words at a time.
const END_BLOCKS = 18;
const MIN_SPEECH_BLOCKS = 5; // shorter bursts are clicks and coughs
const MAX_SECONDS = 20;
const PEAK_DECAY = 0.978; // per block: the recent peak halves in ~1 s

export class Listener extends EventTarget {
  constructor() {
    super();
    this.context = null;
    this.stream = null;
    this.reset();
    this.floor = 0.002;
    this.level = 0;
    // The loudest the microphone heard lately, decaying: what it heard just before speech
    // started goes with `speechstart` (as `before`), so that voice mode can tell a person
    // talking over the page from the page's own voice heard back (see voice.js).
    this.peak = 0;
    this.before = 0;
  }

  reset() {
    this.blocks = [];
    this.speaking = false;
    this.loud = 0;
    this.quiet = 0;
    this.speechBlocks = 0;
  }

  get active() { return this.context !== null; }

  async start() {
    if (this.stream) return;
    // Echo cancellation keeps the page's own voice out of what it hears.
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    try {
      this.context = new AudioContext();
      await this.context.resume();
      await this.context.audioWorklet.addModule("/static/capture-worklet.js");
      const source = this.context.createMediaStreamSource(this.stream);
      const capture = new AudioWorkletNode(this.context, "capture");
      capture.port.onmessage = (event) => this.take(event.data);
      source.connect(capture);
      this.reset();
    } catch (error) {
      this.stop(); // the microphone is not left on for nothing
      throw error;
    }
  }

  stop() {
    for (const track of this.stream?.getTracks() || []) track.stop();
    this.context?.close();
    this.context = null;
    this.stream = null;
    this.reset();
  }

  take(block) {
    let sum = 0;
    for (const sample of block) sum += sample * sample;
    const rms = Math.sqrt(sum / block.length);
    this.level = rms;
    const threshold = Math.max(0.01, this.floor * 4);
    const loud = rms > threshold;
    if (!this.speaking && this.loud === 0) this.before = this.peak;
    this.peak = Math.max(rms, this.peak * PEAK_DECAY);
    if (!this.speaking) {
      // The floor follows the room's quiet: down at once, up slowly.
      this.floor = rms < this.floor ? rms : this.floor + (rms - this.floor) * 0.02;
      this.blocks.push(block);
      if (this.blocks.length > PRE_ROLL + START_BLOCKS) this.blocks.shift();
      this.loud = loud ? this.loud + 1 : 0;
      if (this.loud >= START_BLOCKS) {
        this.speaking = true;
        this.quiet = 0;
        this.speechBlocks = this.loud;
        this.dispatchEvent(new CustomEvent("speechstart", { detail: { level: rms, before: this.before } }));
      }
      return;
    }
    this.blocks.push(block);
    if (loud) { this.quiet = 0; this.speechBlocks += 1; } else this.quiet += 1;
    const seconds = (this.blocks.length * block.length) / this.context.sampleRate;
    if (this.quiet >= END_BLOCKS || seconds >= MAX_SECONDS) this.finish();
  }

  finish() {
    const blocks = this.blocks;
    const enough = this.speechBlocks >= MIN_SPEECH_BLOCKS;
    this.reset();
    this.dispatchEvent(new Event("speechend"));
    if (!enough) return;
    const wav = encodeWav(resample(concat(blocks), this.context.sampleRate, RATE), RATE);
    this.dispatchEvent(new CustomEvent("utterance", { detail: { wav } }));
  }
}

function concat(blocks) {
  const out = new Float32Array(blocks.reduce((n, b) => n + b.length, 0));
  let offset = 0;
  for (const block of blocks) { out.set(block, offset); offset += block.length; }
  return out;
}

/** Linear-interpolated resampling; speech recognisers want 16 kHz. */
function resample(samples, from, to) {
  if (from === to) return samples;
  const out = new Float32Array(Math.floor((samples.length * to) / from));
  const step = from / to;
  for (let i = 0; i < out.length; i++) {
    const position = i * step;
    const left = Math.floor(position);
    const right = Math.min(left + 1, samples.length - 1);
    out[i] = samples[left] + (samples[right] - samples[left]) * (position - left);
  }
  return out;
}

/** Mono 16-bit PCM WAV, as a base64 string for the bus. */
function encodeWav(samples, rate) {
  const buffer = new ArrayBuffer(44 + samples.length * 2);
  const view = new DataView(buffer);
  const text = (offset, value) => { for (let i = 0; i < value.length; i++) view.setUint8(offset + i, value.charCodeAt(i)); };
  text(0, "RIFF"); view.setUint32(4, 36 + samples.length * 2, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, rate * 2, true); view.setUint16(32, 2, true); view.setUint16(34, 16, true);
  text(36, "data"); view.setUint32(40, samples.length * 2, true);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(44 + i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  const bytes = new Uint8Array(buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}
