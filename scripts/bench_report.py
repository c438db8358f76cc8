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
    fronts = inf.get("front_end") or []
    if fronts:
        out += [
            "**Each frame's front end once** (`--front-end once`, the default for a model "
            "version that also holds `front.onnx` and `back.onnx`, as the reference model does) "
            "against the whole graph on every window (`--front-end per-window`): 4 streams of "
            "400 frames fed as fast as the stage takes them, one ONNX Runtime thread, process "
            "CPU per stream frame. Both give the same probabilities (the test "
            "`computing_each_frame_once_gives_the_whole_graphs_windows`: within 1e-4 on every "
            "window).",
            "",
            "| hop | whole graph per window | front end once | less CPU |",
            "|---:|---:|---:|---:|",
        ]
        by_hop = {}
        for r in fronts:
            by_hop.setdefault(r["hop"], {})[r["front_end"]] = r["cpu_ms_per_frame"]
        for hop, v in by_hop.items():
            if "once" in v and "per-window" in v:
                out.append(
                    f"| {hop} | {v['per-window']:.2f} ms | {v['once']:.2f} ms | {v['per-window'] / v['once']:.2f}x |"
                )
        out.append("")
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


ROLES = ["ingest", "preprocess", "infer", "decode"]


def pipeline_table(mode: dict, roles: list[str]) -> list[str]:
    out = [
        "| streams | sustained | p50 | p95 | p99 | first partial p50 / p95 | last final after the end | "
        f"CPU s {' / '.join(roles)} | CPU s broker / Redis | peak MiB {' / '.join(roles)} |",
        "|---:|:---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in mode["runs"]:
        l, fp = r["latency_ms"], r.get("first_partial_ms", {})
        cpu = " / ".join(f"{r['cpu_s'].get(k, 0):.0f}" for k in roles)
        mem = " / ".join(f"{r['peak_memory_mib'].get(k, 0):.0f}" for k in roles)
        infra = " / ".join(f"{r['cpu_s'].get(k, 0):.0f}" for k in ["broker", "redis"])
        late = r.get("latest_final_s_after_end")
        out.append(
            f"| {r['streams']} | {'yes' if r['sustained'] else '**no**'} | {l['p50']:.0f} ms | "
            f"{l['p95']:.0f} ms | {l['p99']:.0f} ms | {fp.get('p50', float('nan')):.0f} / "
            f"{fp.get('p95', float('nan')):.0f} ms | {'' if late is None else f'{late:.1f} s'} | {cpu} | {infra} | {mem} |"
        )
    return out


def run_at(mode: dict, n: int):
    return next((r for r in mode["runs"] if r["streams"] == n), None)


def per_stream_cpu(run: dict, roles: list[str], stream_seconds: float) -> str:
    # CPU per second of real-time stream: each stream is stream_seconds long.
    secs = stream_seconds
    parts = {k: run["cpu_s"].get(k, 0) / run["streams"] / secs for k in roles}
    broker = run["cpu_s"].get("broker", 0) / secs
    return (
        ", ".join(f"{k} {v:.3f}" for k, v in parts.items())
        + f" cores per real-time stream ({sum(parts.values()):.3f} in all); the broker {broker:.2f} cores "
        f"({run['cpu_s'].get('broker', 0) / max(sum(run['cpu_s'].values()), 1e-9) * 100:.0f}% of the CPU time measured)"
    )


def pipeline_section(pipe, int8, idle, docs: Path) -> list[str]:
    out = ["## Whole pipeline: concurrent real-time streams, latency, CPU, memory", ""]
    if pipe is None or "separate" not in pipe:
        return out + ["(not run)", ""]
    sep, ch = pipe["separate"], pipe.get("chained")
    out += [
        f"N streams of {pipe['stream_seconds']} s (ten validation clips joined) ingested at once with "
        "`--realtime`, every service its own process on the local Tansu broker "
        f"({pipe.get('broker_storage', 'sqlite')} storage) with Redis for features, in two modes: "
        f"**separate** (the default deployment: ingest, preprocess as {pipe.get('preprocess_replicas', 1)} "
        "replicas of one consumer group, infer, decode) and **chained** (`ingest --crop`: the mouth crop "
        "inside ingest on raw frames, publishing `mouths` directly; infer and decode as before). "
        "Latency: from a frame's ingest to the first partial transcript covering it (every frame of "
        "every stream). First partial: from a stream's first frame to its first partial. Sustained: "
        "every final arrives, the last within 5 s of the streams' real-time end, the median latency of "
        "the last third of the frames within 1 s of the first third's, p99 under 5 s. The sweep stops "
        "at the first load not sustained."
        + " Each load starts once every service holds partitions (replicas that join a group at "
        "once wait 10-20 s for them on Tansu's in-memory storage).",
        "",
        f"`MOUTHMAP_BROKER_STORAGE={pipe.get('broker_storage', 'sqlite')} scripts/stack up --infra && "
        "cargo bench --bench pipeline`",
        "",
        f"**Separate** (maximum sustained: **{sep['max_sustained_streams']} streams**)",
        "",
    ]
    out += pipeline_table(sep, ROLES)
    if ch:
        out += ["", f"**Chained** (maximum sustained: **{ch['max_sustained_streams']} streams**)", ""]
        out += pipeline_table(ch, ["ingest", "infer", "decode"])
    if int8:
        m = int8["chained"]
        out += [
            "",
            f"**Chained, INT8 model with its front end computed once** (`models/mouthmap-lipnet-grid-s1-int8/2`: "
            f"the INT8 graph with its `front.onnx` and `back.onnx`; maximum sustained of the "
            f"loads tried: **{m['max_sustained_streams']} streams**)",
            "",
            "`cargo bench --bench pipeline -- --modes chained --streams 1,4,8,12,16,20,24 --model "
            "models/mouthmap-lipnet-grid-s1-int8/2/model.onnx --out target/bench/pipeline-int8.json`",
            "",
        ]
        out += pipeline_table(m, ["ingest", "infer", "decode"])
    out += ["", "Against the targets (issue 13), from these runs:", ""]
    chained_roles = ["ingest", "infer", "decode"]
    # Each mode measured: its name, runs, the roles whose CPU it lists and its plot style.
    modes = [
        ("separate", sep, ROLES, "o-"),
        ("chained", ch, chained_roles, "s--"),
        ("chained, INT8 model", int8["chained"] if int8 else None, chained_roles, "^-."),
    ]
    for name, mode, _, _ in modes:
        if not mode:
            continue
        r8 = run_at(mode, 8)
        r16 = run_at(mode, 16)
        line = (
            f"- {name}: 16 streams {'sustained' if r16 and r16['sustained'] else '**not sustained**'} "
            f"(maximum sustained {mode['max_sustained_streams']})"
        )
        if r8:
            l, fp = r8["latency_ms"], r8["first_partial_ms"]
            line += (
                f"; at 8 streams p95 {l['p95']:.0f} ms (target 1500), p99 {l['p99']:.0f} ms (target 2500), "
                f"first partial p95 {fp['p95']:.0f} ms (target 1500)"
            )
        out.append(line + ".")
    out += ["", "Where the CPU goes (the largest load sustained in each mode):", ""]
    for name, mode, roles, _ in modes:
        if not mode:
            continue
        ok = [r for r in mode["runs"] if r["sustained"]]
        if ok:
            out.append(
                f"- {name}, {ok[-1]['streams']} streams: "
                f"{per_stream_cpu(ok[-1], roles, pipe['stream_seconds'])}."
            )
    if idle:
        cases = ", ".join(
            f"{c['storage']} at fetch.wait.max.ms {c['fetch_wait_ms']}: {c['broker_cores']:.2f}"
            for c in idle["cases"]
        )
        out += [
            f"- The broker's fixed cost, with the three stages idle on it and no data at all "
            f"(`scripts/bench_broker_idle`, CPU over {idle['seconds']} s), in cores: {cases}. The stages "
            f"themselves idle at {max(c['stages_cores'] for c in idle['cases']):.3f} cores for all three "
            "(no busy waiting).",
        ]
    out += ["", "![pipeline](benchmarks/pipeline.png)", ""]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, mode, _, style in modes:
        if not mode:
            continue
        runs = mode["runs"]
        n = [r["streams"] for r in runs]
        for k in ["p50", "p95"]:
            axes[0].plot(n, [r["latency_ms"][k] for r in runs], style, label=f"{name} {k}")
        axes[1].plot(n, [r["first_partial_ms"]["p95"] for r in runs], style, label=f"{name} p95")
        total = [sum(v for k, v in r["cpu_s"].items() if k != "redis") / max(r["elapsed_s"], 1) for r in runs]
        axes[2].plot(n, total, style, label=f"{name} (stages + broker)")
    axes[0].axhline(1500, color="grey", lw=0.8, ls=":")
    axes[0].set(xlabel="concurrent streams", ylabel="frame ingest -> first partial (ms)", title="latency")
    axes[1].axhline(1500, color="grey", lw=0.8, ls=":")
    axes[1].set(xlabel="concurrent streams", ylabel="first frame -> first partial (ms)", title="a new stream's first words")
    axes[2].axhline(pipe.get("cpus", 2), color="grey", lw=0.8, ls=":")
    axes[2].set(xlabel="concurrent streams", ylabel="cores (CPU s / elapsed s)", title="CPU")
    for a in axes:
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(docs / "benchmarks" / "pipeline.png", dpi=110)
    ratio = "not compared"
    if int8 and ch:
        common = [(r, run_at(ch, r["streams"])) for r in int8["chained"]["runs"] if run_at(ch, r["streams"])]
        if common:
            r8, rf = common[-1]
            ratio = (
                f"{r8['cpu_s']['infer']:.0f} CPU s against FP32's {rf['cpu_s']['infer']:.0f} at "
                f"{r8['streams']} streams (the INT8 table's version 2; both compute each frame's front end once)"
            )
    fill = {"{int8_ratio}": ratio}
    for c in (idle or {}).get("cases", []):
        fill[f"{{idle_{c['storage']}_{c['fetch_wait_ms']}}}"] = f"{c['broker_cores']:.2f}"
    for line in LEVERS:
        for key, value in fill.items():
            line = line.replace(key, value)
        out.append(line)
    return out


# Levers of issue 13, each measured on this machine; the accuracy figures are
# the reference model's streaming word error (50 validation clips joined five
# at a time, through `mouthmap transcribe`) from
# `cd model && python -m mouthmap_model.evaluate --streaming-only --models
# ../models/mouthmap-lipnet-grid-s1/2/model.onnx` with the setting in the
# environment (e.g. MOUTHMAP_DETECT_EVERY=5); before these changes: 16.0% open,
# 13.7% GRID grammar.
LEVERS = [
    "### Levers, measured",
    "",
    "Accuracy: the reference model's streaming word error (open / GRID grammar), "
    "`cd model && python -m mouthmap_model.evaluate --streaming-only --models "
    "../models/mouthmap-lipnet-grid-s1/2/model.onnx` with the setting in the environment "
    "(before: 16.0% / 13.7%). CPU: `cargo bench --bench pipeline -- --streams N` with the setting in the "
    "environment (e.g. `MOUTHMAP_MODEL_THREADS=1`), one setting changed at a time, 2026-12-02. The "
    "interpolated boxes' row was measured on this run's machine; the other rows' CPU figures on the "
    "machine of an earlier run that day (an Intel Xeon with AVX-512, about twice as fast at the face "
    "detector), each against its own baseline there; rows marked * were measured while the detector ran "
    "on every 5th frame with the box held (the default for part of that session) and with the earlier "
    "sustained criterion (no check of the last final's delay).",
    "",
    "| lever | measured | kept? |",
    "|---|---|---|",
    "| Broker storage: Tansu in memory instead of SQLite | idle broker {idle_memory_20} vs {idle_sqlite_20} "
    "cores (above); at 8 streams (separate) broker 4.7 vs 29.3 CPU s* | kept as "
    "an **opt-in** (`MOUTHMAP_BROKER_STORAGE=memory`), used for these benchmarks: a restart loses the topics, "
    "and replicas that join a group at once wait 10-20 s for their first partitions there (the replicated-"
    "services test streams before that), so the stack's default stays SQLite. Production runs Apache Kafka: "
    "nothing depends on it |",
    "| Consumers' fetch.wait.max.ms 100 instead of 20 | idle SQLite broker {idle_sqlite_100} vs "
    "{idle_sqlite_20} cores; in memory {idle_memory_100} vs {idle_memory_20} (above). Tansu 0.6 answers a "
    "fetch only after the whole wait, so each hop would wait up to 100 ms more | dropped: with the broker "
    "in memory the saving is a few hundredths of a core |",
    "| nisshi 0.8 (Tansu's successor) | not measured here: it needs rustc 1.96, these machines have 1.95 "
    "and fetch no other toolchain | not possible |",
    "| Operator chaining (`ingest --crop`) | see the two tables: no JPEG encoding or decoding, no frames "
    "hop | **kept** as an option; separate services stay the default |",
    "| Face detector on every 3rd frame (each 3-frame chunk's last), the boxes between interpolated "
    "(`--detect-every 3 --boxes-between interpolate`) | crop 2.14 vs 6.38 ms a frame (`cargo bench --bench "
    "crop_cost`); against the detector on every frame in the same session on this run's machine "
    "(`MOUTHMAP_DETECT_EVERY=1 cargo bench --bench pipeline -- --streams 4,8`): chained sustains 8 streams "
    "vs 4 (ingest 26.9 vs 52.8 CPU s at 8 streams), separate preprocess 13.2 vs 26.3 CPU s at 4 streams "
    "(p95 1340 vs 1580 ms); streaming WER 16.7% / 11.3% vs 17.3% / 13.3% measured the same day | kept, the "
    "default until 2026-12-03, when chunks of 6 (below) halved it again (preprocessor/README.md) |",
    "| Face detector every 5th frame, the box held between (`--boxes-between hold`) | streaming WER 22.7% / "
    "16.0% (every 3rd: 20.7% / 12.7%) vs 16.0% / 13.7% | kept as an option, not the default: the box follows "
    "the mouth corners, which move as the mouth opens and closes, and a held box leaves the mouth off its "
    "place in the crop |",
    "| Face detector on the frame at half size | streaming WER 18.7% / 16.7% | dropped (removed) |",
    "| Face detector near the last face only (`--detect-region 0.5`) | off YuNet's 32-pixel grid: "
    "landmarks moved up to 2.4 px, WER 18.7% / 14.3%; on the grid: 0.3 px on average, WER 16.3% / 13.7%, "
    "a quarter less to detect on GRID's 360x288 frames | kept, **opt-in**: little to gain on GRID, much "
    "on a small face in a large frame |",
    "| JPEG chroma averaged without per-sample bounds checks | preprocess CPU per stream 0.061 -> 0.047 "
    "cores (12 streams, separate)* | **kept** (bit-identical, unit-tested against the old loop) |",
    "| One ONNX Runtime thread per model instead of two | infer 19.6 vs 26.0 CPU s at 16 streams "
    "(chained), p50 latency 1.1 vs 1.7 s* | **kept** as the default (`--model-threads`) |",
    "| ONNX Runtime pools that sleep (no spinning) | three idle stages 0.035-0.042 cores together "
    "(`scripts/bench_broker_idle`) | **kept** |",
    "| INT8 model (static QDQ) | see its table: infer {int8_ratio}; streaming WER 17.0% / 10.3% against "
    "FP32's 16.7% / 10.3% (model card, 2026-12-03); on an AMD EPYC with AVX2 only it saved little even "
    "against the whole graph (16 vs 18 CPU s at 8 streams, an earlier run) | kept as a served option "
    "(`--model mouthmap-lipnet-grid-s1-int8`), not the default: version 1 comes as one graph, so FP32 with "
    "each frame's front end computed once costs less; version 2 computes its front end once too (the "
    "last row) |",
    "| Early windows (`--early-windows 15`) | a stream's first partial after 15 frames instead of 75 "
    "(first-partial columns); finals unchanged (streaming WER 16.0% / 13.7% with them) | **kept** |",
    "| A partial for every window that reads further, not only when the text changes | p95 at 8 streams "
    "2206 -> 1363-1449 ms in two runs (separate)*: frames in a silence had waited for the next change of "
    "text | **kept** |",
    "| zstd -> lz4 on the producers (`MOUTHMAP_KAFKA_OPTIONS=compression.type=lz4`) | ingest 11.0 vs 11.5 "
    "CPU s at 8 streams* (noise) | dropped |",
    "| Compute each frame once (`--front-end once`: the front end once per frame, cached per stream; "
    "the back end per window; a window's first and last 3 frames recomputed from its crops, so every "
    "window equals the whole graph's) | CPU per stream frame 1.7x less at hop 25, 2.2-2.4x at hop 10 "
    "(inferencer table); chained, 8 streams, one after the other on this machine "
    "(`MOUTHMAP_FRONT_END=per-window|once cargo bench --bench pipeline -- --modes chained --streams 8`): "
    "infer 19.2 vs 14.2 CPU s, p50 1843 vs 1030 ms, p95 2793 vs 2084 ms; streaming WER unchanged "
    "(16.7% / 11.3% both ways). Feeding the window's edge frames their real neighbours instead doubled "
    "the streaming WER (33%: the decoder's stitching reads the model's edge behaviour) | **kept, the "
    "default** for a model version that holds front.onnx + back.onnx (the reference model does) |",
    "| Hop 10 instead of 25 with the front end once (earlier partials at about today's per-window cost) "
    "| infer CPU per frame 2.2 ms, as hop 25 per window (inferencer table); chained at 8 streams not "
    "sustained (`MOUTHMAP_HOP=10 cargo bench --bench pipeline -- --modes chained --streams 8`: infer "
    "22.8, decode 4.3, broker 10.6 CPU s; p95 9.1 s); streaming WER 18.0% / 12.0% vs 16.7% / 11.3% "
    "(`MOUTHMAP_HOP=10 python -m mouthmap_model.evaluate --streaming-only`), hop 15 19.0% / 13.3% | "
    "dropped: the open figure breaks the 1-point bound and 8 streams no longer keep up |",
    "| The face detector at half size (`--detect-scale 2`: each detector pixel the mean of four) | "
    "`mouthmap crops` over 40 clips (3000 frames, JPEG frames as ingest makes them): 15.7 vs 18.9 CPU s, "
    "1.1 ms less a frame; streaming WER 17.3% / 13.0% vs 16.7% / 11.3% the same day "
    "(`MOUTHMAP_DETECT_SCALE=2 python -m mouthmap_model.evaluate --streaming-only`) | kept as an option, "
    "not the default: the GRID figure loses 1.7 points (landmarks at half resolution move the crop) |",
    "| Where ingest's CPU goes, chained (`perf record -e cpu-clock` over `mouthmap ingest --crop` of "
    "two 30 s streams, not real time, an earlier run) | YuNet in ONNX Runtime 36%, H.264 decoding "
    "(libavcodec) 18%, crop and the detector's input conversion 11%, kernel 9%, libc copies and "
    "allocation 9%, zstd 4% | the detector was the lever then (chunks of 6, below, halved it) |",
    "| One libav decoder thread per stream (`ingest --decoder-threads 1`, libav's default is one per "
    "core), and the crop without libm calls per sample | 2026-12-03, AMD EPYC, `perf record -g` over "
    "`mouthmap ingest --realtime --crop` of 16 real-time 30 s streams: libavcodec 23%, YuNet 22%, the "
    "kernel 17% (mostly threads waking threads: futex wakes, reschedule interrupts), the crop and the "
    "detector's input conversion 12% (2% in libm's `floorf` and `roundf`, called per sample: x86-64's "
    "baseline has no SSE4.1 rounding), libc copies and allocation 11%, zstd 2.5%. Ingest's CPU for the "
    "16 streams (`/usr/bin/time`, twice each): 31.1-32.6 s before, 27.3-28.9 with one decoder thread, "
    "26.2-27.1 with the crop's arithmetic as well (same pixels: preprocessor/README.md); the crop alone "
    "0.13-0.14 vs 0.23-0.25 ms a GRID frame (`cargo bench --bench crop_cost`). In the pipeline, chained "
    "with the INT8 model at 16 streams: ingest 25.7 vs 29.9 CPU s, and 20 streams sustained (p95 1573 "
    "ms, p99 1774 ms) where 20 were not before (p50 3.9 s, ingest 36.4 CPU s; the crop's rotation was "
    "already computed once then; `cargo bench --bench pipeline -- --modes "
    "chained --streams 16,20,24 --model models/mouthmap-lipnet-grid-s1-int8/2/model.onnx`) | **kept, "
    "the default** (`--decoder-threads 0` gives libav its own threads back, for a few large sources) |",
    "| Chunks of 6 frames, the detector on each one's last (`ingest --frames-per-chunk 6`, `preprocess "
    "--detect-every 6`) | on an Intel Xeon (AVX-512) on 2026-12-03, one after the other against chunks of 3 "
    "and every 3rd frame (`MOUTHMAP_FRAMES_PER_CHUNK=6 MOUTHMAP_DETECT_EVERY=6 cargo bench --bench pipeline "
    "-- --modes chained --streams 8,12`, and with 3 and 3): chained, 8 streams: ingest 22.7 vs 31.8 CPU s, "
    "p95 1414 vs 1720 ms; 12 streams sustained (p95 1995 ms, last final 1.1 s after the end) vs not (p95 "
    "5777 ms); half the detector and half the mouths (and frames) messages, 120 ms more in a chunk. "
    "Streaming WER 17.0% / 11.0% vs 17.7% / 13.0% the same day | **kept, the default** since "
    "2026-12-03 (preprocessor/README.md) |",
    "| An INT8 front end computed once (`python -m mouthmap_model.split --model "
    "../models/mouthmap-lipnet-grid-s1-int8/1/model.onnx --out DIR`: the INT8 graph's convolutions as "
    "`front.onnx`, its GRU, still FP32, and classifier as `back.onnx`, beside the INT8 `model.onnx`) | "
    "the two parts give the INT8 graph's output exactly (max difference 0 over 10 validation windows), so "
    "its accuracy is the INT8 model's; CPU per stream frame, one thread (`cargo bench -p "
    "mouthmap-inferencer --bench batching -- --model DIR/model.onnx --front-end-only`): 0.80 vs 1.29 ms "
    "(FP32 once) at hop 25, 1.64 vs 2.01 ms at hop 10 (the FP32 GRU dominates there); chained on the same "
    "Xeon (`cargo bench --bench pipeline -- --modes chained --streams 8,12 --model DIR/model.onnx`), "
    "chunks of 3: infer 8.6 vs 12.1 CPU s at 8 streams, 12 streams sustained (p95 2525 ms); with chunks "
    "of 6 as well: 12 streams p95 1501 ms, p99 1689 ms, 16 streams not sustained (p50 5.1 s; 64 CPU s "
    "used of about 70). On 2026-12-03, on an Intel Xeon, as a committed version "
    "(`mouthmap-lipnet-grid-s1-int8:2`: `-int8:1`'s graph with the parts `split` cut from it): 16 chained "
    "streams sustained in 2 of 4 runs (p95 2590 / 2184 ms; not in the other two: p99 6.1 s, 5.1 s). Later "
    "that day on the AMD EPYC of this report: 16 sustained in all three runs (p95 1416 ms before the "
    "decoder-thread and crop row above, 1399 and 1396 after), 20 in both runs after it (p95 1573, 2199 "
    "ms; before: not, p50 3.9 s), 24 in neither (the table's sweep and `--streams 16,20,24`); FP32 after "
    "it: 16 sustained in one run of two "
    "(p95 1614 ms in the table; not in `--streams 16,20`: last third's median 2.8 s against the first "
    "third's 0.8). Streaming WER that of the INT8 graph: 17.0% / 13.7% / 10.3% against FP32's 16.7% / "
    "13.3% / 10.3% (model card) | **kept as a served option** (`--model mouthmap-lipnet-grid-s1-int8`, "
    "whose latest version it is; its table above), not the default: its open figure is 0.3 points behind "
    "FP32's and sits on issue 13's 1-point bound |",
    "",
]


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
    measured = [(name, r) for name, r in ev.items() if "serving" in r and "streaming" in r]
    if not measured:
        return out + ["(the evaluation ran without the serving path)", ""]
    name, r = measured[0]
    lex = all("lexicon" in m["serving"] and "lexicon_wer" in m["streaming"] for _, m in measured)
    cols = ["open", "lexicon", "grid"] if lex else ["open", "grid"]
    title = {"open": "open", "lexicon": "word lexicon", "grid": "GRID grammar"}
    stream_key = {"open": ("cer", "wer"), "lexicon": ("lexicon_cer", "lexicon_wer"), "grid": ("grid_cer", "grid_wer")}
    out += [
        "The validation set (model/split.json) through the serving code (`mouthmap transcribe`), "
        f"the default model `{name}` first, every decoding measured in one run per model: "
        "`cd model && python -m mouthmap_model.evaluate --timing --models ../models/MODEL "
        "--report REPORT` (the reports merged into `model/eval-report.json`; model/MODEL_CARD.md, Results).",
        "The grammar is what a stream gets when its `grammar` feature is `grid`; the word lexicon "
        "(letters constrained to the 51 words seen in training, in any order: `--grammar \"lexicon:WORDS\"`, "
        "or a stream's `vocabulary` feature) is the middle option.",
        "",
        "| model | validation set | " + " | ".join(f"{title[c]}: CER | {title[c]}: WER" for c in cols) + " |",
        "|---|---|" + "---:|---:|" * len(cols),
    ]
    for n, m in measured:
        sv, st = m["serving"], m["streaming"]
        out += [
            f"| `{n}` | 50 clips, one at a time | "
            + " | ".join(f"{sv[c]['cer']:.1%} | {sv[c]['wer']:.1%}" for c in cols) + " |",
            f"| `{n}` | 10 streams of 5 clips joined | "
            + " | ".join(f"{st[stream_key[c][0]]:.1%} | {st[stream_key[c][1]]:.1%}" for c in cols)
            + " |",
        ]
    out += [
        "",
        "The grammar helps on single clips and on joined streams alike: letters and digits "
        "the model half-saw become words of the right slot. Streams are a few points worse "
        "than single clips; the decoder stitches windows at word boundaries both windows "
        "agree on, because the model mistimes letters at a window's edges (nearest-centre "
        "stitching lost the space and first letter at most sentence joins: 36.7% open, 45.7% "
        "under the grammar; see model/MODEL_CARD.md and decoder/src/stitch.rs).",
        "",
    ]
    timed = [(n, m) for n, m in measured if "timing" in m]
    if timed:
        out += [
            "Re-timed copies of the 50 clips (what jittery cameras and RTMP publishers deliver; "
            "open decoding, serving path), WER:",
            "",
            "| model | " + " | ".join(timed[0][1]["timing"]) + " |",
            "|---|" + "---:|" * len(timed[0][1]["timing"]),
        ]
        out += [
            f"| `{n}` | " + " | ".join(f"{m['timing'][k]['wer']:.1%}" if k in m["timing"] else "" for k in timed[0][1]["timing"]) + " |"
            for n, m in timed
        ]
        out.append("")
    return out


# docs/benchmarks/gpu-speed.json, read with `load`.
GPU_REPORT = "gpu-speed"


def eval_report():
    path = Path(__file__).resolve().parents[1] / "model" / "eval-report.json"
    return json.loads(path.read_text()) if path.exists() else None


def gpu_bullet(gpu) -> str:
    if gpu is None:
        return (
            "- GPU: **not measured**. No GPU machine was lent to the session that ran these; the "
            "CUDA path (`--device cuda`) is built and refuses to start without CUDA, but its speed "
            "is unknown. `cargo bench -p mouthmap-inferencer --bench batching -- --device cuda` "
            "measures it where a GPU and `onnxruntime-gpu` are present."
        )
    return (
        f"- GPU: the reference network on one {gpu['device']} in PyTorch (section GPU below); "
        "ONNX Runtime's CUDA path (`mouthmap infer --device cuda`) itself is not timed."
    )


def gpu_section(gpu, docs: Path) -> list[str]:
    """docs/benchmarks/gpu-speed.json: `model/mouthmap_model/gpu_speed.py`'s
    report, measured on a lent GPU machine (scripts/device-check) and committed,
    since the machines that render this have no GPU."""
    out = ["## GPU: the reference network on one GPU", ""]
    if gpu is None:
        return out + ["(not measured: no docs/benchmarks/gpu-speed.json)", ""]
    rows = gpu["rows"]
    out += [
        f"{gpu['device']}, PyTorch {gpu['torch']} (cuDNN), random weights of the reference network's "
        f"shape, the median of {gpu['reps']} timed runs after warm-up, synchronised: "
        f"`cd model && python -m mouthmap_model.gpu_speed --device cuda --reps {gpu['reps']}` "
        "(scripts/device-check runs it on a lent GPU machine). These are PyTorch's kernels, not ONNX "
        "Runtime's: the machines lent here have no `onnxruntime-gpu`, so `mouthmap infer --device cuda` "
        "is not timed. *Whole graph*: one 75-frame window per item. *Front once*: the 3D front end on "
        f"the {gpu['hop']} new frames of a hop (with context), then the GRU and classifier on the "
        f"window: at hop {gpu['hop']} a real-time stream needs one window a second, so each figure is "
        "how many streams the model alone keeps up with.",
        "",
        "| precision | batch | whole graph windows/s | ms a batch | front once stream-hops/s | ms a batch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['precision']} | {r['batch']} | {r['windows_per_s']:.0f} | {r['whole_ms']:.1f} | "
            f"{r['stream_hops_per_s']:.0f} | {r['split_ms']:.1f} |"
        )
    best = max(rows, key=lambda r: r["stream_hops_per_s"])
    one = {r["precision"]: r for r in rows if r["batch"] == 1}
    top = max(r["batch"] for r in rows)
    at_top = {r["precision"]: r for r in rows if r["batch"] == top}
    out += [
        "",
        f"Best: {best['stream_hops_per_s']:.0f} stream-hops/s ({best['precision']}, batch {best['batch']}, "
        "front once). "
        + " ".join(
            f"{prec}: batch 1 {one[prec]['windows_per_s']:.0f} windows/s ({one[prec]['whole_ms']:.1f} ms, "
            f"launch-bound), batch {top} {at_top[prec]['windows_per_s']:.0f} "
            f"({at_top[prec]['windows_per_s'] / one[prec]['windows_per_s']:.0f} times)."
            for prec in sorted(one)
            if prec in at_top
        ),
        "",
        "![GPU windows per second](benchmarks/gpu.png)",
        "",
    ]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for prec in sorted({r["precision"] for r in rows}):
        rs = [r for r in rows if r["precision"] == prec]
        ax.plot([r["batch"] for r in rs], [r["windows_per_s"] for r in rs], "o-", label=f"{prec} whole graph")
        ax.plot([r["batch"] for r in rs], [r["stream_hops_per_s"] for r in rs], "s--", label=f"{prec} front once")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch")
    ax.set_ylabel("windows (stream-hops) per second")
    ax.set_title(f"Reference network on {gpu['device']} (PyTorch)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(docs / "benchmarks" / "gpu.png", dpi=110)
    plt.close(fig)
    return out


def splice(doc: str, section: list[str]) -> str:
    """`doc` with the section of `section`'s heading replaced (or, if absent,
    put before the decoding section, else at the end)."""
    lines = doc.split("\n")
    head = section[0]
    if head in lines:
        i = lines.index(head)
        j = next((k for k in range(i + 1, len(lines)) if lines[k].startswith("## ")), len(lines))
    else:
        i = next((k for k, l in enumerate(lines) if l.startswith("## Decoding")), len(lines))
        j = i
    return "\n".join(lines[:i] + section + lines[j:])


def main():
    if sys.argv[1] == "--only":
        # Re-render some sections of an existing docs/benchmarks.md (whose
        # other sections need the benchmarks' reports, made on another run).
        which, docs = sys.argv[2].split(","), Path(sys.argv[3])
        path = docs / "benchmarks.md"
        doc = path.read_text()
        for w in which:
            if w == "gpu":
                gpu = load(docs / "benchmarks", GPU_REPORT)
                doc = "\n".join(gpu_bullet(gpu) if l.startswith("- GPU:") else l for l in doc.split("\n"))
                doc = splice(doc, gpu_section(gpu, docs))
            elif w == "decoding":
                doc = splice(doc, decoding_section(eval_report()))
            else:
                sys.exit(f"--only {w}: the sections are gpu and decoding")
        path.write_text(doc)
        print(f"updated {', '.join(which)} in {path}")
        return
    bench, docs = Path(sys.argv[1]), Path(sys.argv[2])
    (docs / "benchmarks").mkdir(parents=True, exist_ok=True)
    gpu = load(docs / "benchmarks", GPU_REPORT)
    inf, naive, pipe, en = (load(bench, n) for n in ["inferencer", "naive", "pipeline", "enrichment"])
    int8, idle = load(bench, "pipeline-int8"), load(bench, "broker_idle")
    lines = [
        "# Benchmarks",
        "",
        "Generated by `scripts/bench` (which runs the commands quoted in each section, then "
        "`scripts/bench_report.py`); edit those, not this file.",
        "",
        f"- Machine: {machine()}.",
        f"- Rendered: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.",
        gpu_bullet(gpu),
        "",
    ]
    lines += inferencer_section(inf, naive, docs)
    lines += pipeline_section(pipe, int8, idle, docs)
    lines += enrichment_section(en)
    lines += gpu_section(gpu, docs)
    lines += decoding_section(eval_report())
    (docs / "benchmarks.md").write_text("\n".join(lines))
    print(f"wrote {docs / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
