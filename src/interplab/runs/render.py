"""Render a result's blocks (``core.blocks``) into a run record: figures as PNGs, the report
as self-contained HTML, and the tables as rich tables for the terminal."""

from __future__ import annotations

from interplab.core.blocks import Bars, Block, Graph, Heading, Heatmap, Lines, Scatter, Table, Text
from interplab.runs import figures
from interplab.runs.record import RunRecord
from interplab.runs.report import Report


def figure(block):
    """The matplotlib figure of one figure spec."""
    if isinstance(block, Heatmap):
        return figures.effect_heatmap(block.values.float(), block.rows, block.cols, block.title,
                                      significant=block.significant,
                                      halfwidth=None if block.halfwidth is None else block.halfwidth.float(),
                                      xlabel=block.xlabel, ylabel=block.ylabel, value_label=block.value_label)
    if isinstance(block, Scatter):
        return figures.scatter_compare(block.x.float(), block.y.float(), block.xlabel, block.ylabel, block.title)
    if isinstance(block, Lines):
        return figures.lines_plot(block.x, block.series, block.xlabel, block.ylabel, block.title,
                                  low=block.low, high=block.high, logy=block.logy, hline=block.hline,
                                  ylim=block.ylim)
    if isinstance(block, Bars):
        return figures.bars_plot(block.labels, block.values, block.xlabel, block.title,
                                 low=block.low, high=block.high, null=block.null)
    if isinstance(block, Graph):
        return figures.graph_plot(block.nodes, block.layers, block.sources, block.targets, block.scores,
                                  block.title, truth=block.truth, threshold=block.threshold,
                                  node_scores=block.node_scores, score_label=block.score_label)
    raise TypeError(f"not a figure spec: {type(block).__name__}")


def render_report(run: RunRecord, title: str, blocks: list[Block]) -> str:
    """Write every figure into ``run`` and return the report's HTML."""
    report = Report(title)
    for block in blocks:
        if isinstance(block, Heading):
            report.heading(block.text)
        elif isinstance(block, Text):
            report.text(block.text, note=block.note)
        elif isinstance(block, Table):
            if block.title:
                report.heading(block.title)
            report.table(block.header, block.rows)
        else:
            report.figure(run.save_figure(figure(block), block.name), block.caption or block.title)
    return report.render()


def print_blocks(blocks: list[Block]) -> None:
    """Print text and tables to the terminal (figures are in the report)."""
    from rich.console import Console
    from rich.table import Table as RichTable

    from interplab.runs.report import fmt

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped or captured: do not squeeze tables into 80 columns
    for block in blocks:
        if isinstance(block, Text):
            console.print(block.text, highlight=False, markup=False)
        elif isinstance(block, Heading):
            console.print(f"\n{block.text}", style="bold", highlight=False, markup=False)
        elif isinstance(block, Table):
            if block.title:  # a line of its own: rich would wrap a long title to the table's width
                console.print(block.title, style="italic", highlight=False, markup=False)
            table = RichTable()
            for col in block.header:
                table.add_column(str(col))
            for row in block.rows:
                table.add_row(*[fmt(c) for c in row])
            console.print(table)
