"""The virtual table on its own: cursor, paging, search, filter, sort, drawing only what shows."""

from __future__ import annotations

import time

from casconsole.widgets.vtable import Column, VirtualTable, fit
from textual.app import App, ComposeResult

NAMES = [f"pkg-{i:06d}" for i in range(1000)]
SIZES = [(i * 7919) % 1000 for i in range(1000)]


class TableApp(App):
    """A table over NAMES; text calls are counted to check that only visible rows are drawn."""

    def __init__(self, count: int = len(NAMES)):
        super().__init__()
        self.text_calls = 0
        self.moves: list[int | None] = []
        self.count = count

    def name_of(self, i: int) -> str:
        self.text_calls += 1
        return NAMES[i % len(NAMES)]

    def compose(self) -> ComposeResult:
        size = Column(
            "size", 6, lambda i: str(SIZES[i % 1000]), sort=lambda i: SIZES[i % 1000], align="right"
        )
        size.style = lambda i: "bad" if SIZES[i % 1000] > 900 else None
        columns = [Column("name", 12, self.name_of, flex=True), size]
        yield VirtualTable(columns, self.count, search=lambda i: NAMES[i % len(NAMES)])

    def on_mount(self) -> None:
        self.query_one(VirtualTable).focus()

    def on_virtual_table_cursor_moved(self, event: VirtualTable.CursorMoved) -> None:
        self.moves.append(event.index)


def row_text(app: TableApp, y: int) -> str:
    return app.query_one(VirtualTable).render_line(y).text


async def test_draws_only_visible_rows():
    app = TableApp()
    async with app.run_test(size=(40, 12)) as pilot:
        await pilot.pause()
        # a 12-line table shows a header and 11 rows: 1,000 rows never get their text made
        assert 0 < app.text_calls <= 4 * 11
        table = app.query_one(VirtualTable)
        assert row_text(app, 0).startswith("name")
        assert row_text(app, 1).startswith("pkg-000000")
        assert table.virtual_size.height == 1001


async def test_cursor_paging_and_edges():
    app = TableApp()
    async with app.run_test(size=(40, 12)) as pilot:
        table = app.query_one(VirtualTable)
        await pilot.press("down", "down")
        assert table.cursor_index == 2
        await pilot.press("pagedown")
        assert table.cursor_index == 2 + table.page_rows
        await pilot.press("end")
        await pilot.pause()
        assert table.cursor_index == 999
        assert round(table.scroll_y) == 1000 - table.page_rows  # the last row is on screen
        assert row_text(app, table.page_rows).startswith("pkg-000999")
        await pilot.press("home")
        assert table.cursor_index == 0 and round(table.scroll_y) == 0
        await pilot.press("up")  # stays on the first row
        assert table.cursor_index == 0
        await pilot.pause()
        assert app.moves[:2] == [0, 1] and 999 in app.moves


async def test_search_filter_and_sort_keep_the_cursor_row():
    app = TableApp()
    async with app.run_test(size=(40, 12)) as pilot:
        table = app.query_one(VirtualTable)
        table.set_query("pkg-0001")  # pkg-000100 .. pkg-000199
        assert len(table.view) == 100 and table.view[0] == 100
        table.cursor = 50
        assert table.cursor_index == 150
        table.set_filter(lambda i: i % 2 == 0)
        assert len(table.view) == 50
        assert table.cursor_index == 150  # still on the same row
        table.set_query("")
        assert len(table.view) == 500 and table.cursor_index == 150
        table.set_filter(None)
        await pilot.press("s")  # sort by the first column: the data's own order
        assert table.sort_column == 0
        await pilot.press("s")  # by size
        assert table.sort_column == 1
        sizes = [SIZES[i] for i in table.view]
        assert sizes == sorted(sizes)
        assert table.cursor_index == 150
        await pilot.press("S")
        sizes = [SIZES[i] for i in table.view]
        assert sizes == sorted(sizes, reverse=True)
        await pilot.pause()
        assert "size ▼" in row_text(app, 0)


async def test_rows_filtered_out_move_the_cursor_to_the_top():
    app = TableApp()
    async with app.run_test(size=(40, 12)) as pilot:
        table = app.query_one(VirtualTable)
        await pilot.press("end")
        table.set_query("pkg-00000")  # pkg-000000 .. pkg-000009: row 999 is gone
        assert table.cursor == 0 and table.cursor_index == 0 and round(table.scroll_y) == 0
        table.set_query("no such package")
        assert table.cursor_index is None
        await pilot.pause()
        assert "no rows" in row_text(app, 1)


async def test_refresh_rows_refilters_data_changed_in_place():
    flags = [True] * 1000
    app = TableApp()
    async with app.run_test(size=(40, 12)):
        table = app.query_one(VirtualTable)
        table.set_filter(lambda i: flags[i])
        assert len(table.view) == 1000
        flags[3] = False
        table.refresh_rows()
        assert len(table.view) == 999 and 3 not in table.view


