"""The model card as files: an HTML page (the plot inside), the same in Markdown, the plot as PNG, and JSON.

One page a reviewer reads top to bottom: what the version is and where it
serves, what it learnt from, how accurate it is per class (the plot: accuracy
with 90 % intervals, the overall figure as a line), how well its confidence
is calibrated, the gates it passed, its known weaknesses, the contract of
each serving signature, and its rollout history.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI

import matplotlib.pyplot as plt

from core import storage
from pipeline.model_card import Accuracy, ModelCard
from release.history import format_entry

HTML_FILE, MARKDOWN_FILE, PLOT_FILE, JSON_FILE = (
    "model_card.html",
    "model_card.md",
    "per_class.png",
    "model_card.json",
)
STYLE = (
    "body{font-family:sans-serif;max-width:60rem;margin:2rem auto;color:#222}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}"
    "th{background:#f2f2f2}code{background:#f6f6f6;padding:0 .2rem}.weak{color:#b00}"
)


def per_class_plot(card: ModelCard) -> bytes:
    """PNG: per-class gold accuracy with its 90 % interval, and the overall accuracy as a line."""
    fig, ax = plt.subplots(figsize=(8.5, 3.8))
    rows = list(reversed(card.per_class))
    y = range(len(rows))
    values = [a.value for a in rows]
    errors = [[a.value - a.low for a in rows], [a.high - a.value for a in rows]]
    weakest = {a.name for a in card.weakest}
    colors = ["#c44e52" if a.name in weakest else "#4c72b0" for a in rows]
    ax.barh(y, values, xerr=errors, color=colors, capsize=3, ecolor="#333")
    ax.set_yticks(list(y), [f"{a.name} ({a.examples})" for a in rows], fontsize=8)
    overall = ""
    if card.overall is not None:
        ax.axvline(card.overall.value, color="grey", linestyle="--")
        overall = f"; dashed: overall {card.overall.value:.1%}"
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"gold accuracy; whiskers: 90 % interval; red: the weakest classes{overall}")
    ax.set_title(f"{card.model} version {card.version}: accuracy per true class (gold images)")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    return png.getvalue()


def _accuracy_text(a: Accuracy) -> str:
    return f"{a.value:.1%} ({a.low:.1%} to {a.high:.1%}; {a.right} of {a.examples})"


def _version_lines(card: ModelCard) -> list[str]:
    report = f", report {card.run_report}" if card.run_report else ""
    return [
        f"{card.model} version {card.version}, now: {card.role}",
        f"pushed to {card.pushed_destination}",
        f"run {card.run or 'unknown'}{report}",
    ]


def _data_lines(card: ModelCard) -> list[str]:
    images = sum(s["images"] or 0 for s in card.spans)
    lines = [f"{images:,} images in spans {[s['span'] for s in card.spans]}"]
    for span in card.spans:
        count = span["images"] if span["images"] is not None else "?"
        lines.append(f"span {span['span']}: {count} images, {span['source'] or 'no manifest'}")
    return [
        *lines,
        f"warm-started from: {card.warm_started_from or 'nothing (trained from scratch)'}",
        f"hyperparameters: {json.dumps(card.hyperparameters, sort_keys=True)}",
    ]


def _accuracy_rows(card: ModelCard) -> list[list[str]]:
    slices = ([card.overall] if card.overall else []) + card.per_class
    return [["slice", "accuracy", "90 % interval", "gold images"]] + [
        [a.name, f"{a.value:.1%}", f"{a.low:.1%} to {a.high:.1%}", str(a.examples)] for a in slices
    ]


def _calibration_lines(card: ModelCard) -> list[str]:
    if card.calibration_error is None:
        return ["expected calibration error of the top answer: unknown"]
    return [
        f"expected calibration error of the top answer: {card.calibration_error:.4f} "
        f"(from {card.calibration_source}): the confidence it states is off from its accuracy by that much, "
        "on average over the gold images"
    ]


def _weakness_lines(card: ModelCard) -> list[str]:
    weak = [f"weak class {a.name}: {_accuracy_text(a)}" for a in card.weakest]
    confused = [f"{c['true']} taken for {c['predicted']}: {c['examples']} gold images" for c in card.confused]
    return weak + confused or ["none measured"]


def _signature_rows(card: ModelCard) -> list[list[str]]:
    return [["signature", "method", "inputs", "outputs"]] + [
        [s["name"], s["method"], _tensors(s["inputs"]), _tensors(s["outputs"])] for s in card.signatures
    ]


def _history_lines(card: ModelCard) -> list[str]:
    return [format_entry(h) for h in card.history] or [f"no entry names this version ({card.history_file})"]


def sections(card: ModelCard) -> list[tuple[str, list]]:
    """(title, lines) or (title, table rows with a header row first): what both formats show, in order."""
    shown = [
        ("Version", _version_lines(card)),
        ("Training data", _data_lines(card)),
        ("Gold accuracy", _accuracy_rows(card)),
        ("Calibration", _calibration_lines(card)),
        ("Gates passed", card.gates),
        ("Known weaknesses", _weakness_lines(card)),
        ("Serving signatures", _signature_rows(card)),
        ("Rollout history", _history_lines(card)),
    ]
    return shown + ([("Not available", card.missing)] if card.missing else [])


def _tensors(items: list[dict[str, str]]) -> str:
    return ", ".join(f"{t['name']}: {t['dtype']} {t['shape']}" for t in items)


def _is_table(body: list) -> bool:
    return bool(body) and isinstance(body[0], list)


def to_markdown(card: ModelCard) -> str:
    parts = [
        f"# Model card: {card.model} version {card.version}",
        "",
        f"![per-class accuracy]({PLOT_FILE})",
        "",
    ]
    for title, body in sections(card):
        parts += [f"## {title}", ""]
        if _is_table(body):
            parts.append("| " + " | ".join(body[0]) + " |")
            parts.append("|" + "---|" * len(body[0]))
            parts += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body[1:]]
        else:
            parts += [f"- {line}" for line in body]
        parts.append("")
    return "\n".join(parts)


def to_html(card: ModelCard, plot: bytes) -> str:
    esc = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Model card: {esc(card.model)} "
        f"version {card.version}</title><style>{STYLE}</style></head><body>",
        f"<h1>Model card: {esc(card.model)} version {card.version}</h1>",
        f"<img alt='per-class accuracy' src='data:image/png;base64,{base64.b64encode(plot).decode()}'>",
    ]
    for title, body in sections(card):
        parts.append(f"<h2>{esc(title)}</h2>")
        if _is_table(body):
            header = "".join(f"<th>{esc(c)}</th>" for c in body[0])
            rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in body[1:])
            parts.append(f"<table><tr>{header}</tr>{rows}</table>")
        else:
            css = " class='weak'" if title == "Known weaknesses" else ""
            parts.append(f"<ul{css}>" + "".join(f"<li>{esc(line)}</li>" for line in body) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_model_card(card: ModelCard, output: str) -> dict[str, str]:
    """Write the four files into `output` (checked writable by the caller); their paths by file name."""
    plot = per_class_plot(card) if card.per_class else b""
    paths = {name: os.path.join(output, name) for name in (HTML_FILE, MARKDOWN_FILE, PLOT_FILE, JSON_FILE)}
    if plot:
        storage.write_bytes(paths[PLOT_FILE], plot)
    storage.write_text(paths[MARKDOWN_FILE], to_markdown(card))
    storage.write_text(paths[HTML_FILE], to_html(card, plot))
    storage.write_text(paths[JSON_FILE], json.dumps(card.to_json(), indent=2))
    return {name: path for name, path in paths.items() if plot or name != PLOT_FILE}
