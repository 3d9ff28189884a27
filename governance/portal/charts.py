"""The dashboard's 7-day chart as plain numbers for an SVG template (no JavaScript, no inline style)."""

from __future__ import annotations

from dataclasses import dataclass

from governance.portal.selectors import DayCount

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 12, 28


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: int


@dataclass(frozen=True)
class Column:
    label: str
    iso: str
    label_x: float
    decisions: Bar
    denials: Bar


@dataclass(frozen=True)
class Tick:
    y: float
    value: int


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    right: float
    columns: list[Column]
    ticks: list[Tick]
    total_decisions: int
    total_denials: int


def _nice_max(value: int) -> int:
    """A round axis maximum at or above ``value`` (1, 2, 5 × a power of ten)."""
    if value <= 4:
        return 4
    step = 1
    while True:
        for factor in (1, 2, 5):
            if value <= step * factor * 4:
                return step * factor * 4
        step *= 10


def decisions_chart(series: list[DayCount]) -> Chart:
    top = _nice_max(max((max(d.decisions, d.denials) for d in series), default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(series), 1)
    bar_w = slot * 0.34

    def bar(x: float, value: int) -> Bar:
        h = plot_h * value / top
        return Bar(
            x=round(x, 1),
            y=round(TOP + plot_h - h, 1),
            width=round(bar_w, 1),
            height=round(h, 1),
            value=value,
        )

    columns = []
    for i, day in enumerate(series):
        x0 = LEFT + i * slot + slot * 0.14
        columns.append(
            Column(
                label=day.day.strftime("%a %d"),
                iso=day.day.isoformat(),
                label_x=round(LEFT + i * slot + slot / 2, 1),
                decisions=bar(x0, day.decisions),
                denials=bar(x0 + bar_w + slot * 0.04, day.denials),
            )
        )
    ticks = [Tick(y=round(TOP + plot_h - plot_h * k / 4, 1), value=top * k // 4) for k in range(5)]
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        right=WIDTH - RIGHT,
        columns=columns,
        ticks=ticks,
        total_decisions=sum(d.decisions for d in series),
        total_denials=sum(d.denials for d in series),
    )
