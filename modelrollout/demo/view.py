"""What the demo shows while it runs: a rich live view on a terminal, plain progress lines elsewhere.

Both read the same ``Journal``. The live view redraws phase, step, weight, per-track traffic as clients
see it, the last analysis verdicts and the last events; the plain view prints each note, chapter,
event and analysis once, as a line with the seconds since the start — readable in CI logs.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import IO, Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from modelrollout.demo.journal import Journal, Verdict
from modelrollout.demo.load import TrackStats

VERDICT_STYLE = {"Pass": "green", "Fail": "bold red", "Inconclusive": "yellow", "Error": "magenta"}


class View(Protocol):
    def __enter__(self) -> View: ...
    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None: ...
    def update(self, journal: Journal, traffic: dict[str, TrackStats]) -> None: ...
    def print_lines(self, lines: list[str]) -> None: ...


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{1000 * value:.0f} ms"


def _verdict_text(verdict: Verdict) -> str:
    shown = "no data" if verdict.value is None else f"{verdict.value:.4g}"
    return f"{verdict.check} {shown} (limit {verdict.limit})"


def analysis_line(verdicts: list[Verdict]) -> str:
    """One analysis (the checks of one tick) as one line."""
    worst = next(
        (v for level in ("Fail", "Error", "Inconclusive") for v in verdicts if v.verdict == level), verdicts[0]
    )
    checks = " · ".join(f"{_verdict_text(v)} {v.verdict}" for v in verdicts)
    return f"{verdicts[0].version} analysis {worst.verdict}: {checks}"


def _group_by_tick(verdicts: list[Verdict]) -> list[list[Verdict]]:
    groups: list[list[Verdict]] = []
    for verdict in verdicts:
        if groups and groups[-1][0].at == verdict.at:
            groups[-1].append(verdict)
        else:
            groups.append([verdict])
    return groups


class PlainView:
    """Prints every new note, chapter, event and analysis once; nothing is redrawn."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._console = Console(file=stream or sys.stdout, highlight=False, soft_wrap=True)
        self._seen = {"notes": 0, "chapters": 0, "events": 0, "verdicts": 0}

    def __enter__(self) -> PlainView:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        return None

    def _line(self, journal: Journal, at: float, text: str) -> None:
        self._console.print(f"{journal.since(at):6.1f}s  {text}", markup=False)

    def update(self, journal: Journal, traffic: dict[str, TrackStats]) -> None:
        seen = self._seen
        for at, text in journal.notes[seen["notes"] :]:
            self._line(journal, at, text)
        for chapter in journal.chapters[seen["chapters"] :]:
            self._line(journal, chapter.started, f"== {chapter.title}")
        for event in journal.events[seen["events"] :]:
            self._line(journal, event.at, f"{event.version} {event.reason}: {event.message}")
        new_verdicts = journal.verdicts[seen["verdicts"] :]
        for group in _group_by_tick(new_verdicts):
            self._line(journal, group[0].at, analysis_line(group))
        seen.update(
            notes=len(journal.notes), chapters=len(journal.chapters), events=len(journal.events),
            verdicts=len(journal.verdicts),
        )  # fmt: skip

    def print_lines(self, lines: list[str]) -> None:
        for line in lines:
            self._console.print(line, markup=False)


class LiveView:
    """A rich ``Live`` display redrawn four times a second."""

    def __init__(self, console: Console | None = None) -> None:
        self._console = console or Console()
        self._live = Live(Text("starting…"), console=self._console, refresh_per_second=4, transient=False)

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._live.__exit__(kind, error, traceback)

    def update(self, journal: Journal, traffic: dict[str, TrackStats]) -> None:
        self._live.update(render(journal, traffic))

    def print_lines(self, lines: list[str]) -> None:
        for line in lines:
            self._console.print(line, markup=False, highlight=False)


def render(journal: Journal, traffic: dict[str, TrackStats]) -> Group:
    status = journal.status
    chapter = journal.chapter()
    last_tick = journal.ticks[-1] if journal.ticks else None
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("chapter", chapter.title if chapter else "preparing")
    if journal.notes:
        head.add_row("now", journal.notes[-1][1])
    if status is not None:
        steps = f"{status.current_step + 1}" if status.canary else "-"
        weight = last_tick.weight if last_tick else 0
        bar = "█" * (weight // 5) + "░" * (20 - weight // 5)
        head.add_row("phase", Text(str(status.phase or "-"), style="bold cyan"))
        head.add_row("stable / canary", f"{status.stable_version or '-'} / {status.canary_version or '-'}")
        head.add_row("step", steps)
        head.add_row("canary weight", f"{bar} {weight}%")
        head.add_row("message", status.message or "")
    head.add_row("metrics", journal.metrics or "-")

    tracks = Table(title="traffic as clients see it (last 3 s)", expand=True)
    for column in ("track", "version", "req/s", "errors", "p95"):
        tracks.add_column(column)
    versions = {
        "stable": status.stable_version if status else None,
        "canary": status.canary_version if status else None,
        "preview": status.canary_version if status else None,
    }
    for track, stats in sorted(traffic.items()):
        tracks.add_row(track, versions.get(track) or "-", f"{stats.requests_per_second:.1f}",
                       _percent(stats.error_rate), _ms(stats.p95_seconds))  # fmt: skip

    verdicts = Table(title="last analysis checks (operator)", expand=True)
    for column in ("t", "version", "check", "value", "limit", "verdict"):
        verdicts.add_column(column)
    for verdict in journal.verdicts[-6:]:
        value = "no data" if verdict.value is None else f"{verdict.value:.4g}"
        shown = Text(verdict.verdict, style=VERDICT_STYLE.get(verdict.verdict, ""))
        verdicts.add_row(
            f"{journal.since(verdict.at):.1f}s", verdict.version, verdict.check, value, verdict.limit or "", shown
        )

    events = Table(title="events", expand=True)
    events.add_column("t")
    events.add_column("reason")
    events.add_column("message")
    for event in journal.events[-6:]:
        events.add_row(f"{journal.since(event.at):.1f}s", Text(event.reason, style="red" if event.warning else ""),
                       event.message)  # fmt: skip
    return Group(Panel(head, title="modelrollout demo — no cluster"), tracks, verdicts, events)


def make_view(live: bool | None) -> View:
    """The live view on a terminal (or when asked), plain lines otherwise."""
    console = Console()
    if live is None:
        live = console.is_terminal
    return LiveView(console) if live else PlainView()
