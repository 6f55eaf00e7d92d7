"""The run report of `curate run`: one page (`report.html`) and one file (`run.json`) for a whole pipeline.

It reads only what the stages already wrote (their summaries, `_stats/` timings, `report.json` files and
PNGs), so it can be rebuilt at any time. Rows: what entered and left each stage, with the reason for every
row that left; then duplicates, caption diversity before/after, training and the audit's replication metrics,
and links to each stage's own report.
"""

from __future__ import annotations

import os
import time
from typing import Any

from curate import __version__
from curate.io import fs
from curate.report import html, plots


def _work_seconds(folder: str) -> float | None:
    """Summed shard seconds from the executor's markers (kept across resumes)."""
    stats = os.path.join(folder, "_stats")
    if not os.path.isdir(stats):
        return None
    return round(sum(float(fs.read_json(os.path.join(stats, name)).get("seconds", 0.0))
                     for name in sorted(os.listdir(stats)) if name.endswith(".json")), 2)


def row_flow(name: str, summary: dict[str, Any]) -> dict[str, Any]:
    """(rows in, rows out, reasons for the rows that left, notes) of one stage, from its summary."""
    s = summary or {}
    flow: dict[str, Any] = {"rows_in": s.get("rows_in"), "rows_out": s.get("rows_out"),
                            "left": dict(s.get("reasons", {})), "notes": ""}
    if name == "sample":
        flow.update(rows_in=None, rows_out=s.get("rows"),
                    notes=f"{s.get('originals')} originals, {s.get('copies')} planted copies, "
                          f"{s.get('hostile_rows')} hostile rows")
    elif name == "dedup":
        removed = (s.get("rows_in") or 0) - (s.get("rows_out") or 0)
        flow["left"] = {"near_duplicate (see drops/)": removed} if removed else {}
        flow["notes"] = (f"{s.get('duplicate_clusters')} duplicate clusters, {s.get('duplicates_marked')} rows marked "
                         f"keep=false ({s.get('action')})")
    elif name == "recaption":
        flow.update(rows_in=s.get("samples"), rows_out=s.get("samples"),
                    notes=f"{s.get('targeted')} targeted, {s.get('changed')} captions changed, "
                          f"{s.get('empty_captions')} empty kept as they are")
    elif name == "export":
        excluded = dict(s.get("excluded", {}))
        flow.update(rows_in=s.get("image_rows", s.get("rows_in")), left={**excluded, **flow["left"]},
                    notes=f"{s.get('shards')} tar shards")
    elif name == "train":
        flow.update(rows_in=s.get("samples"), rows_out=None,
                    notes=f"{s.get('steps')} steps, final loss {_fmt(s.get('final_loss'))}")
    elif name == "audit":
        gen = (s.get("metrics") or {}).get("generations", {})
        flow.update(rows_in=gen.get("n"), rows_out=gen.get("n"), notes=f"{gen.get('n')} generations audited")
    flow["left_total"] = sum(flow["left"].values())
    return flow


def collect(root: str, doc: dict[str, Any], results: dict[str, Any], started: float,
            error: str | None = None) -> dict[str, Any]:
    """The run's JSON: per stage its options, summary, seconds (this invocation) and work seconds (all)."""
    stages = []
    for step in doc["stages"]:
        name, options = next(iter(step.items()))
        if name == "serve":
            continue
        res = results.get(name)
        options = dict(options or {})
        out = options.get("output")
        folder = out if out is None or os.path.isabs(str(out)) else os.path.join(root, str(out))
        entry: dict[str, Any] = {"stage": name, "status": "done" if res else "not run", "output": out}
        if res:
            entry.update(seconds=res["seconds"], summary=res["summary"], flow=row_flow(name, res["summary"]))
            if folder and os.path.isdir(folder):
                entry["work_seconds"] = _work_seconds(folder)
                if os.path.exists(os.path.join(folder, "report.html")):
                    entry["report"] = os.path.relpath(os.path.join(folder, "report.html"), root)
        stages.append(entry)
    return {"curate_version": __version__, "pipeline": doc.get("name", ""), "root": os.path.abspath(root),
            "status": "failed" if error else ("done" if all(s["status"] == "done" for s in stages) else "partial"),
            "error": error, "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "seconds": round(time.time() - started, 2), "order": [s["stage"] for s in stages if s["status"] == "done"],
            "stages": stages}


def _fmt(v: Any) -> str:  # noqa: ANN401
    """Numbers as people read them: floats to 4 significant digits, small dicts as `k: v` lists."""
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items())
    return str(v)


def _table(header: list[str], rows: list[tuple[Any, ...]]) -> str:
    return html.table(header, [tuple(_fmt(c) for c in row) for row in rows])


def _png_file(path: str) -> bytes | None:
    if os.path.exists(path):
        with open(path, "rb") as f:
            return f.read()
    return None