async def test_cursor_row_and_tags_are_styled():
    app = TableApp()
    async with app.run_test(size=(40, 12)) as pilot:
        await pilot.pause()
        table = app.query_one(VirtualTable)
        cursor_style = table.get_component_rich_style("virtual-table--cursor")
        first = table.render_line(1)
        assert all(seg.style is not None and seg.style.bgcolor == cursor_style.bgcolor for seg in first)
        bad = table.get_component_rich_style("virtual-table--bad", partial=True)
        big = next(i for i in range(1, 11) if SIZES[i] > 900)
        size_cell = next(seg for seg in table.render_line(big + 1) if seg.text.strip() == str(SIZES[big]))
        assert size_cell.style.color == bad.color


async def test_half_a_million_rows_cost_nothing_to_show():
    app = TableApp(count=500_000)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(VirtualTable)
        started = time.perf_counter()
        table.set_data(None, 500_000)
        await pilot.press("end")
        await pilot.pause()
        assert time.perf_counter() - started < 1.0
        assert table.cursor_index == 499_999
        assert app.text_calls < 200


def test_fit_pads_and_cuts_to_cells():
    assert fit("abc", 5) == "abc  "
    assert fit("abc", 5, "right") == "  abc"
    assert fit("abcdef", 4) == "abc…"
    assert fit("日本語", 4) == "日 …"  # wide characters count two cells; half of one is a space
    assert fit("", 0) == ""


async def test_large_tables_sort_in_a_thread_and_stay_usable():
    app = TableApp()
    async with app.run_test(size=(40, 12)) as pilot:
        table = app.query_one(VirtualTable)
        table.BACKGROUND_SORT_ROWS = 100  # this table of 1,000 rows counts as large
        table.cursor = 5
        table.sort_by("size")
        assert table.sorting and "…" in row_text(app, 0)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not table.sorting and "size ▲" in row_text(app, 0)
        sizes = [SIZES[i] for i in table.view]
        assert sizes == sorted(sizes)
        assert table.cursor_index == 5  # the cursor stayed on its row
        # new data while a sort runs: the late order is dropped
        table.sort_by("size", reverse=True)
        table.set_data(None, 500)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert len(table.view) == 500 and sorted(table.view) == list(range(500))


async def test_typing_on_narrows_the_last_search():
    app = TableApp()
    async with app.run_test(size=(40, 12)):
        table = app.query_one(VirtualTable)
        table.set_query("pkg-0009")
        first = table._searched
        table.set_query("pkg-00099")
        assert table._searched[2] == [i for i in first[2] if "pkg-00099" in NAMES[i]]
        assert [NAMES[i] for i in table.view] == [f"pkg-00099{d}" for d in range(10)]
        table.set_query("pkg-0001")  # not a narrowing: from every row again
        assert len(table.view) == 100


LICENSES = ["MIT", "GPL-3.0-only WITH GCC-exception-3.1", "BSD-3-Clause"]
PATHS = ["/srv/mirror/conda-forge/linux-64", "/srv/mirror/internal/noarch", "/x"]


class SizedApp(App):
    """Columns sized to content: a flex name, a measured license with a cap, a path kept by its end."""

    def compose(self) -> ComposeResult:
        columns = [
            Column("name", 8, lambda i: NAMES[i], flex=True, auto=True, max_width=9),
            Column("license", 7, lambda i: LICENSES[i % 3], auto=True, max_width=16),
            Column("path", 6, lambda i: PATHS[i % 3], auto=True, max_width=20, keep="path"),
        ]
        yield VirtualTable(columns, 3)


async def test_columns_take_their_content_width_and_a_wide_terminal_shows_them_whole():
    app = SizedApp()
    async with app.run_test(size=(48, 8)) as pilot:
        await pilot.pause()
        # 48 columns: each at its cap (9 + 16 + 20), the name first given the room left
        first, second = row_text(app, 1), row_text(app, 2)
        assert first.startswith("pkg-000000 MIT ") and first.endswith(" …onda-forge/linux-64")  # its end
        assert "pkg-000001 GPL-3.0-only WI… " in second and second.rstrip().endswith("internal/noarch")
        await pilot.resize_terminal(40, 8)
        await pilot.pause()
        # narrower: the flex name gives up room first, down to its minimum, then the widest
        assert row_text(app, 1).startswith("pkg-000… ")
        assert row_text(app, 1).rstrip().endswith("linux-64")
        await pilot.resize_terminal(120, 8)
        await pilot.pause()
        # 120 columns: the cut texts whole before the name column widens
        assert "GPL-3.0-only WITH GCC-exception-3.1" in row_text(app, 2)
        assert "/srv/mirror/conda-forge/linux-64" in row_text(app, 1)
