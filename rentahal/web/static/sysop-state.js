// What the sysop panel's panes share: the bus it listens to, the page it lives in, and the
// last workers, pools, realms and users the broker sent. A pane's own view state (its
// charts, its console) stays in that pane's module.

export const state = {
  bus: null, ui: null, active: false,
  workers: [], pools: [], realms: [], realmTypes: {},
  users: [], online: new Set(),
};

/** The names the broker sent in its greeting (`vocabulary`): types, kinds, strategies, roles. */
export function names() {
  return state.ui.vocabulary();
}

export const me = () => (state.ui && state.ui.me ? state.ui.me() : null);
