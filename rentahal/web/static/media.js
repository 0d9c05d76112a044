// Getting pictures and sound from the person: images fitted for upload, the camera, and
// recording the microphone into one clip.

const MAX_SIDE = 1600; // workers fit images into far less; bigger only costs upload time

/** An image file or blob → base64 JPEG no larger than MAX_SIDE on its long side. */
export async function fittedImage(blob) {
  const bitmap = await createImageBitmap(blob);
  const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  const context = canvas.getContext("2d");
  context.fillStyle = "#fff"; // transparent pixels become white, not black, in a JPEG
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  return canvas.toDataURL("image/jpeg", 0.9).split(",", 2)[1];
}

/** The camera, shown in `video`, until `stop()`. */
export class Camera {
  constructor(video) {
    this.video = video;
    this.stream = null;
  }

  async start() {
    this.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 1280, height: 720 }, audio: false });
    this.video.srcObject = this.stream;
    await this.video.play();
    // The first frames of a camera are often dark while it adjusts its exposure.
    await new Promise((resolve) => setTimeout(resolve, 500));
  }

  /** The current frame as base64 JPEG. */
  async snap() {
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
    this.chunks = [];
  }

  get recording() { return this.recorder !== null; }

  async start() {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } });
    this.chunks = [];
    this.recorder = new MediaRecorder(stream);
    this.recorder.ondataavailable = (event) => { if (event.data.size) this.chunks.push(event.data); };
    this.recorder.start();
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
