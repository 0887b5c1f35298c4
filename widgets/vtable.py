"""A virtual table on Textual's Line API: it draws only the visible rows of a plain list.

Textual's `DataTable` measures every cell and rebuilds its row index on each change, which takes
tens of seconds at 500,000 rows. `VirtualTable` stores nothing per row: a row is an index into
the caller's own lists, and each column says how to turn an index into text (and a style, and a
sort key). What the table keeps is the *view*: the row indices shown, in order, after the
search, the filter and the sort. With none of those the view is a `range`, so a table of
500,000 rows costs nothing to set up; `render_line` draws the dozen rows on screen.

Keys: up/down/page up/page down/home/end move the cursor, left/right scroll sideways, `s` sorts
by the next column, `S` reverses the order. Messages: `CursorMoved` (the row under the cursor
changed), `Selected` (enter on a row), `ViewChanged` (the rows shown changed).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

# the tags a column's `style` may return, each a component class themed in DEFAULT_CSS
TAGS = ("good", "bad", "note", "warn", "dim")


@dataclass
class Column:
    """One column: how an index becomes text, and optionally a style tag and a sort key.

    `text(i)` is called only for rows on screen; `sort(i)` (default: `text`) for every row when
    the table is sorted by this column. `style(i)` returns one of `TAGS` or None. A `flex` column
    takes the width left over when the columns are narrower than the table.

    With `auto`, the column is as wide as its widest text (measured over at most `SAMPLE_ROWS`
    rows spread over the table, and the label), no narrower than `width` and no wider than
    `max_width`. When the columns need more than the table has, the flex columns give up their
    room first, then the others from the right, none below `width`. A cut text loses its end,
    or with `keep="end"` its start (a path or a URL: the end tells them apart).
    """

    label: str
    width: int
    text: Callable[[int], str]
    style: Callable[[int], str | None] | None = None
    sort: Callable[[int], Any] | None = None
    align: str = "left"  # or "right"
    flex: bool = False
    key: str = ""
    auto: bool = False
    max_width: int = 60
    keep: str = "start"  # or "end"; "path" keeps the end of a text holding a "/", else the start

    def __post_init__(self) -> None:
        self.key = self.key or self.label.lower()


def fit(text: str, width: int, align: str = "left", keep: str = "start") -> str:
    """`text` padded or cut (with an ellipsis) to exactly `width` cells; `keep="end"` cuts its
    start instead of its end, `keep="path"` does so for a text holding a `/`."""
    if keep == "path":
        keep = "end" if "/" in text else "start"
    if text.isascii():
        size = len(text)
        if size <= width:
            pad = " " * (width - size)
            return pad + text if align == "right" else text + pad
        if width <= 0:
            return ""
        return "…" + text[size - width + 1 :] if keep == "end" else text[: width - 1] + "…"
    size = cell_len(text)
    if size <= width:
        pad = " " * (width - size)
        return pad + text if align == "right" else text + pad
    if width <= 0:
        return ""
    if keep == "end":
        return "…" + set_cell_size(text[::-1], width - 1)[::-1]
    return set_cell_size(text, width - 1) + "…"


SAMPLE_ROWS = 2000  # rows measured to size an `auto` column: a table of 500,000 is not read whole


def content_widths(columns: Sequence[Column], count: int) -> tuple[list[int], list[int]]:
    """Each column's natural width (measured for `auto` ones, within `width` and `max_width`;
    `width` for the others), and the width its widest text wants, which a table with room gives."""
    step = max(1, count // SAMPLE_ROWS)
    rows = range(0, count, step)
    widths, wanted = [], []
    for column in columns:
        if not column.auto:
            widths.append(column.width)
            wanted.append(column.width)
            continue
        widest = max((cell_len(column.text(i)) for i in rows), default=0)
        widest = max(column.width, widest, cell_len(column.label) + 2)  # room for the sort mark
        widths.append(min(widest, column.max_width))
        wanted.append(widest)
    return widths, wanted


def _sorted_order(column: Column, count: int, reverse: bool) -> list[int]:
    key = column.sort or column.text
    keys = [key(i) for i in range(count)]
    return sorted(range(count), key=keys.__getitem__, reverse=reverse)


class VirtualTable(ScrollView, can_focus=True):
    """A table over `count` rows addressed by index; only the visible rows are ever drawn."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "edge(0)", "First row", show=False),
        Binding("end", "edge(1)", "Last row", show=False),
        Binding("left", "scroll_left", "Scroll left", show=False),
        Binding("right", "scroll_right", "Scroll right", show=False),
        Binding("enter", "select", "", show=False),  # posts Selected; screens decide what it means
        Binding("s", "sort_next", "sort"),
        Binding("S", "sort_reverse", "reverse", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "virtual-table--header",
        "virtual-table--cursor",
        "virtual-table--empty",
        *(f"virtual-table--{tag}" for tag in TAGS),
    }

    DEFAULT_CSS = """
    VirtualTable {
        background: $surface;
        scrollbar-size-vertical: 1;
        scrollbar-size-horizontal: 1;
        & > .virtual-table--header { text-style: bold; background: $panel; color: $foreground; }
        & > .virtual-table--cursor { background: $block-cursor-blurred-background; }
        &:focus > .virtual-table--cursor {
            background: $block-cursor-background; color: $block-cursor-foreground; text-style: bold;
        }
        & > .virtual-table--empty { color: $text-muted; text-style: italic; }
        & > .virtual-table--good { color: $text-success; }
        & > .virtual-table--bad { color: $text-error; }
        & > .virtual-table--note { color: $text-accent; }
        & > .virtual-table--warn { color: $text-warning; }
        & > .virtual-table--dim { color: $text-muted; }
    }
    """

    BACKGROUND_SORT_ROWS = 100_000
    """Tables with more rows than this sort in a thread."""

    cursor = reactive(0, always_update=True, repaint=False, init=False)
    """The cursor's position in the view (not a row index: see `cursor_index`)."""

    class CursorMoved(Message):
        """The row under the cursor changed; `index` is its row index, None for an empty view."""

        def __init__(self, table: VirtualTable, index: int | None) -> None:
            super().__init__()
            self.table = table
            self.index = index

        @property
        def control(self) -> VirtualTable:
            return self.table

    class Selected(Message):
        """Enter was pressed on the row `index`."""

        def __init__(self, table: VirtualTable, index: int) -> None:
            super().__init__()
            self.table = table
            self.index = index

        @property
        def control(self) -> VirtualTable:
            return self.table

    class ViewChanged(Message):
        """The rows shown changed: `shown` of `total`."""

        def __init__(self, table: VirtualTable, shown: int, total: int) -> None:
            super().__init__()
            self.table = table
            self.shown = shown
            self.total = total

        @property
        def control(self) -> VirtualTable:
            return self.table

    def __init__(
        self,
        columns: Sequence[Column] = (),
        count: int = 0,
        *,
        search: Callable[[int], str] | None = None,
        empty_text: str = "no rows",
        sortable: bool = True,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.columns: list[Column] = list(columns)
        self.count = count
        self.search = search
        self.empty_text = empty_text
        self.sortable = sortable
        self.query_text = ""
        self.row_filter: Callable[[int], bool] | None = None
        self.sort_column: int | None = None
        self.sort_reverse = False
        self._order: Sequence[int] = range(count)  # every row, sorted when a sort is set
        self.view: Sequence[int] = self._order  # the rows shown
        self.sorting = False  # a sort is being computed in a thread
        self._generation = 0  # bumped by new data and new sorts, so a late sort is dropped
        self._search_texts: list[str] | None = None  # each row's search text, lower case
        self._searched: tuple[str, Sequence[int], list[int]] | None = None  # query, order, rows
        self._widths: list[int] = []
        # the columns' widths before fitting them to the table, and what their widest texts want
        self._natural, self._wanted = content_widths(self.columns, count)
        self._last_index: int | None = None

    # ------------------------------------------------------------------ the data

    def set_data(self, columns: Sequence[Column] | None, count: int, *, keep_sort: bool = False) -> None:
        """Show `count` new rows (and new columns, when given); the search and filter stay."""
        if columns is not None:
            self.columns = list(columns)
        self.count = count
        self._natural, self._wanted = content_widths(self.columns, count)
        self._generation += 1
        self._search_texts = None
        self._searched = None
        if not keep_sort or self.sort_column is None or self.sort_column >= len(self.columns):
            self.sort_column, self.sort_reverse = None, False
        self._order = range(count)
        if self.sort_column is not None:
            self._sort()
        self._rebuild(keep=False)

    def set_query(self, text: str) -> None:
        """Show only rows whose search text contains `text` (case-insensitive); '' shows all."""
        text = text.strip().lower()
        if text != self.query_text:
            self.query_text = text
            self._rebuild()

    def set_filter(self, predicate: Callable[[int], bool] | None) -> None:
        """Show only rows for which `predicate(index)` is true; None shows all."""
        self.row_filter = predicate
        self._rebuild()

    def sort_by(self, column: int | str | None, reverse: bool = False) -> None:
        """Sort by a column (its position or key); None restores the data's own order.

        Over `BACKGROUND_SORT_ROWS` rows the order is computed in a thread: the table stays
        usable in its current order meanwhile, and the header says it is sorting.
        """
        if isinstance(column, str):
            column = next(i for i, c in enumerate(self.columns) if c.key == column)
        self.sort_column, self.sort_reverse = column, reverse
        if column is None:
            self._order = range(self.count)
            self._rebuild()
        elif self._sort():
            self._rebuild()

    def refresh_rows(self) -> None:
        """The data changed in place (same rows, other values): filter again and repaint.

        The order stays as it is (a sort is redone when asked for): rows do not jump away from
        the cursor because their values changed.
        """
        if self.row_filter is not None:
            self._rebuild()
        else:
            self.refresh()
            self._announce_cursor(force=True)

    @property
    def cursor_index(self) -> int | None:
        """The row index under the cursor, None when nothing is shown."""
        if not self.view:
            return None
        return self.view[min(self.cursor, len(self.view) - 1)]

    def move_to_index(self, index: int) -> bool:
        """Put the cursor on row `index` if it is shown; whether it is."""
        position = self._position_of(index)
        if position is None:
            return False
        self.cursor = position
        return True

    # ---- sorting

    def _sort(self) -> bool:
        """Sort by `sort_column`: now (True) or, for a large table, in a thread (False)."""
        column, reverse, count = self.sort_column, self.sort_reverse, self.count
        if column is None:
            return True
        if count < self.BACKGROUND_SORT_ROWS or not self.is_mounted:
            self._order = _sorted_order(self.columns[column], count, reverse)
            return True
        generation = self._generation = self._generation + 1
        self.sorting = True
        self.refresh_line_at(0)
        spec = self.columns[column]

        def work() -> None:
            order = _sorted_order(spec, count, reverse)
            self.app.call_from_thread(self._sorted, generation, order)

        self.run_worker(work, thread=True, exclusive=True, group="virtual-table-sort", exit_on_error=False)
        return False

    def _sorted(self, generation: int, order: list[int]) -> None:
        if generation != self._generation:
            return  # the data or the sort changed while this one ran
        self.sorting = False
        self._order = order
        self._searched = None
        self._rebuild()

    # ---- the view

    def _search_rows(self) -> Sequence[int]:
        """The order restricted to the rows matching the query; typing on narrows the last result."""
        query, order = self.query_text, self._order
        if not query or self.search is None:
            return order
        if self._search_texts is None:
            search = self.search
            self._search_texts = [t if t.islower() else t.lower() for t in map(search, range(self.count))]
        texts = self._search_texts
        base: Sequence[int] = order
        if self._searched is not None:
            last_query, last_order, last_rows = self._searched
            if last_order is order and query == last_query:
                return last_rows
            if last_order is order and query.startswith(last_query):
                base = last_rows
        rows = [i for i in base if query in texts[i]]
        self._searched = (query, order, rows)
        return rows

    def _rebuild(self, keep: bool = True) -> None:
        """Recompute the view; with `keep`, the cursor stays on its row if that is still shown."""
        current = self.cursor_index if keep else None
        view = self._search_rows()
        predicate = self.row_filter
        if predicate is not None:
            view = [i for i in view if predicate(i)]
        self.view = view
        self._update_virtual_size()
        position = self._position_of(current) if current is not None else None
        if position is None:
            self.scroll_to(y=0, animate=False)
            self.cursor = 0
        else:
            self.cursor = position
        self.refresh()
        self._announce_cursor(force=True)
        self.post_message(self.ViewChanged(self, len(view), self.count))

    def _position_of(self, index: int) -> int | None:
        view = self.view
        if isinstance(view, range):
            return index if 0 <= index < len(view) else None
        if self.sort_column is None:  # filtered only: still ascending
            position = bisect_left(view, index)
            return position if position < len(view) and view[position] == index else None
        try:
            return view.index(index)  # type: ignore[union-attr]
        except ValueError:
            return None

    # ------------------------------------------------------------------ geometry

    def _column_widths(self, width: int) -> list[int]:
        widths = (
            list(self._natural)
            if len(self._natural) == len(self.columns)
            else [c.width for c in self.columns]
        )
        spare = width - (sum(widths) + len(widths) - 1)
        flex = [i for i, c in enumerate(self.columns) if c.flex]
        if spare > 0 and len(self._wanted) == len(widths):
            # room: the cut texts whole first, the flex columns' (names) before the others'
            for i in sorted(range(len(widths)), key=lambda i: not self.columns[i].flex):
                give = min(spare, self._wanted[i] - widths[i])
                if give > 0:
                    widths[i] += give
                    spare -= give
        if spare > 0 and flex:
            share, extra = divmod(spare, len(flex))
            for n, i in enumerate(flex):
                widths[i] += share + (1 if n < extra else 0)
        elif spare < 0:  # too wide: flex columns give up room first, then the widest of the others
            for i in flex:
                give = min(-spare, widths[i] - self.columns[i].width)
                widths[i] -= max(0, give)
                spare += max(0, give)
            while spare < 0:
                room = [(widths[i], i) for i, c in enumerate(self.columns) if widths[i] > c.width]
                if not room:
                    break  # the minimums do not fit either: the table scrolls sideways
                widths[max(room)[1]] -= 1
                spare += 1
        return widths

    def _update_virtual_size(self) -> None:
        width, height = self.size
        if len(self.view) + 1 > height and self.styles.overflow_y != "hidden":
            width -= self.styles.scrollbar_size_vertical  # leave room for the vertical scrollbar
        self._widths = self._column_widths(width)
        width = sum(self._widths) + max(0, len(self._widths) - 1)
        self.virtual_size = Size(width, len(self.view) + 1)

    def on_mount(self) -> None:
        self._announce_cursor(force=True)

    def on_resize(self, event: events.Resize) -> None:
        self._update_virtual_size()
        self._scroll_cursor_into_view()

    @property
    def page_rows(self) -> int:
        """How many data rows fit below the header."""
        return max(1, self.scrollable_content_region.height - 1)

    def _scroll_cursor_into_view(self) -> None:
        top = round(self.scroll_y)
        rows = self.page_rows
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + rows:
            self.scroll_to(y=self.cursor - rows + 1, animate=False)

    # ------------------------------------------------------------------ the cursor

    def validate_cursor(self, value: int) -> int:
        return max(0, min(value, len(self.view) - 1)) if self.view else 0

    def watch_cursor(self, old: int, new: int) -> None:
        top = round(self.scroll_y)
        self.refresh_line_at(old - top + 1)
        self.refresh_line_at(new - top + 1)
        self._scroll_cursor_into_view()
        self._announce_cursor()

    def refresh_line_at(self, y: int) -> None:
        """Repaint the screen line `y` of this widget (0 is the header)."""
        if 0 <= y < self.size.height:
            self.refresh(Region(0, y, self.size.width, 1))

    def _announce_cursor(self, force: bool = False) -> None:
        index = self.cursor_index
        if force or index != self._last_index:
            self._last_index = index
            self.post_message(self.CursorMoved(self, index))

    def action_cursor(self, step: int) -> None:
        self.cursor += step

    def action_page(self, direction: int) -> None:
        rows = self.page_rows
        self.scroll_to(y=self.scroll_y + direction * rows, animate=False)
        self.cursor += direction * rows

    def action_edge(self, end: int) -> None:
        self.cursor = len(self.view) - 1 if end else 0

    def action_select(self) -> None:
        index = self.cursor_index
        if index is not None:
            self.post_message(self.Selected(self, index))

    def action_sort_next(self) -> None:
        if not self.columns:
            return
        column = 0 if self.sort_column is None else (self.sort_column + 1) % len(self.columns)
        self.sort_by(column, self.sort_reverse)

    def action_sort_reverse(self) -> None:
        self.sort_by(0 if self.sort_column is None else self.sort_column, not self.sort_reverse)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("sort_next", "sort_reverse"):
            return self.sortable
        return True

    def on_click(self, event: events.Click) -> None:
        if event.y >= 1:
            self.cursor = round(self.scroll_y) + event.y - 1

    # ------------------------------------------------------------------ drawing

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if not self._widths:
            self._update_virtual_size()
        scroll_x = round(self.scroll_x)
        if y == 0:
            strip = self._header_strip()
        else:
            position = round(self.scroll_y) + y - 1
            if position >= len(self.view):
                if position == 0:
                    style = self.get_component_rich_style("virtual-table--empty")
                    return Strip([Segment(fit(" " + self.empty_text, width), style)], width)
                return Strip.blank(width)
            is_cursor = position == self.cursor
            strip = self._row_strip(self.view[position], is_cursor)
            if is_cursor:
                cursor_style = self.get_component_rich_style("virtual-table--cursor")
                return strip.crop(scroll_x, scroll_x + width).extend_cell_length(width, cursor_style)
        return strip.crop(scroll_x, scroll_x + width).extend_cell_length(width)

    def _header_strip(self) -> Strip:
        style = self.get_component_rich_style("virtual-table--header")
        cells = []
        for n, (column, width) in enumerate(zip(self.columns, self._widths)):
            label = column.label
            if n == self.sort_column:
                label += " …" if self.sorting else " ▼" if self.sort_reverse else " ▲"
            cells.append(fit(label, width, column.align))
        text = " ".join(cells)
        return Strip([Segment(text, style)], cell_len(text))

    def _row_strip(self, index: int, is_cursor: bool) -> Strip:
        cursor_style = self.get_component_rich_style("virtual-table--cursor") if is_cursor else None
        segments: list[Segment] = []
        space = Segment(" ", cursor_style)
        length = 0
        for n, (column, width) in enumerate(zip(self.columns, self._widths)):
            if n:
                segments.append(space)
                length += 1
            text = fit(column.text(index), width, column.align, column.keep)
            style: Style | None = None
            if column.style is not None:
                tag = column.style(index)
                if tag:  # partial: the tag's colour over the table's own background
                    style = self.get_component_rich_style(f"virtual-table--{tag}", partial=True)
            if cursor_style is not None:
                style = style + cursor_style if style is not None else cursor_style
            segments.append(Segment(text, style))
            length += width
        return Strip(segments, length)
