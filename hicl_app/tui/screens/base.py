"""Screens that show catalog data: load it in a thread, show it on the UI thread, and load
again when the app reports that the catalog changed (or on return, if it changed meanwhile)."""

from __future__ import annotations

from typing import Any

from textual import work
from textual.screen import Screen
from textual.worker import get_current_worker


class LiveScreen(Screen):
    stale = False
    shown: Any = None  # the data on screen: a reload that reads the same again draws nothing

    def on_mount(self) -> None:
        self.reload()

    def on_screen_resume(self) -> None:
        if self.stale:
            self.stale = False
            self.reload()

    def reload(self, redraw: bool = False) -> None:
        """Read the catalog again, off the UI thread; a newer reload supersedes an older one.
        `redraw` draws even unchanged data (after a theme change)."""
        self._load(redraw)

    @work(thread=True, exclusive=True, group="load")
    def _load(self, redraw: bool) -> None:
        try:
            data = self.load()
        except Exception as exc:  # a vanished run, a locked database: say so, keep running
            self.app.call_from_thread(self.load_failed, exc)
            return
        if get_current_worker().is_cancelled or (data == self.shown and not redraw):
            return
        self.shown = data
        self.app.call_from_thread(self._show, data)

    async def _show(self, data: Any) -> None:
        """show_data, unless the screen was taken down while the data was read (the app quitting,
        the screen popped): its widgets are gone then and there is nothing to draw."""
        from inspect import isawaitable

        from textual.css.query import NoMatches

        if not self.app.is_running or not self.is_attached or self not in self.app.screen_stack:
            return
        try:
            result = self.show_data(data)
            if isawaitable(result):
                await result
        except NoMatches:
            if self.app.is_running and self.is_attached and self in self.app.screen_stack:
                raise

    def load(self) -> Any:
        """Read what the screen shows (called in a worker thread)."""
        raise NotImplementedError

    def show_data(self, data: Any) -> None:
        """Put freshly loaded data on screen (UI thread)."""
        raise NotImplementedError

    def load_failed(self, exc: Exception) -> None:
        render = getattr(exc, "render", None)
        self.notify(render() if callable(render) else f"{type(exc).__name__}: {exc}",
                    title="could not read the catalog", severity="error")
