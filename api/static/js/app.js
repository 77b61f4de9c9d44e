// The dashboard page: sign-in, then the live picture of one restaurant.

import mqtt from "../vendor/mqtt.esm.js";
import { Api } from "./api.js";
import { LiveConnection, websocketUrl } from "./connection.js";
import { DayTotals } from "./day_totals.js";
import { Beeper } from "./sound.js";
import { DashboardState, orderLabel } from "./state.js";
import { DashboardUi } from "./ui.js";

const SESSION_KEY = "orderbus.session"; // sessionStorage: per tab, gone when the tab closes
const NEW_FOR_MS = 60_000; // a new order stays highlighted this long, or until someone looks at it

function loadSession() {
  try {
    const session = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? "null");
    if (session && typeof session.token === "string" && session.expiresAt > Date.now() + 60_000) return session;
  } catch {
    // unreadable: sign in again
  }
  sessionStorage.removeItem(SESSION_KEY);
  return null;
}

class App {
  constructor() {
    this.session = loadSession();
    this.api = new Api({
      token: () => this.session?.token ?? null,
      onUnauthorized: () => this.signOut("Your session has ended. Please sign in again."),
    });
    this.beeper = new Beeper();
    this.ui = new DashboardUi(document, {
      advance: (id, status, button) => this.changeStatus(id, status, button),
      cancel: (id, button) => this.changeStatus(id, "cancelled", button),
      refund: (id, cents, reason, done) => this.refund(id, cents, reason, done),
      pay: (id, button) => this.pay(id, button),
      refunds: (id) => this.api.refunds(this.session.restaurantId, id),
      markRead: (ids, button) => this.markRead(ids, button),
      markAllRead: (upTo, button) => this.markAllRead(upTo, button),
      seen: (id) => this.seen(id),
    }, { debug: new URLSearchParams(location.search).get("debug") === "1" });
    this.state = null;
    this.pending = null; // a super admin's sign-in, until they choose a restaurant
    this.connection = null;
    this.config = null;
    this.renderQueued = false;
    this.dayTotals = null;
  }

