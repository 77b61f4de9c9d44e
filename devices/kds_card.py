"""What one KDS card says, as rich Text: pure, so the screen and its tests read the same lines.

A card is the kitchen's ticket: the order's number, table, server, status and age on top, then one
item per line with its modifiers and notes under it. Notes that name an allergen are set apart in
reverse red: a cook scanning thirty cards must not read past "nut allergy" (Toast and Square KDS
flag them the same way). Long lines wrap inside the card at word boundaries (rich's wrapping).
"""

from __future__ import annotations

import re
from datetime import timedelta

from rich.text import Text

from devices.kds_board import Board, Card, Colour

# words that make a note an allergy warning: the common allergens and the word itself
ALLERGY = re.compile(
    r"allerg|anaphyla|celiac|coeliac|gluten|\bnuts?\b|peanut|tree ?nut|dairy|lactose|milk|\beggs?\b|"
    r"shellfish|crustacean|fish|sesame|\bsoy|mustard|celery|lupin|sulphite|sulfite|mollus",
    re.IGNORECASE,
)
AGE_STYLES: dict[Colour, str] = {"normal": "bold green", "warn": "bold black on yellow", "late": "bold white on red"}
ALLERGY_STYLE = "bold white on red"
NOTE_STYLE = "bold yellow"
MODIFIER_STYLE = "cyan"
VOID_STYLE = "strike dim red"


def elapsed_text(elapsed: timedelta) -> str:
    seconds = int(elapsed.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{seconds:02}" if hours else f"{minutes:02}:{seconds:02}"


def is_allergy(note: str) -> bool:
    return ALLERGY.search(note) is not None


def note_line(note: str, indent: str) -> Text:
    """A note under an item or the order: `!!` and reverse red when it names an allergen."""
    if is_allergy(note):
        return Text(f"{indent}!! {note}", style=ALLERGY_STYLE)
    return Text(f"{indent}! {note}", style=NOTE_STYLE)


def card_text(board: Board, card: Card, busy: bool = False) -> Text:
    """The whole card, line by line; the screen wraps long lines inside the card's width."""
    head = Text(no_wrap=False)
    head.append(card.title, style="bold reverse")
    head.append(f" {card.where}", style="bold")
    head.append("  ")
    head.append(f" {elapsed_text(board.elapsed(card))} ", style=AGE_STYLES[board.colour(card)])
    status = Text(card.label + (" …" if busy else ""), style="bold")
    if card.server_name:
        status.append(f" · {card.server_name}", style="italic")
    lines: list[Text] = [head, status]
    for line in board.lines_of(card):
        item = Text(f"{line.quantity} x {line.name}", style="bold")
        if line.course:
            item.append(f" [{line.course}]", style="dim")
        lines.append(item)
        lines.extend(Text(f"  + {modifier}", style=MODIFIER_STYLE) for modifier in line.modifiers)
        if line.notes:
            lines.append(note_line(line.notes, "  "))
    for line in board.voided_of(card):  # an edit took them off: struck, so nobody cooks them
        lines.append(Text(f"VOID {line.quantity} x {line.name}", style=VOID_STYLE))
        lines.extend(Text(f"  + {modifier}", style=VOID_STYLE) for modifier in line.modifiers)
    if card.notes:
        lines.append(note_line(card.notes, ""))
    return Text("\n").join(lines)


def all_day_text(board: Board) -> Text:
    """The all-day panel: how many of each item the open (not yet ready) orders want."""
    counts = board.all_day()
    text = Text()
    text.append("ALL DAY\n", style="bold underline")
    if not counts:
        text.append("nothing to cook", style="dim")
    text.append("\n".join(f"{quantity:>3} {name}" for name, quantity in counts))
    return text
