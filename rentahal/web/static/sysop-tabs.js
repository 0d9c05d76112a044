// The sysop panel's tabs, in the ARIA tabs pattern: one pane shown at a time, and arrows,
// Home and End move focus and select at once.

import { $ } from "./dom.js";

function tabs() {
  return [...$("sysop-tabs").querySelectorAll('[role="tab"]')];
}

/** Make the tabs work; `onShow(paneId)` runs each time a tab is selected. */
export function wireTabs(onShow) {
  const list = $("sysop-tabs");
  const selectTab = (chosen) => {
    for (const tab of tabs()) {
      const selected = tab === chosen;
      tab.setAttribute("aria-selected", String(selected));
      tab.tabIndex = selected ? 0 : -1;
      $(tab.getAttribute("aria-controls")).hidden = !selected;
    }
    onShow(chosen.getAttribute("aria-controls"));
  };
  for (const tab of tabs()) tab.addEventListener("click", () => selectTab(tab));
  list.addEventListener("keydown", (event) => {
    const all = tabs();
    const at = all.indexOf(document.activeElement);
    if (at < 0) return;
    const to = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: all.length - 1 }[event.key];
    if (to === undefined) return;
    event.preventDefault();
    const tab = all[(to + all.length) % all.length];
    selectTab(tab);
    tab.focus();
  });
}
