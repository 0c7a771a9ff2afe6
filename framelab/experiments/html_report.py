"""One self-contained HTML file for a run: every claim, its verdict and its evidence.

Styles, the script, the diagrams (inline SVG) and the charts (PNG as data:
URIs) are all inside the file, so it opens anywhere without a network. It
shows the environment (kernel, Python, the kernel settings the lab touches,
read live), a table of every claim of the notes with its verdict, filters by
verdict and by experiment, and under each claim, opened by a click: the
summary, the parts and how each fared, the observed values, the packet trace
as a ladder diagram and as text, the charts, and a link to its pcap file.
Last, the TCP state machine with the transitions this run observed.

Built from results in their JSON form, so a saved `--json` file can be
turned into a report as well. Linear in the size of the results.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from framelab.experiments.claims import CLAIMS
from framelab.experiments.drawing import to_svg
from framelab.experiments.ladder import ladder
from framelab.experiments.statediagram import state_diagram

VERDICTS = ("confirmed", "partly", "differs", "skipped", "not run")

_STYLE = """
:root { --ok:#1b7f3b; --partly:#b26a00; --differs:#c0392b; --skipped:#777; --line:#dde2e8; }
body { font: 14px/1.45 "DejaVu Sans", Verdana, sans-serif; color:#222; margin: 0 auto;
       max-width: 1280px; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.env { color:#555; margin: 0 0 8px; }
.counts span { display:inline-block; margin-right: 14px; font-weight: bold; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: 5px 8px;
         border-bottom: 1px solid var(--line); }
th { background: #f3f5f8; position: sticky; top: 0; }
tr.claim { cursor: pointer; } tr.claim:hover { background: #f7f9fc; }
tr.claim td:first-child::before { content: "\\25B8"; display:inline-block; width: 14px;
                                  color:#889; }
tr.claim[aria-expanded="true"] td:first-child::before { content: "\\25BE"; }
.verdict { font-weight: bold; white-space: nowrap; }
.v-confirmed { color: var(--ok); } .v-partly { color: var(--partly); }
.v-differs { color: var(--differs); } .v-skipped, .v-not-run { color: var(--skipped); }
.filters { display:flex; flex-wrap: wrap; gap: 8px; align-items: center; margin: 8px 0 12px; }
.filters button { border: 1px solid #c8ced6; background: #fff; border-radius: 14px;
                  padding: 3px 12px; cursor: pointer; font: inherit; }
.filters button[aria-pressed="true"] { background: #2d3e50; color: #fff; border-color: #2d3e50; }
.filters select { font: inherit; padding: 2px 6px; }
td.detail { background: #fbfcfd; padding: 10px 16px 18px; }
.detail h3 { font-size: 14px; margin: 14px 0 4px; }
.parts li { margin: 2px 0; } .mark { font-weight: bold; }
.mark-holds { color: var(--ok); } .mark-fails { color: var(--differs); }
.mark-not-observed { color: var(--skipped); }
pre { background: #f4f6f8; padding: 8px 10px; overflow-x: auto; font-size: 12px; margin: 4px 0; }
.diagram { overflow-x: auto; border: 1px solid var(--line); background: #fff; padding: 4px; }
.diagram svg { display: block; }
img.chart { max-width: 100%; border: 1px solid var(--line); margin: 4px 0; }
dl.settings { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 6px 0; }
dl.settings dt { font-family: "DejaVu Sans Mono", monospace; } dl.settings dd { margin: 0; }
.muted { color: #777; }
"""

_SCRIPT = """
(function () {
  var verdict = "all", experiment = "all";
  function apply() {
    var shown = 0;
    document.querySelectorAll("tr.claim").forEach(function (row) {
      var ok = (verdict === "all" || row.dataset.verdict === verdict) &&
               (experiment === "all" || row.dataset.experiment === experiment);
      row.hidden = !ok;
      var detail = document.getElementById(row.dataset.detail);
      if (!ok) { detail.hidden = true; row.setAttribute("aria-expanded", "false"); }
      if (ok) { shown += 1; }
    });
    document.getElementById("shown-count").textContent = shown;
  }
  document.querySelectorAll("button[data-verdict]").forEach(function (button) {
    button.addEventListener("click", function () {
      verdict = button.dataset.verdict;
      document.querySelectorAll("button[data-verdict]").forEach(function (b) {
        b.setAttribute("aria-pressed", String(b === button));
      });
      apply();
    });
  });
  document.getElementById("experiment-filter").addEventListener("change", function (event) {
    experiment = event.target.value;
    apply();
  });
  document.querySelectorAll("tr.claim").forEach(function (row) {
    row.addEventListener("click", function () {
      var detail = document.getElementById(row.dataset.detail);
      detail.hidden = !detail.hidden;
      row.setAttribute("aria-expanded", String(!detail.hidden));
    });
  });
  apply();
  var wanted = document.getElementById("claim-" + location.hash.slice(1));  // report.html#C18
  if (wanted) { wanted.click(); wanted.scrollIntoView(); }
})();
"""


def _verdict_class(verdict: str) -> str:
    return "v-" + verdict.replace(" ", "-")


def _environment_line(env: Mapping[str, Any]) -> str:
    root = "root: packet captures and namespaces on" if env.get("root") else "not root"
    uvloop = f"uvloop {env['uvloop']}" if env.get("uvloop") else "no uvloop"
    return (
        f"{env.get('system', '')} {env.get('kernel', '')} ({env.get('machine', '')}, "
        f"{env.get('cpus', '?')} CPUs), {env.get('implementation', 'Python')} "
        f"{env.get('python', '')}, {uvloop}; {root}"
    )


def _parts(result: Mapping[str, Any]) -> str:
    parts = result.get("parts") or []
    if not parts:
        return ""
    items = []
    for part in parts:
        if isinstance(part, Mapping):
            holds = part.get("holds")
            mark = {True: "holds", False: "fails", None: "not observed"}.get(holds, str(holds))
            items.append(
                f'<li><span class="mark mark-{mark.replace(" ", "-")}">{escape(mark)}</span>: '
                f"{escape(str(part.get('part', '')))} "
                f'<span class="muted">({escape(str(part.get("evidence", "")))})</span></li>'
            )
        else:
            items.append(f"<li>{escape(str(part))}</li>")
    return f'<h3>Parts</h3><ul class="parts">{"".join(items)}</ul>'


def _json_block(title: str, value: Any) -> str:
    if not value:
        return ""
    text = json.dumps(value, indent=2, default=str, ensure_ascii=False)
    return f"<h3>{escape(title)}</h3><pre>{escape(text)}</pre>"


def _detail(
    result: Mapping[str, Any] | None,
    claim: str,
    pcap: str | None,
    charts: Sequence[tuple[str, bytes]],
) -> str:
    if result is None:
        return '<p class="muted">Not run: this run did not include the experiment for it.</p>'
    out = [f"<h3>Summary</h3><p>{escape(str(result.get('summary', '')))}</p>"]
    out.append(_parts(result))
    trace = [str(line) for line in result.get("trace") or []]
    drawing = ladder(trace, f"{claim} {result.get('experiment', '')}") if trace else None
    if drawing is not None:
        out.append(f'<h3>Ladder diagram</h3><div class="diagram ladder">{to_svg(drawing)}</div>')
    for name, png in charts:
        data = base64.b64encode(png).decode("ascii")
        out.append(
            f"<h3>Chart: {escape(name)}</h3>"
            f'<img class="chart" alt="{escape(name)}" src="data:image/png;base64,{data}">'
        )
    if pcap:
        out.append(
            f'<h3>Packets</h3><p><a href="{escape(pcap)}" download>{escape(pcap)}</a> '
            '<span class="muted">(pcap: tcpdump -r, tshark -r, Wireshark)</span></p>'
        )
    out.append(_json_block("Observed", result.get("observed")))
    out.append(_json_block("Expected by the kernel's rules (not observed)", result.get("expected")))
    out.append(_json_block("Context", result.get("context")))
    if trace:
        out.append(f"<h3>Trace</h3><pre>{escape(chr(10).join(trace))}</pre>")
    return "".join(out)


def render_report(
    results: Sequence[Mapping[str, Any]],
    *,
    environment: Mapping[str, Any],
    settings: Sequence[tuple[str, str | None]] = (),
    pcaps: Mapping[str, str] | None = None,
    charts: Mapping[str, Sequence[tuple[str, bytes]]] | None = None,
    generated: str | None = None,
) -> str:
    """The whole HTML document. `pcaps`: claim -> link; `charts`: experiment -> PNGs."""
    pcaps = pcaps or {}
    charts = charts or {}
    by_claim: dict[str, Mapping[str, Any]] = {}
    for each in results:
        by_claim.setdefault(str(each.get("claim")), each)
    claim_ids = list(CLAIMS) + sorted(c for c in by_claim if c not in CLAIMS)
    counts = dict.fromkeys(VERDICTS, 0)
    rows = []
    experiments: list[str] = []
    for number, claim in enumerate(claim_ids):
        result = by_claim.get(claim)
        verdict = str(result.get("verdict")) if result else "not run"
        experiment = str(result.get("experiment", "")) if result else ""
        if experiment and experiment not in experiments:
            experiments.append(experiment)
        counts[verdict] = counts.get(verdict, 0) + 1
        summary = str(result.get("summary", "")) if result else ""
        short = summary if len(summary) <= 220 else summary[:217] + "..."
        pcap = pcaps.get(claim)
        detail_id = f"detail-{number}"
        rows.append(
            f'<tr class="claim" id="claim-{escape(claim)}" data-claim="{escape(claim)}" '
            f'data-verdict="{escape(verdict)}" data-experiment="{escape(experiment or "none")}" '
            f'data-detail="{detail_id}" aria-expanded="false">'
            f"<td>{escape(claim)}</td><td>{escape(CLAIMS.get(claim, ''))}</td>"
            f'<td class="verdict {_verdict_class(verdict)}">{escape(verdict)}</td>'
            f"<td>{escape(experiment or '-')}</td><td>{escape(short)}</td></tr>"
            f'<tr class="detail-row" id="{detail_id}" hidden><td class="detail" colspan="5">'
            f"{_detail(result, claim, pcap, charts.get(experiment, ()))}</td></tr>"
        )
    buttons = ['<button type="button" data-verdict="all" aria-pressed="true">all</button>']
    buttons += [
        f'<button type="button" data-verdict="{v}" aria-pressed="false">{v} ({counts[v]})</button>'
        for v in VERDICTS
        if counts.get(v)
    ]
    options = ['<option value="all">every experiment</option>'] + [
        f'<option value="{escape(e)}">{escape(e)}</option>' for e in experiments
    ]
    counts_html = "".join(
        f'<span class="{_verdict_class(v)}">{counts[v]} {escape(v)}</span>'
        for v in VERDICTS
        if counts.get(v)
    )
    setting_rows = "".join(
        f"<dt>{escape(name)}</dt><dd>{escape(value) if value is not None else '<i>absent</i>'}</dd>"
        for name, value in settings
    )
    diagram = to_svg(state_diagram(results, "TCP state machine: what this run observed"))
    stamp = generated or datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>framelab: TCP claims checked on Linux {escape(str(environment.get("kernel", "")))}</title>
<style>{_STYLE}</style></head>
<body>
<h1>The notes' TCP claims, checked on this kernel</h1>
<p class="env">{escape(_environment_line(environment))}. Generated {escape(stamp)}.</p>
<p class="counts">{counts_html}</p>
<details id="settings"><summary>Kernel settings the lab touches (live values)</summary>
<dl class="settings">{setting_rows}</dl>
<p class="muted">framelab sysctl explains each one.</p></details>
<h2>Claims</h2>
<div class="filters" role="toolbar" aria-label="filter claims">
<span>verdict:</span>{"".join(buttons)}
<label>experiment: <select id="experiment-filter">{"".join(options)}</select></label>
<span class="muted"><span id="shown-count">{len(claim_ids)}</span> of {len(claim_ids)} shown;
click a claim for its evidence</span>
</div>
<table id="claims"><thead><tr><th>claim</th><th>what the notes say</th><th>verdict</th>
<th>experiment</th><th>what this kernel did</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
<h2>The TCP state machine</h2>
<div class="diagram" id="state-diagram">{diagram}</div>
<script>{_SCRIPT}</script>
</body></html>
"""


def write_report(
    path: Path,
    results: Sequence[Mapping[str, Any]],
    *,
    environment: Mapping[str, Any],
    settings: Sequence[tuple[str, str | None]] = (),
    pcaps: Mapping[str, Path] | None = None,
    chart_files: Sequence[Path] = (),
) -> Path:
    """Write the report; pcap links relative to its folder, charts (named by experiment) inline."""
    base = path.resolve().parent
    links = {}
    for name, pcap in (pcaps or {}).items():
        try:
            links[name] = str(pcap.resolve().relative_to(base))
        except ValueError:
            links[name] = pcap.resolve().as_uri()
    charts: dict[str, list[tuple[str, bytes]]] = {}
    for chart in chart_files:
        charts.setdefault(chart.stem, []).append((chart.name, chart.read_bytes()))
    html = render_report(
        results, environment=environment, settings=settings, pcaps=links, charts=charts
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path
