"""The scale benchmark's table and chart, from its results (``scale.py`` draws them at its end).

    python benchmarks/scale_report.py scale.json [--png scale.png]   # prints the markdown table
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def title(summary: dict[str, Any]) -> str:
    """What the chart shows: the code, the server, the export, how (c) loads."""
    giant = summary.get("giant_group")
    export = ("traffic.py export" if giant is None else "traffic.py export without its giant group"
              if giant == 0 else f"traffic.py export, giant group of {giant:,}")
    loads = ", LOAD DATA of all tables at once" if summary.get("parallel_load") else ""
    return (f"kmdb-async at {summary['commit']}, {export}{loads}\nbuffer pool "
            f"{summary['buffer_pool_mib']:.0f} MiB, {summary['server']['version']}")


def table(results: list[dict[str, Any]]) -> str:
    """The results as a markdown table (one row per size and case)."""
    rows = ["| history lines | case | lines | kmdb-async s | lines/s | LOAD DATA s | lines/s | ratio "
            "| client us/line | server CPU s (kmdb / LOAD DATA) | peak RSS MB |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        for case, lines in (("first_import", r["lines"]), ("cron", r["cron_lines"])):
            if case not in r:
                continue
            a, c = r[case]["kmdb"], r[case]["load_data"]
            head = f"| {r['lines']:,} | {case.replace('_', ' ')} | {lines:,} "
            if "failed" in a:
                rows.append(head + f"| failed after {a['wall_s']:.1f} s: {a['failed']} |||||||")
                continue
            load = (f"| {c['wall_s']:.1f} | {c['lines_per_s']:,.0f} | **{r[case]['ratio']:.2f}x** "
                    if c else "| - | - | - ")
            rows.append(head + f"| {a['wall_s']:.1f} | {a['lines_per_s']:,.0f} {load}"
                        f"| {a['client_us_per_line']:.1f} | {_seconds(a.get('server_cpu_s'))} / "
                        f"{_seconds((c or {}).get('server_cpu_s'))} | {a['peak_rss_mb']:.0f} |")
    return "\n".join(rows)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def chart(results: list[dict[str, Any]], path: Path, title: str) -> None:
    """Lines/s against history size, first import and cron run, beside LOAD DATA."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no chart; pip install -e '.[bench]')")
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, case, label in zip(axes, ("first_import", "cron"), ("first import", "cron run (+10%)"),
                               strict=True):
        for who, style in (("kmdb", "o-"), ("load_data", "s--")):
            done = [(r["lines"], r[case][who]["lines_per_s"]) for r in results
                    if r.get(case, {}).get(who) and "failed" not in r[case][who]]
            ax.plot([x for x, _ in done], [y for _, y in done], style,
                    label="kmdb-async" if who == "kmdb" else "LOAD DATA LOCAL, same rows")
        for r in results:  # a failed step: a red cross at its size, at the bottom
            if "failed" in r.get(case, {}).get("kmdb", {}):
                ax.plot([r["lines"]], [0.03], "rx", transform=ax.get_xaxis_transform())
                ax.annotate("kmdb-async failed", (r["lines"], 0.06), xycoords=("data", "axes fraction"),
                            ha="center", color="red", fontsize=8)
        ax.set_xlim(min(r["lines"] for r in results) / 1.5, max(r["lines"] for r in results) * 1.5)
        ax.set_ylim(bottom=0)
        ax.set_xscale("log")
        ax.set_xlabel("history (lines)")
        ax.set_title(label)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("lines/s")
    axes[0].legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("json", type=Path)
    parser.add_argument("--png", type=Path)
    args = parser.parse_args()
    summary = json.loads(args.json.read_text())
    print(table(summary["results"]))
    if args.png:
        chart(summary["results"], args.png, title(summary))


if __name__ == "__main__":
    main()
