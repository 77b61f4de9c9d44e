"""`orderbus device kds`: the kitchen display, a Textual screen over KdsClient and Board.

The screen only draws the board and turns keys into requests; the rules live in
devices/kds_board.py, the card's lines in devices/kds_card.py and the bus traffic in
devices/kds_client.py, so all are tested without a terminal. Keys (always in the footer):
arrows select, b / space / enter bump, r recall the last bump, q quit.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime
from typing import Any

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Footer, Static

from devices.kds_board import Board, Card, utcnow
from devices.kds_card import all_day_text, card_text
from devices.kds_client import KdsClient, Reply
from devices.link import Identity
from devices.refusal import refuse_early

log = logging.getLogger("orderbus.devices.kds")

REPLY_TIMEOUT = 10.0  # seconds a tap waits for the bus before it says so
FLASH_SECONDS = 3.0  # how long a new ticket's card stays lit
SETTLE_SECONDS = 3.0  # after start, orders that appear are the picture at connect (retained), not new tickets


class OrderCard(Static):
    """One open order; its classes carry the age colour (normal / warn / late), the selection and the flash."""

    def __init__(self, card: Card, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.card = card

    def show(self, board: Board, card: Card, selected: bool, busy: bool) -> None:
        self.card = card
        self.update(card_text(board, card, busy))
        colour = board.colour(card)
        for name in ("normal", "warn", "late"):
            self.set_class(name == colour, name)
        self.set_class(selected, "selected")
        self.set_class(card.status == "ready", "ready")


class KdsApp(App[None]):
    """The KDS screen. It owns the client's lifetime: connect on mount, `offline` on exit.

    Cards go oldest first across the columns (the oldest at the top left, the next to its right),
    so each column scrolls on its own and every order is one scroll of its column away; the
    all-day panel and the keys (the footer) stay on screen at any size."""

    TITLE = "orderbus KDS"
    ENABLE_COMMAND_PALETTE = False  # a kitchen screen has its keys in the footer, nothing to search
    CSS = """
    Screen { layout: vertical; }
    #connection { height: 1; padding: 0 1; background: $primary-darken-2; color: white; }
    #connection.offline { background: #8b1a1a; }
    #main { height: 1fr; }
    #columns { width: 1fr; }
    .column { width: 1fr; height: 100%; overflow-y: auto; scrollbar-size-vertical: 1; }
    #allday { width: 20; height: 100%; padding: 0 1; background: $panel; color: $foreground; overflow-y: auto; }
    #message { height: 1; padding: 0 1; background: $panel; color: $foreground; }
    #message.error { background: #8b1a1a; color: white; }
    #empty { padding: 1 2; color: $text-muted; }
    OrderCard { height: auto; border: round green; padding: 0 1; }
    OrderCard.warn { border: round yellow; }
    OrderCard.late { border: heavy red; }
    OrderCard.ready { color: #7fd37f; }
    OrderCard.selected { border: double white; tint: white 10%; }
    OrderCard.flash { background: #1f4fa0; }
    """
    BINDINGS = [
        Binding("b,space,enter", "bump", "Bump", priority=True),
        Binding("r", "recall", "Recall"),
        Binding("left", "select(-1)", "Prev", priority=True),
        Binding("right", "select(1)", "Next", priority=True),
        Binding("up", "select_row(-1)", "Up", priority=True),
        Binding("down", "select_row(1)", "Down", priority=True),
        Binding("q", "quit", "Quit"),
    ]
    CARD_WIDTH = 30  # the narrowest column: a card of 28 characters inside its border
    ALL_DAY_WIDTH = 20

    class BoardChanged(Message):
        """Posted from the MQTT thread (post_message is thread-safe) and by the clock tick."""

    class Notice(Message):
        def __init__(self, text: str, error: bool) -> None:
            super().__init__()
            self.text, self.error = text, error

    def __init__(
        self,
        client: KdsClient,
        *,
        tick_seconds: float = 1.0,
        reply_timeout: float = REPLY_TIMEOUT,
        flash_seconds: float = FLASH_SECONDS,
        settle_seconds: float = SETTLE_SECONDS,
    ) -> None:
        super().__init__()
        self.client = client
        self.board = client.board
        self._tick_seconds = tick_seconds
        self._reply_timeout = reply_timeout
        self._flash_seconds = flash_seconds
        self._settle_seconds = settle_seconds
        self._was_connected = False
        self._scrolled_to: int | None = None
        self._known: set[int] = set()  # orders already shown: a card not in it is a new ticket
        self._started = False
        self._titles: dict[int, str] = {}  # what the messages call an order: its number, even once it left
        self.new_tickets = 0  # how many times a new ticket flashed and rang

    def compose(self) -> ComposeResult:
        yield Static("connecting…", id="connection", classes="offline")
        with Horizontal(id="main"):
            yield Horizontal(id="columns")
            yield Static(id="allday")
        yield Static("", id="message")
        yield Footer()

    def on_mount(self) -> None:
        self.client.on_change = lambda: self.post_message(self.BoardChanged())
        self.client.on_notice = self._notice_from_bus
        # refused by the bus: the whole line on screen (the log's copy is cut to 200 characters); the link stays
        # down and the screen up, showing why
        self.client.link.on_refused = lambda _refusal: self.say(self.client.link.refusal_line(), error=True)
        self.client.start()
        self.set_interval(self._tick_seconds, lambda: self.post_message(self.BoardChanged()))
        self.set_interval(0.5, self._show_connection)
        self.set_timer(self._settle_seconds, self._settled)
        self.post_message(self.BoardChanged())

    async def on_unmount(self) -> None:
        self.client.on_change = lambda: None
        self.client.on_notice = lambda _reply: None
        await asyncio.to_thread(self.client.stop)  # waits for the PUBACK of `offline`

    # --- drawing ---------------------------------------------------------------------------

    async def on_kds_app_board_changed(self, _message: BoardChanged) -> None:
        await self.redraw()

    async def on_resize(self) -> None:
        await self.redraw()

    def column_count(self) -> int:
        return max(1, (self.size.width - self.ALL_DAY_WIDTH) // self.CARD_WIDTH)

    def card(self, order_id: int) -> OrderCard | None:
        found = self.query(f"#order-{order_id}")
        return found.first(OrderCard) if found else None

    async def redraw(self) -> None:
        """Bring the cards in line with the board: same orders in the same places, then fresh text and colours."""
        if not self.screen_stack or not self.screen.query("#allday"):
            return  # the screen is closing (or closed: a tick's message can come after the last screen left)
        busy = self.client.busy_orders()
        with self.client.lock:
            cards = self.board.orders()
            selected = self.board.selection()
            self.query_one("#allday", Static).update(all_day_text(self.board))
        by_id = {f"order-{card.order_id}": card for card in cards}
        count = self.column_count()
        layout = [[f"order-{card.order_id}" for card in cards[index::count]] for index in range(count)]
        columns = self.query_one("#columns", Horizontal)
        shown = [[child.id for child in column.children] for column in columns.children]
        if not cards:
            layout = [["empty"]]
        if shown != layout:
            self._scrolled_to = None
            await columns.remove_children()
            await columns.mount_all(
                VerticalScroll(
                    *(
                        OrderCard(by_id[card_id], id=card_id) if cards else Static("no open orders", id=card_id)
                        for card_id in ids
                    ),
                    classes="column",
                )
                for ids in layout
            )
        # the first orders shown are the picture at start, not new tickets: thirty bells at once help nobody
        fresh = [card.order_id for card in cards if card.order_id not in self._known] if self._started else []
        self._started = self._started or bool(cards)  # an order after the first ones is a new ticket
        self._known = {card.order_id for card in cards}
        self._titles.update((card.order_id, card.title) for card in cards)
        with self.client.lock:
            for card in cards:
                view = self.query_one(f"#order-{card.order_id}", OrderCard)
                selected_here = selected is not None and selected.order_id == card.order_id
                view.show(self.board, card, selected_here, card.order_id in busy)
                if selected_here and self._scrolled_to != card.order_id:  # once: the cook may scroll away
                    self._scrolled_to = card.order_id
                    view.scroll_visible(animate=False)
        if fresh:
            self.flash(fresh)
        self._show_connection()

    def _settled(self) -> None:
        """A screen that started with no open orders: the first order that comes is a new ticket too."""
        self._started = True

    def flash(self, order_ids: list[int]) -> None:
        """A new ticket: its card lights up for a moment and the terminal rings once."""
        self.new_tickets += len(order_ids)
        self.bell()
        for order_id in order_ids:
            view = self.card(order_id)
            if view is not None:
                view.add_class("flash")
                self.set_timer(self._flash_seconds, lambda view=view: view.remove_class("flash"))

    def _show_connection(self) -> None:
        label = self.query_one("#connection", Static)
        identity = self.client.identity
        where = f"restaurant {identity.restaurant_id}" + (f" · {self.board.station}" if self.board.station else "")
        with self.client.lock:
            shown = len(self.board.orders())
        refusal = self.client.link.refusal
        ignored = f" · {self.board.ignored} bad messages ignored" if self.board.ignored else ""
        if refusal is not None:
            state = f"✕ refused: {refusal.reason}"
        elif self.client.connected:
            self._was_connected = True
            state = "● connected"
        else:
            state = "○ reconnecting…" if self._was_connected else "○ connecting…"
        label.update(f"KDS {identity.device_id} · {where} · {state} · {shown} open{ignored}")
        label.set_class(not self.client.connected, "offline")

    def on_kds_app_notice(self, message: Notice) -> None:
        line = self.query_one("#message", Static)
        line.update(message.text)
        line.set_class(message.error, "error")

    def say(self, text: str, error: bool = False) -> None:
        self.post_message(self.Notice(text, error))

    def _notice_from_bus(self, reply: Reply) -> None:
        if reply.get("type") == "error":
            self.say(f"bus refused a message: {reply.get('reason')}: {reply.get('detail')}", error=True)

    # --- keys ------------------------------------------------------------------------------

    def action_select(self, delta: int) -> None:
        """Left / right: the previous or next order (the next column over)."""
        with self.client.lock:
            self.board.move(delta)
        self.post_message(self.BoardChanged())

    def action_select_row(self, delta: int) -> None:
        """Up / down: the order above or below in the same column."""
        self.action_select(delta * self.column_count())

    def action_bump(self) -> None:
        with self.client.lock:
            card = self.board.selection()
            step = self.board.next_step(card) if card is not None else None
        if card is None or step is None:
            self.say("nothing to bump")
            return
        order_id = card.order_id
        self._send(order_id, f"→ {step}", lambda: self.client.bump(order_id, step))

    def action_recall(self) -> None:
        with self.client.lock:
            order_id = self.board.last_bumped()
        if order_id is None:
            self.say("nothing to recall")
            return
        self._send(order_id, "recalled", lambda: self.client.recall(order_id))

    def called(self, order_id: int) -> str:
        """What the messages call an order: its number in the restaurant."""
        return self._titles.get(order_id, f"id {order_id}")

    def _send(self, order_id: int, done: str, request: Callable[[], tuple[str, Future[Reply]]]) -> None:
        """Publish the request now; wait for its reply in a worker so the screen stays live."""
        if self.client.busy(order_id):
            self.say(f"{self.called(order_id)}: still waiting for the bus")
            return
        request_id, reply = request()
        self.post_message(self.BoardChanged())  # show it busy
        self.run_worker(self._await_reply(order_id, request_id, reply, done), group="requests")

    async def _await_reply(self, order_id: int, request_id: str, reply: Future[Reply], done: str) -> None:
        try:
            answer = await asyncio.wait_for(asyncio.wrap_future(reply), self._reply_timeout)
        except TimeoutError:
            self.client.forget(request_id)
            self.say(f"{self.called(order_id)}: no answer from the bus; try again when connected", error=True)
            self.post_message(self.BoardChanged())
            return
        if answer.get("type") == "ack":
            self.say(f"{self.called(order_id)} {done} ✓")
        else:
            self.say(f"{self.called(order_id)} not {done}: {answer.get('detail') or answer.get('reason')}", error=True)


class ToScreen(logging.Handler):
    """Device log lines go to the message line: a stream handler would scribble over the screen."""

    def __init__(self, app: KdsApp) -> None:
        super().__init__(level=logging.WARNING)
        self._app = app

    def emit(self, record: logging.LogRecord) -> None:
        if self._app.is_running:
            self._app.say(record.getMessage()[:200], error=record.levelno >= logging.ERROR)


def run(
    *,
    token: str,
    warn_minutes: float,
    late_minutes: float,
    host: str,
    port: int,
    keepalive: int,
    api_url: str,
    tls: ssl.SSLContext | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    """Run the KDS until `q`; a per-station screen when the tablet's token names a station."""
    try:
        identity = Identity.from_token(token)
    except ValueError as exc:
        raise SystemExit(f"orderbus device kds: the token is not a device token ({exc})") from None
    refuse_early(token, "tablet", api_url, host, port, tls)
    board = Board(warn_minutes=warn_minutes, late_minutes=late_minutes, clock=clock, station=identity.station)
    app = KdsApp(KdsClient(token, host, port, board, keepalive=keepalive, tls=tls, api_url=api_url))
    devices_log = logging.getLogger("orderbus.devices")
    handler = ToScreen(app)
    devices_log.addHandler(handler)
    try:
        app.run()
    finally:
        devices_log.removeHandler(handler)
