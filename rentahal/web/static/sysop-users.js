// The users pane: every user with who is online, their role, totals, ban or unban, and
// terminating their queries.

import { dollars, el, option, seconds } from "./dom.js";
import { act, confirmed } from "./sysop-commands.js";
import { me, names, state } from "./sysop-state.js";
import { button, cell, scrollTable, statusLine, syncRows } from "./sysop-widgets.js";

const view = {};

export function buildUsers(pane) {
  view.userStatus = statusLine();
  view.userRows = el("tbody");
  view.userEmpty = el("p", { class: "empty", text: "No users yet." });
  pane.append(
    el("h3", { text: "Users" }),
    el("p", { class: "hint", text: "Online users are marked. A ban closes every connection of theirs at once." }),
    view.userStatus,
    scrollTable("Users", ["User", "Role", "Queries", "Time", "Cost", "Status", "Actions"], view.userRows),
    view.userEmpty,
  );
}

/** The users user_stats lists. */
export function setUsers(users) {
  state.users = users || [];
  renderUsers();
}

/** Who active_users says is connected. */
export function setOnline(guids) {
  state.online = new Set(guids || []);
  renderUsers();
}

/** A ban or unban shows at once, before the next user_stats. */
export function setBanned(guid, banned) {
  state.users = state.users.map((user) => (user.guid === guid ? { ...user, is_banned: banned } : user));
  renderUsers();
}

/** At stop: the next person at this page may not be a sysop. */
export function forgetUsers() {
  state.users = [];
  state.online = new Set();
  renderUsers();
}

function renderUsers() {
  if (!view.userRows) return;
  const mine = me()?.guid;
  const rows = state.users.map((user) => ({ ...user, online: state.online.has(user.guid), me: user.guid === mine }));
  syncRows(view.userRows, rows, (u) => u.guid, userRow);
  view.userEmpty.hidden = rows.length > 0;
}

function userRow(user) {
  const who = el("th", { attrs: { scope: "row" } },
    el("span", { class: "nickname", text: user.nickname }),
    user.online ? el("span", { class: "badge online", text: "online" }) : null,
    user.me ? el("span", { class: "badge", text: "you" }) : null,
    el("code", { class: "guid", text: user.guid.slice(0, 8), attrs: { title: user.guid } }));
  return el("tr", { class: user.is_banned ? "banned" : "", dataset: { guid: user.guid } },
    who,
    el("td", {}, roleSelect(user)),
    cell(String(user.query_count)),
    cell(seconds(user.total_query_time)),
    cell(dollars(user.total_cost)),
    cell(user.is_banned ? "Banned" : "Active", "state"),
    el("td", {}, el("div", { class: "actions" },
      user.is_banned
        ? button("Unban", () => unban(user), { label: `Unban ${user.nickname}`, focus: "ban" })
        : banButton(user),
      button("Terminate queries", () => terminateUser(user), {
        kind: "warn", label: `Terminate the queries of ${user.nickname}`, focus: "terminate",
      }))));
}

function banButton(user) {
  const ban = button("Ban", () => banUser(user), { kind: "danger", label: `Ban ${user.nickname}`, focus: "ban" });
  if (user.me) {
    ban.disabled = true; // the broker refuses it anyway
    ban.title = "You cannot ban yourself";
  }
  return ban;
}

function roleSelect(user) {
  const assignable = names().roles;
  const roles = assignable.includes(user.role) ? assignable : [user.role, ...assignable];
  const choice = el("select", {
    attrs: { "aria-label": `Role of ${user.nickname}` }, dataset: { focus: "role" },
  }, ...roles.map((role) => option(role, role, role === user.role)));
  // A guest's role is shown but cannot be chosen: only registering gives one.
  if (!assignable.includes(user.role)) choice.options[0].disabled = true;
  choice.addEventListener("change", async () => {
    const role = choice.value;
    if (role === "sysop" && !(await confirmed(`Make ${user.nickname} a sysop? They can then do all you can.`))) {
      choice.value = user.role;
      return;
    }
    if (!(await act({ type: "set_role", user_guid: user.guid, role }, view.userStatus))) choice.value = user.role;
  });
  return choice;
}

async function banUser(user) {
  if (!(await confirmed(`Ban ${user.nickname}? Their connections close and their queries stop at once.`))) return;
  await act({ type: "ban_user", user_guid: user.guid }, view.userStatus);
}

async function unban(user) {
  await act({ type: "unban_user", user_guid: user.guid }, view.userStatus);
}

async function terminateUser(user) {
  if (!(await confirmed(`Terminate every query of ${user.nickname}?`))) return;
  await act({ type: "terminate_query", user_guid: user.guid }, view.userStatus);
}