  async start() {
    document.getElementById("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.login();
    });
    document.getElementById("logout").addEventListener("click", () => this.signOut("Signed out."));
    document.getElementById("relogin").addEventListener("click", () => this.signOut("Sign in again to reconnect."));
    document.getElementById("sound-toggle").addEventListener("click", () => this.ui.setSound(this.beeper.toggle()));
    this.ui.setSound(false);
    setInterval(() => this.expireHighlights(), 5000);
    this.config = await this.loadConfig();
    if (this.session && this.session.restaurantId) this.open();
    else this.ui.showLogin();
  }

  async loadConfig() {
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await this.api.config();
      } catch (error) {
        this.ui.showLogin({ message: `Cannot reach orderbus (${error.message}); retrying…` });
        await new Promise((resolve) => setTimeout(resolve, Math.min(30_000, 1000 * 2 ** attempt)));
      }
    }
  }

  async login() {
    const email = document.getElementById("email").value.trim();
    const password = document.getElementById("password").value;
    const needRestaurant = !document.getElementById("restaurant-field").hidden;
    if (needRestaurant && this.pending) {
      // signed in already as someone of every restaurant (a super admin): the choice opens it
      const restaurantId = Number(document.getElementById("restaurant").value);
      if (!Number.isInteger(restaurantId) || restaurantId < 1) {
        this.ui.showLogin({ message: "Choose the restaurant to watch.", needRestaurant: true });
        return;
      }
      this.begin(this.pending, restaurantId);
      return;
    }
    if (!email || !password) {
      this.ui.showLogin({ message: "Enter your email and password.", needRestaurant });
      return;
    }
    const submit = document.getElementById("login-submit");
    submit.disabled = true;
    try {
      const answer = await this.api.login(email, password);
      document.getElementById("password").value = "";
      const pending = {
        token: answer.access_token,
        role: answer.role,
        email,
        expiresAt: Date.now() + answer.expires_in * 1000,
      };
      if (answer.restaurant_id !== null) {
        this.begin(pending, answer.restaurant_id);
        return;
      }
      const listed = await this.api.restaurants(pending.token);
      const restaurants = Array.isArray(listed?.data) ? listed.data : []; // a page: {data, count}
      this.pending = pending;
      this.ui.setRestaurantChoices(restaurants);
      const message = restaurants.length
        ? "Choose the restaurant to watch."
        : "There is no restaurant yet: add one with POST /api/v1/restaurants (see /docs), then sign in again.";
      this.ui.showLogin({ message, needRestaurant: restaurants.length > 0 });
    } catch (error) {
      const message =
        error.status === 401
          ? "Wrong email or password."
          : error.status === 429
            ? `${error.message}.` // too many failed logins; try again in N s
            : `Sign-in failed: ${error.message}`;
      this.ui.showLogin({ message, needRestaurant: false });
    } finally {
      submit.disabled = false;
    }
  }

  /** Start the session of a signed-in user on one restaurant. */
  begin(pending, restaurantId) {
    this.pending = null;
    this.session = { ...pending, restaurantId };
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(this.session));
    this.open();
  }

  open() {
    const rid = this.session.restaurantId;
    const state = new DashboardState(rid);
    this.state = state;
    this.ui.showDashboard({ role: this.session.role });
    this.ui.setRestaurant(`Restaurant ${rid}`);
    this.dayTotals?.stop();
    const totals = new DayTotals(document, this.api, rid);
    this.dayTotals = totals;
    let connection = null;
    // after a sign-out, a request still in flight of the old connection must not touch the screen
    const current = (fn) => (...args) => {
      if (this.connection === connection && this.state === state) fn(...args);
    };
    const sink = {
      snapshot: current((snapshot, options) => {
        if (typeof snapshot?.restaurant_name === "string") this.ui.setRestaurant(snapshot.restaurant_name, snapshot.restaurant_currency);
        state.applySnapshot(snapshot, options);
        totals.refresh();
        this.render();
      }),
      event: current((envelope, source) => this.onEvent(envelope, source)),
      orderState: current((id, envelope) => {
        state.applyOrderState(id, envelope);
        totals.refresh();
        this.render();
      }),
      itemState: current((id, envelope) => {
        state.applyItemState(id, envelope);
        this.render();
      }),
      presence: current((id, value) => {
        state.applyPresence(id, value);
        this.render();
      }),
      ignored: current((reason, topic) => {
        console.warn(`orderbus: ignored a message on ${topic}: ${reason}`);
        state.ignore(reason);
        this.render();
      }),
      state: current((info) => this.ui.renderConnection(info)),
    };
    connection = new LiveConnection({ mqtt, api: this.api, rid, wsUrl: websocketUrl(this.config), sink });
    this.connection = connection;
    connection.start();
    window.orderbus = { state, connection }; // for the console and tests
  }

  onEvent(envelope, source) {
    const result = this.state.applyEvent(envelope, source);
    if (envelope?.type === "new_order" || envelope?.type === "order_updated") this.dayTotals?.refresh();
    if (result.newOrder) {
      this.ui.announce(`New order ${orderLabel(result.newOrder)}`);
      this.beeper.beep();
    }
    this.render();
  }

  render() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    queueMicrotask(() => {
      this.renderQueued = false;
      if (this.state) this.ui.render(this.state, this.connection?.sequencer.lastSeq ?? null);
    });
  }

  seen(orderId) {
    const entry = this.state?.orders.get(orderId);
    if (entry?.isNew) {
      entry.isNew = false;
      this.render();
    }
  }

  expireHighlights() {
    if (!this.state) return;
    const now = Date.now();
    let changed = false;
    for (const entry of this.state.orders.values()) {
      if (entry.isNew && now - entry.newAt > NEW_FOR_MS) {
        entry.isNew = false;
        changed = true;
      }
    }
    if (changed) this.render();
  }

  /** What staff call the order: its number in the restaurant (`#12`), the global id only when it has none. */
  called(orderId) {
    const order = this.state?.orders.get(orderId)?.order;
    return `#${order?.number ?? orderId}`;
  }

  async changeStatus(orderId, status, button) {
    button.disabled = true;
    try {
      await this.api.setStatus(this.session.restaurantId, orderId, status);
      this.ui.toast(`Order ${this.called(orderId)} is now ${status}.`);
    } catch (error) {
      this.ui.toast(`Order ${this.called(orderId)} could not become ${status}: ${error.message}`, { error: true });
    } finally {
      button.disabled = false;
    }
  }

  async refund(orderId, cents, reason, done) {
    try {
      await this.api.refund(this.session.restaurantId, orderId, cents, reason);
      this.ui.toast(`Refunded ${(cents / 100).toFixed(2)} on order ${this.called(orderId)}.`);
      done();
    } catch (error) {
      this.ui.toast(`Refund on order ${this.called(orderId)} failed: ${error.message}`, { error: true });
    }
  }

  async pay(orderId, button) {
    button.disabled = true;
    try {
      await this.api.pay(this.session.restaurantId, orderId);
      this.ui.toast(`Order ${this.called(orderId)} is paid.`);
    } catch (error) {
      this.ui.toast(`Order ${this.called(orderId)} could not be marked paid: ${error.message}`, { error: true });
    } finally {
      button.disabled = false;
    }
  }

  /** Mark a group's notifications read (each by id: the group is what this screen shows). */
  async markRead(ids, button) {
    button.disabled = true;
    try {
      for (const id of ids) {
        await this.api.markRead(this.session.restaurantId, id);
        const note = this.state?.notifications.get(id);
        if (note) note.read = true;
      }
    } catch (error) {
      this.ui.toast(`Could not mark the notification read: ${error.message}`, { error: true });
    } finally {
      button.disabled = false;
      this.render();
    }
  }

  /** Everything up to the newest notification shown, in one request; a newer one stays unread. */
  async markAllRead(upTo, button) {
    button.disabled = true;
    try {
      const answer = await this.api.markAllRead(this.session.restaurantId, upTo);
      for (const note of this.state?.notifications.values() ?? []) if (note.id <= upTo) note.read = true;
      this.ui.toast(`Marked ${answer?.marked ?? 0} notification${answer?.marked === 1 ? "" : "s"} read.`);
    } catch (error) {
      this.ui.toast(`Could not mark the notifications read: ${error.message}`, { error: true });
    } finally {
      button.disabled = false;
      this.render();
    }
  }

  signOut(message) {
    this.dayTotals?.stop();
    this.dayTotals = null;
    this.connection?.stop();
    this.connection = null;
    this.state = null;
    this.session = null;
    this.pending = null;
    sessionStorage.removeItem(SESSION_KEY);
    location.hash = "";
    this.ui.reset();
    this.ui.showLogin({ message });
  }
}

new App().start();
