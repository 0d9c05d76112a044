// Getting pictures and sound from the person: images fitted for upload, the camera, and
// recording the microphone into one clip.

const MAX_SIDE = 1600; // workers fit images into far less; bigger only costs upload time

const MAX_BASE64 = 700_000; // well inside the bus's 1 MiB frame, with the rest of the message

/** An image file or blob → base64 JPEG no larger than MAX_SIDE on its long side, made
 * smaller until it fits in one bus message. */
export async function fittedImage(blob) {
  const bitmap = await createImageBitmap(blob);
  try {
    for (let side = MAX_SIDE; ; side = Math.round(side * 0.75)) {
      const scale = Math.min(1, side / Math.max(bitmap.width, bitmap.height));
      const canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(bitmap.width * scale));
      canvas.height = Math.max(1, Math.round(bitmap.height * scale));
      const context = canvas.getContext("2d");
      context.fillStyle = "#fff"; // transparent pixels become white, not black, in a JPEG
      context.fillRect(0, 0, canvas.width, canvas.height);
      context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      const base64 = canvas.toDataURL("image/jpeg", 0.85).split(",", 2)[1];
      if (base64.length <= MAX_BASE64 || side < 256) return base64;
    }
  } finally {
    bitmap.close();
  }
}

/** The camera, shown in `video`, until `stop()`. */
export class Camera {
  constructor(video) {
    this.video = video;
    this.stream = null;
  }

  async start() {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 1280, height: 720 }, audio: false });
    this.stop();
    this.stream = stream;
    try {
      this.video.srcObject = stream;
      await this.video.play();
      // The first frames of a camera are often dark while it adjusts its exposure.
      await new Promise((resolve) => setTimeout(resolve, 500));
    } catch (error) {
      this.stop();
      throw error;
    }
    if (this.stream !== stream) throw new Error("the camera was closed"); // closed meanwhile
  }

  /** The current frame as base64 JPEG. */
  async snap() {
    if (!this.video.videoWidth) throw new Error("the camera shows no picture yet");
    const canvas = document.createElement("canvas");
    canvas.width = this.video.videoWidth;
    canvas.height = this.video.videoHeight;
    canvas.getContext("2d").drawImage(this.video, 0, 0);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.9));
    return fittedImage(blob);
  }

  stop() {
    for (const track of this.stream?.getTracks() || []) track.stop();
    this.stream = null;
    this.video.srcObject = null;
  }
}

/** One recording from the microphone (press to start, press to stop), as a Blob. */
export class Recorder {
  constructor() {
    this.recorder = null;
    this.starting = false;
    this.chunks = [];
  }

  get recording() { return this.recorder !== null; }

  async start() {
    if (this.starting || this.recorder) return; // a second press while the browser asks
    this.starting = true;
    let stream = null;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } });
      this.chunks = [];
      const recorder = new MediaRecorder(stream);
      recorder.ondataavailable = (event) => { if (event.data.size) this.chunks.push(event.data); };
      recorder.start();
      this.recorder = recorder;
    } catch (error) {
      for (const track of stream?.getTracks() || []) track.stop();
      throw error;
    } finally {
      this.starting = false;
    }
  }

  /** Stop, release the microphone, and resolve with what was said. */
  stop() {
    const recorder = this.recorder;
    this.recorder = null;
    return new Promise((resolve) => {
      recorder.onstop = () => {
        for (const track of recorder.stream.getTracks()) track.stop();
        resolve(new Blob(this.chunks, { type: recorder.mimeType }));
      };
      recorder.stop();
    });
  }
}
