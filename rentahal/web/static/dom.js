// Small DOM helpers shared by every part of the page. Text always goes in as textContent:
// nothing a user, a worker or the broker says is ever parsed as HTML.

export const $ = (id) => document.getElementById(id);

/** `el("li", {class: "x", text: "hi", dataset: {id: 1}, attrs: {title: "t"}}, ...children)` */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  if (props.class) node.className = props.class;
  if (props.text !== undefined && props.text !== null) node.textContent = String(props.text);
  for (const [key, value] of Object.entries(props.attrs || {})) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  Object.assign(node.dataset, props.dataset || {});
  for (const [type, handler] of Object.entries(props.on || {})) node.addEventListener(type, handler);
  node.append(...children.filter((child) => child !== null && child !== undefined && child !== false));
  return node;
}

export function option(value, label, selected = false) {
  const node = el("option", { text: label });
  node.value = value;
  node.selected = selected;
  return node;
}

/** Seconds with two decimals, as the seed shows processing time. */
export const seconds = (value) => `${(value || 0).toFixed(2)} s`;
/** Dollars with four decimals, as the seed shows cost. */
export const dollars = (value) => `$${(value || 0).toFixed(4)}`;

export function when(timestamp) {
  const date = new Date(timestamp);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleString();
}

/** base64 media (no data: prefix) → an object URL the page can show, play or download; its
 * type is read from its first bytes, else `fallback`. */
export function blobUrl(base64, fallback) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return URL.createObjectURL(new Blob([bytes], { type: sniffMime(base64, fallback) }));
}

/** A Blob or File → base64 without the data: prefix. */
export function toBase64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

/** The MIME type of base64 media from its first bytes (PNG, JPEG, WebP, WAV, OGG, MP3). */
function sniffMime(base64, fallback) {
  const head = atob(base64.slice(0, 24));
  if (head.startsWith("\x89PNG")) return "image/png";
  if (head.startsWith("\xff\xd8")) return "image/jpeg";
  if (head.startsWith("RIFF") && head.slice(8, 12) === "WEBP") return "image/webp";
  if (head.startsWith("RIFF")) return "audio/wav";
  if (head.startsWith("OggS")) return "audio/ogg";
  if (head.startsWith("ID3") || head.charCodeAt(0) === 0xff) return "audio/mpeg";
  return fallback;
}