def render(run: dict[str, Any], root: str) -> str:
    """The self-contained run page (every string escaped; PNGs embedded; stage reports linked relatively)."""
    by = {s["stage"]: s for s in run["stages"]}
    sections: list[tuple[str, str]] = []
    head = [("status", run["status"]), ("pipeline", run["pipeline"]), ("root", run["root"]),
            ("started", run["started"]), ("seconds (this invocation)", run["seconds"]),
            ("curate", run["curate_version"])]
    if run.get("error"):
        head.append(("error", run["error"]))
    sections.append(("Run", _table(["", ""], head)))

    rows, labels, outs = [], [], []
    for s in run["stages"]:
        f = s.get("flow", {})
        left = "; ".join(f"{k}: {v}" for k, v in f.get("left", {}).items()) or ("none" if f else "")
        link = f'<a href="{html.esc(s["report"])}">report</a>' if s.get("report") else ""
        if s.get("output"):
            link += f' <a href="{html.esc(s["output"])}/">files</a>'
        rows.append("<tr>" + "".join(f"<td>{html.esc(c)}</td>" for c in (
            s["stage"], s["status"], _fmt(f.get("rows_in")), _fmt(f.get("rows_out")), _fmt(f.get("left_total")),
            left, f.get("notes", ""), _fmt(s.get("seconds")), _fmt(s.get("work_seconds")))) + f"<td>{link}</td></tr>")
        if f.get("rows_out") is not None:
            labels.append(s["stage"])
            outs.append(float(f["rows_out"]))
    header = ["stage", "status", "rows in", "rows out", "rows left", "why they left", "notes", "seconds",
              "work seconds", "stage report"]
    flow_html = ("<table><tr>" + "".join(f"<th>{html.esc(h)}</th>" for h in header) + "</tr>" + "".join(rows)
                 + "</table><p class=\"muted\">Rows that left are in each stage's rejects/ (download, embed) or "
                   "drops/ (dedup); export leaves out the duplicates dedup did not keep.</p>")
    if labels:
        flow_html += html.image(plots.bars(labels, outs, "Rows out of each stage", "rows"), "rows out of each stage")
    sections.append(("Rows through the stages", flow_html))

    if "dedup" in by and by["dedup"].get("summary"):
        d = by["dedup"]["summary"]
        body = _table(["measure", "value"], [(k, d.get(k)) for k in (
            "model", "threshold", "linkage", "samples", "clusters", "duplicate_clusters", "largest_cluster",
            "samples_in_duplicate_clusters", "same_image_same_caption", "share_removed")])
        risk = d.get("risk_top") or []
        if risk:
            body += "<h3>Highest memorisation risk</h3>" + _table(
                ["key", "dup_count", "captions in cluster", "risk", "caption"],
                [(r.get("key"), r.get("dup_count"), r.get("cluster_captions"), r.get("memorization_risk"),
                  r.get("caption")) for r in risk[:10]])
        folder = os.path.join(root, str(by["dedup"].get("output", "")))
        png = _png_file(os.path.join(folder, "cluster_sizes.png"))
        if png:
            body += html.image(png, "duplicate cluster sizes")
        sections.append(("Duplicates", body))

    if "recaption" in by and by["recaption"].get("summary"):
        r = by["recaption"]["summary"]
        dist = r.get("distinct_captions_per_duplicate_cluster", {})
        same = r.get("same_image_same_caption_clusters", {})
        body = _table(["measure", "before", "after"], [
            ("distinct captions per duplicate cluster", dist.get("before"), dist.get("after")),
            ("'same image, same caption' clusters", same.get("before"), same.get("after")),
            ("share of duplicate clusters with one caption", same.get("share_before"), same.get("share_after")),
        ])
        ex = r.get("examples") or []
        if ex:
            body += "<h3>Examples</h3>" + _table(["key", "before", "after"],
                                                     [(e.get("key"), e.get("before"), e.get("after")) for e in ex[:8]])
        sections.append(("Caption diversity", body))

    if "train" in by and by["train"].get("summary"):
        t = by["train"]["summary"]
        sections.append(("Training", _table(["measure", "value"], [(k, t.get(k)) for k in (
            "steps", "samples", "duplicated_samples", "final_loss", "mitigations_applied", "device")])))

    if "audit" in by and by["audit"].get("summary"):
        a = by["audit"]["summary"]
        metrics = a.get("metrics", {})
        sections.append(("Replication audit", _table(
            ["set", "n", "mean top-1 sim", "p95 (dataset similarity score)", f"share > {a.get('threshold')}"],
            [(name, m.get("n"), m.get("mean"), m.get("p95"), m.get("share_above_threshold"))
             for name, m in metrics.items()])))
    return html.page(f"curate run: {run['pipeline'] or run['root']}", sections)


def write(root: str, doc: dict[str, Any], results: dict[str, Any], started: float,
          error: str | None = None) -> dict[str, Any]:
    """Write `run.json` and `report.html` under the run's root; returns the JSON."""
    run = collect(root, doc, results, started, error)
    fs.write_json_atomic(os.path.join(root, "run.json"), run)
    fs.write_text_atomic(os.path.join(root, "report.html"), render(run, root))
    return run
