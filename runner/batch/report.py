"""``report.html``: one self-contained page (inline CSS and SVG, no script, no external URL).

Confusion-matrix heat map, per-class F1 bars, phase timings, and the cluster and environment the
run used (from the run's ``context``). Standard library only.
"""

from __future__ import annotations

from html import escape

CELL = 18  # px per confusion-matrix cell
MAX_HEATMAP_CLASSES = 80


def _e(value) -> str:
    return escape(str(value), quote=True)


def _heat(fraction: float) -> str:
    # white -> dark blue
    r = int(255 - 225 * fraction)
    g = int(255 - 165 * fraction)
    b = int(255 - 55 * fraction)
    return f"rgb({r},{g},{b})"


def confusion_svg(cm: list[list[int]], labels: list[str]) -> str:
    """Rows true, columns predicted; each row coloured by its own share (recall view)."""
    k = len(labels)
    if k > MAX_HEATMAP_CLASSES:
        return f"<p>{k} classes: too many for a heat map; see metrics.json.</p>"
    margin = 8 + 7 * max((len(str(x)) for x in labels), default=1)
    size = margin + k * CELL + 4
    parts = [f'<svg role="img" width="{size}" height="{size}" '
             f'aria-label="confusion matrix" font-family="sans-serif" font-size="11">']
    for i, row in enumerate(cm):
        total = sum(row) or 1
        y = margin + i * CELL
        parts.append(f'<text x="{margin - 4}" y="{y + 13}" text-anchor="end">{_e(labels[i])}</text>')
        for j, n in enumerate(row):
            x = margin + j * CELL
            parts.append(f'<rect x="{x}" y="{y}" width="{CELL}" height="{CELL}" '
                         f'fill="{_heat(n / total)}" stroke="#ddd"><title>true {_e(labels[i])}, '
                         f'predicted {_e(labels[j])}: {n}</title></rect>')
    for j, label in enumerate(labels):
        x = margin + j * CELL + 13
        parts.append(f'<text x="{x}" y="{margin - 4}" transform="rotate(-90 {x} {margin - 4})">'
                     f'{_e(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def f1_bars_svg(per_class: dict) -> str:
    items = sorted(per_class.items(), key=lambda kv: -kv[1]["f1"])
    width, bar = 320, 14
    label_w = 8 + 7 * max((len(k) for k in per_class), default=1)
    height = len(items) * (bar + 4) + 4
    parts = [f'<svg role="img" width="{label_w + width + 60}" '
             f'height="{height}" aria-label="F1 per class" font-family="sans-serif" font-size="11">']
    for i, (label, s) in enumerate(items):
        y = 2 + i * (bar + 4)
        w = max(0.0, min(1.0, s["f1"])) * width
        parts.append(f'<text x="{label_w - 4}" y="{y + 11}" text-anchor="end">{_e(label)}</text>'
                     f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar}" fill="#3b6fb6">'
                     f'<title>{_e(label)}: F1 {s["f1"]:.3f}, precision {s["precision"]:.3f}, '
                     f'recall {s["recall"]:.3f}, support {s["support"]}</title></rect>'
                     f'<text x="{label_w + w + 4:.1f}" y="{y + 11}">{s["f1"]:.3f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(rows: list[tuple[str, object]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + \
        "</table>"


def render_report(metrics: dict) -> str:
    ctx = metrics.get("context") or {}
    timings = metrics.get("timings", {})
    total = sum(timings.values()) or 1.0
    timing_rows = "".join(
        f'<tr><th>{_e(k)}</th><td>{v:.2f} s</td><td><div class="bar" '
        f'style="width:{200 * v / total:.0f}px"></div></td></tr>' for k, v in timings.items())
    summary = [
        ("job", metrics.get("job")), ("model", metrics.get("params", {}).get("model", {}).get("kind")),
        ("accuracy", f"{metrics['accuracy']:.4f}"), ("macro-F1", f"{metrics['macro_f1']:.4f}"),
        ("majority class rate", f"{metrics.get('majority_rate', 0):.4f}"),
        ("train / test rows", f"{metrics.get('n_train')} / {metrics.get('n_test')}"),
        ("dropped rows", metrics.get("dropped_rows")), ("classes", metrics.get("n_classes")),
    ]
    if "skipped_files" in metrics:
        summary.append(("skipped files", metrics["skipped_files"]))
    environment = [
        ("run id", ctx.get("run_id", "")), ("cluster", ctx.get("cluster", "")),
        ("scheduler", ctx.get("scheduler", "")), ("lock hash", ctx.get("lock_hash", "")),
        ("workers", metrics.get("n_workers")), ("partitions", metrics.get("n_partitions")),
        ("dataset digest", ctx.get("dataset", "")), ("started", metrics.get("started_at", "")),
    ]
    search = ""
    if metrics.get("search"):
        rows = "".join(f"<tr><td>{_e(r['params'])}</td><td>{r['macro_f1']:.4f}</td>"
                       f"<td>{r['accuracy']:.4f}</td></tr>" for r in metrics["search"]["results"])
        search = ("<h2>Grid search (validation split)</h2><table><tr><th>params</th>"
                  f"<th>macro-F1</th><th>accuracy</th></tr>{rows}</table>")
    title = _e(ctx.get("run_id", metrics.get("job")))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>daskfleet run {title}</title>
<style>
body{{font-family:sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse;margin-bottom:1em}}
th,td{{text-align:left;padding:2px 10px;border-bottom:1px solid #eee}} .bar{{background:#e08a2c;height:10px}}
section{{display:inline-block;vertical-align:top;margin-right:3em}}
</style></head><body>
<h1>Run {_e(ctx.get('run_id', ''))} &mdash; job {_e(metrics.get('job'))}</h1>
<section><h2>Result</h2>{_table(summary)}</section>
<section><h2>Cluster and environment</h2>{_table(environment)}</section>
<h2>Phase timings</h2><table>{timing_rows}</table>
<h2>F1 per class</h2>{f1_bars_svg(metrics.get('per_class', {}))}
<h2>Confusion matrix (rows: true, columns: predicted)</h2>
{confusion_svg(metrics.get('confusion_matrix', []), [str(x) for x in metrics.get('labels', [])])}
{search}
</body></html>
"""
