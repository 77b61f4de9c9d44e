"""`orderbus device kds`: the kitchen display, a Textual screen over KdsClient and Board.

The screen only draws the board and turns keys into requests; the rules live in
devices/kds_board.py and the bus traffic in devices/kds_client.py, so both are tested
without a terminal. Keys: up/down select, b / space / enter bump, r recall the last bump, q quit.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime, timedelta

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Static

from devices.kds_board import Board, Card, utcnow
from devices.kds_client import KdsClient, Reply
from devices.link import Identity
from devices.refusal import refuse_early

log = logging.getLogger("orderbus.devices.kds")

REPLY_TIMEOUT = 10.0  # seconds a tap waits for the bus before it says so


def elapsed_text(elapsed: timedelta) -> str:
    seconds = int(elapsed.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{seconds:02}" if hours else f"{minutes:02}:{seconds:02}"


def row_text(board: Board, card: Card, busy: bool) -> Text:
    """One order as a line: number, table or pickup, status, elapsed time, items."""
    text = Text(no_wrap=False)
    text.append(f"#{card.order_id:<6}", style="bold")
    text.append(f"{card.where[:14]:<15}")
    text.append(f"{card.label + (' …' if busy else ''):<12}", style="bold")
    text.append(f"{elapsed_text(board.elapsed(card)):>8}  ")
    text.append(" · ".join(line.text() for line in board.lines_of(card)))
    if card.notes:
        text.append(f"  [{card.notes}]", style="italic")
    return text


class OrderRow(Static):
    """One open order; its classes carry the elapsed colour (normal / warn / late) and the selection."""

    def show(self, board: Board, card: Card, selected: bool, busy: bool) -> None:
        self.update(row_text(board, card, busy))
        colour = board.colour(card)
        for name in ("normal", "warn", "late"):
            self.set_class(name == colour, name)
        self.set_class(selected, "selected")
        self.set_class(card.status == "ready", "ready")


class KdsApp(App[None]):
    """The KDS screen. It owns the client's lifetime: connect on mount, `offline` on exit."""

    TITLE = "orderbus KDS"
    CSS = """
    Screen { layout: vertical; }
    #connection { height: 1; padding: 0 1; background: $primary-darken-2; }
    #connection.offline { background: #8b1a1a; }
    #orders { height: 1fr; overflow-y: auto; }
    #message { height: 1; padding: 0 1; background: $panel; }
    #message.error { background: #8b1a1a; color: white; }
    #empty { padding: 1 2; color: $text-muted; }
    OrderRow { height: auto; padding: 0 1 0 0; border-left: blank; }
    OrderRow.warn { background: #6b5500; }
    OrderRow.late { background: #7a1414; }
    OrderRow.ready { color: #7fd37f; }
    OrderRow.selected { border-left: thick white; text-style: bold; tint: white 15%; }
    """
    BINDINGS = [
        Binding("up", "select(-1)", "Up", priority=True),
        Binding("down", "select(1)", "Down", priority=True),
        Binding("b,space,enter", "bump", "Bump", priority=True),
        Binding("r", "recall", "Recall"),
        Binding("q", "quit", "Quit"),
    ]

    class BoardChanged(Message):
        """Posted from the MQTT thread (post_message is thread-safe) and by the clock tick."""

    class Notice(Message):
        def __init__(self, text: str, error: bool) -> None:
            super().__init__()
            self.text, self.error = text, error

    def __init__(self, client: KdsClient, *, tick_seconds: float = 1.0, reply_timeout: float = REPLY_TIMEOUT) -> None:
        super().__init__()
        self.client = client
        self.board = client.board
        self._tick_seconds = tick_seconds
        self._reply_timeout = reply_timeout
        self._was_connected = False

    def compose(self) -> ComposeResult:
        yield Static("connecting…", id="connection", classes="offline")
        yield Vertical(id="orders")
        yield Static("b/space/enter bump · r recall · ↑↓ select · q quit", id="message")

    def on_mount(self) -> None:
        self.client.on_change = lambda: self.post_message(self.BoardChanged())
        self.client.on_notice = self._notice_from_bus
        # refused by the bus: the whole line on screen (the log's copy is cut to 200 characters); the link stays
        # down and the screen up, showing why
        self.client.link.on_refused = lambda _refusal: self.say(self.client.link.refusal_line(), error=True)
        self.client.start()
        self.set_interval(self._tick_seconds, lambda: self.post_message(self.BoardChanged()))
        self.set_interval(0.5, self._show_connection)
        self.post_message(self.BoardChanged())

    async def on_unmount(self) -> None:
        self.client.on_change = lambda: None
        self.client.on_notice = lambda _reply: None
        await asyncio.to_thread(self.client.stop)  # waits for the PUBACK of `offline`

    # --- drawing ---------------------------------------------------------------------------

    async def on_kds_app_board_changed(self, _message: BoardChanged) -> None:
        await self.redraw()

    async def redraw(self) -> None:
        """Bring the rows in line with the board: same orders in the same order, then fresh text and colours."""
        busy = self.client.busy_orders()
        with self.client.lock:
            cards = self.board.orders()
            selected = self.board.selection()
        container = self.query_one("#orders", Vertical)
        wanted = [f"order-{card.order_id}" for card in cards] or ["empty"]
        if [child.id for child in container.children] != wanted:
            await container.remove_children()
            rows = [OrderRow(id=row_id) for row_id in wanted] if cards else [Static("no open orders", id="empty")]
            await container.mount_all(rows)
        with self.client.lock:
            for card in cards:
                row = container.query_one(f"#order-{card.order_id}", OrderRow)
                selected_here = selected is not None and selected.order_id == card.order_id
                row.show(self.board, card, selected_here, card.order_id in busy)
                if selected_here:
                    row.scroll_visible()
        self._show_connection()

    def _show_connection(self) -> None:
        label = self.query_one("#connection", Static)
        identity = self.client.identity
        where = f"restaurant {identity.restaurant_id}" + (f" · {self.board.station}" if self.board.station else "")
        with self.client.lock:
            shown = len(self.board.orders())
        refusal = self.client.link.refusal
        if refusal is not None:
            state = f"✕ refused: {refusal.reason}"
        elif self.client.connected:
            self._was_connected = True
            state = "● connected"
        else:
            state = "○ reconnecting…" if self._was_connected else "○ connecting…"
        label.update(f"KDS {identity.device_id} · {where} · {state} · {shown} open")
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
        with self.client.lock:
            self.board.move(delta)
        self.post_message(self.BoardChanged())

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

    def _send(self, order_id: int, done: str, request: Callable[[], tuple[str, Future[Reply]]]) -> None:
        """Publish the request now; wait for its reply in a worker so the screen stays live."""
        if self.client.busy(order_id):
            self.say(f"#{order_id}: still waiting for the bus")
            return
        request_id, reply = request()
        self.post_message(self.BoardChanged())  # show it busy
        self.run_worker(self._await_reply(order_id, request_id, reply, done), group="requests")

    async def _await_reply(self, order_id: int, request_id: str, reply: Future[Reply], done: str) -> None:
        try:
            answer = await asyncio.wait_for(asyncio.wrap_future(reply), self._reply_timeout)
        except TimeoutError:
            self.client.forget(request_id)
            self.say(f"#{order_id}: no answer from the bus; try again when connected", error=True)
            self.post_message(self.BoardChanged())
            return
        if answer.get("type") == "ack":
            self.say(f"#{order_id} {done} ✓")
        else:
            self.say(f"#{order_id} not {done}: {answer.get('detail') or answer.get('reason')}", error=True)


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
