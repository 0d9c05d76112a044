// Preferences kept in this browser (localStorage), applied at load: nothing leaves the page.

const KEY = "rentahal.preferences";

export class Prefs {
  constructor() {
    try {
      this.values = JSON.parse(localStorage.getItem(KEY) || "{}") || {};
    } catch {
      this.values = {}; // a damaged entry is forgotten, not fatal
    }
  }

  get(name, fallback) { return name in this.values ? this.values[name] : fallback; }

  save(changes) {
    Object.assign(this.values, changes);
    try {
      localStorage.setItem(KEY, JSON.stringify(this.values));
    } catch {
      // storage full or disabled (private windows): the preference lasts this visit only
    }
  }

  /** Text size and theme, which the whole page follows. */
  apply() {
    document.documentElement.style.fontSize = this.get("font", "17px");
    document.documentElement.dataset.theme = this.get("theme", "auto");
  }
}
