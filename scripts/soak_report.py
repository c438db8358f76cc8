"""Renders the soak benchmark (target/bench/soak.json): a plot of each
service's resident memory over the run, and the "Soak" section of
docs/reliability.md (between its soak markers)."""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BEGIN, END = "<!-- soak:begin -->", "<!-- soak:end -->"


def main(report_path: str, docs: str) -> None:
    r = json.loads(Path(report_path).read_text())
    docs_dir = Path(docs)
    img_dir = docs_dir / "reliability"
    img_dir.mkdir(parents=True, exist_ok=True)
    samples = r["samples"]
    minutes = [s["minute"] for s in samples]
    # The services on their own scale; the broker (an in-memory one keeps
    # every message) beside them.
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.5), width_ratios=[2, 1])
    for role in ["ingest", "preprocess", "infer", "decode"]:
        ys = [s["rss_mib"].get(role) for s in samples]
        ax.plot(minutes, ys, marker="o", markersize=3, label=role)
    for a in (ax, bx):
        a.axvspan(5, 10, color="0.9", label="minutes 5-10")
        a.axvspan(r["minutes"] - 10, r["minutes"], color="0.8", label="last 10 minutes")
        a.set_xlabel("minute of the run")
        a.grid(alpha=0.3)
    ax.set_ylabel("resident memory (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"MouthMap services: {r['lanes']} real-time streams for {r['minutes']} minutes")
    ax.legend(loc="lower right", fontsize=8, ncol=2)
    for role in ["tansu", "redis-server"]:
        ys = [s["rss_mib"].get(role) for s in samples]
        if any(y for y in ys):
            bx.plot(minutes, ys, marker="o", markersize=3, label=role)
    bx.set_title("the broker (and Redis)")
    bx.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(img_dir / "soak-memory.png", dpi=110)

    rows = [
        "| service | mean RSS, minutes 5-10 | mean RSS, last 10 minutes | flat (within 10%) |",
        "|---|---|---|---|",
    ]
    for role, m in r["memory"].items():
        rows.append(
            f"| {role} | {m['minutes_5_10_mib']:.1f} MiB | {m['last_10_mib']:.1f} MiB | "
            f"{'yes' if m['flat'] else '**no**'} |"
        )
    c = r["counters"]
    section = "\n".join(
        [
            BEGIN,
            f"Measured with `{r['command']}` (`scripts/soak`), on "
            + ("the soak's own in-memory Tansu broker" if r.get("brokers", "").endswith(":19092") else "the stack's Tansu broker (SQLite storage)")
            + ", "
            f"{r['lanes']} lanes each streaming the 30 s validation video in real time, "
            "one stream after another, through one long-running ingest.",
            "",
            f"- Streams: {r['streams']} started ({r['refused']} refused), "
            f"{r['finals']} with a final, {r['missing_finals']} without, "
            f"{r['duplicate_finals']} with more than one, {r['timed_out']} timed out.",
            f"- Lost windows: {r['streams_with_lost_windows']} streams whose final covers "
            f"less than 29 s; frames lost at ingest: {c['frames_lost']:.0f}; "
            f"stage errors (dead letters and others): {c['stage_errors']:.0f}"
            + (
                " (" + "; ".join(f"`{k}`" for k in c.get("stage_errors_by_kind", []) if not k.endswith(" 0")) + ")."
                if c.get("stage_errors")
                else "."
            ),
            f"- Memory flat: {'yes' if r['memory_flat'] else '**no**'}.",
            "",
            *rows,
            "",
            "![Resident memory of each service over the soak](reliability/soak-memory.png)",
            END,
        ]
    )
    page = docs_dir / "reliability.md"
    text = page.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n## Soak\n\n" + section + "\n"
    page.write_text(text)
    print(f"wrote {img_dir / 'soak-memory.png'} and the soak section of {page}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
