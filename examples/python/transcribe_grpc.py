#!/usr/bin/env python3
"""Stream a video file's frames to MouthMap's gRPC API in real time and print
the transcript as it forms.

    pip install -r examples/python/requirements.txt
    python examples/python/transcribe_grpc.py clip.mp4 \\
        --address 127.0.0.1:8081 --token "$(cat .stack/secrets/api-token)"

Frames are decoded and JPEG-encoded by ffmpeg (on PATH), sent with their
presentation timestamps at the video's own pace (--fast: as fast as the
server takes them). Each partial replaces the last on one line; the final
ends it. --json prints every event as a JSON line instead.

The client stubs are generated from proto/mouthmap.proto at start-up
(grpcio-tools), so this file is all a user copies besides the proto.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
DEFAULT_PROTO = HERE.parents[1] / "proto" / "mouthmap.proto"


def load_stubs(proto: Path):
    """Compiles the proto into a temporary folder and imports its modules."""
    out = Path(tempfile.mkdtemp(prefix="mouthmap-stubs-"))
    include = str(Path(protoc.__file__).parent / "_proto")
    rc = protoc.main(["protoc", f"-I{proto.parent}", f"-I{include}", f"--python_out={out}",
                      f"--grpc_python_out={out}", str(proto)])
    if rc != 0:
        sys.exit(f"cannot compile {proto}")
    sys.path.insert(0, str(out))
    return importlib.import_module("mouthmap_pb2"), importlib.import_module("mouthmap_pb2_grpc")


def video_fps(video: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=avg_frame_rate",
         "-of", "default=nw=1:nk=1", str(video)],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    num, _, den = out.partition("/")
    fps = float(num) / float(den or 1)
    return fps if fps > 0 else 25.0


def jpeg_frames(video: Path):
    """Yields each frame of the video as JPEG bytes (ffmpeg's MJPEG stream, split at the markers)."""
    proc = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(video), "-an", "-f", "image2pipe",
         "-c:v", "mjpeg", "-q:v", "3", "-"],
        stdout=subprocess.PIPE,
    )
    buf = b""
    try:
        while True:
            chunk = proc.stdout.read(1 << 16)
            if not chunk:
                break
            buf += chunk
            while True:
                start = buf.find(b"\xff\xd8")
                end = buf.find(b"\xff\xd9", start + 2)
                if start < 0 or end < 0:
                    break
                yield buf[start:end + 2]
                buf = buf[end + 2:]
    finally:
        proc.stdout.close()
        if proc.wait() != 0:
            raise SystemExit(f"ffmpeg could not decode {video}")


def requests(pb2, video: Path, args, sent: dict):
    yield pb2.VideoInput(config=pb2.StreamConfig(stream_id=args.stream_id or "", grammar=args.grammar or "",
                                                 as_fast_as_possible=args.fast))
    fps = video_fps(video)
    t0 = time.monotonic()
    for i, jpeg in enumerate(jpeg_frames(video)):
        pts_us = int(i * 1_000_000 / fps)
        if not args.fast:
            # Real time: a frame is sent when it would have been captured.
            delay = pts_us / 1e6 - (time.monotonic() - t0)
            if delay > 0:
                time.sleep(delay)
        sent["frames"] = i + 1
        yield pb2.VideoInput(frame=pb2.Frame(jpeg=jpeg, pts_us=pts_us))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", type=Path)
    p.add_argument("--address", default=os.environ.get("MOUTHMAP_GRPC", "127.0.0.1:8081"))
    p.add_argument("--token", default=os.environ.get("MOUTHMAP_API_TOKEN"), help="the API token (or MOUTHMAP_API_TOKEN)")
    p.add_argument("--stream-id", help="the stream's id (the server makes one by default)")
    p.add_argument("--grammar", help="grid: decode under the GRID grammar")
    p.add_argument("--fast", action="store_true", help="send as fast as the server takes frames")
    p.add_argument("--json", action="store_true", help="print every event as a JSON line")
    p.add_argument("--proto", type=Path, default=DEFAULT_PROTO)
    args = p.parse_args()
    pb2, pb2_grpc = load_stubs(args.proto)
    metadata = [("authorization", f"Bearer {args.token}")] if args.token else []
    sent: dict = {}
    with grpc.insecure_channel(args.address) as channel:
        stub = pb2_grpc.TranscriberStub(channel)
        kinds = {pb2.TranscriptEvent.PARTIAL: "partial", pb2.TranscriptEvent.FINAL: "final"}
        try:
            for event in stub.Transcribe(requests(pb2, args.video, args, sent), metadata=metadata):
                kind = kinds.get(event.kind, "unknown")
                if args.json:
                    print(json.dumps({"kind": kind, "stream_id": event.stream_id, "text": event.text,
                                      "stable_prefix": event.stable_prefix, "confidence": round(event.confidence, 3),
                                      "model": event.model, "model_version": event.model_version,
                                      "latency_ms": round(event.latency_ms, 1), "frames_sent": sent.get("frames", 0)}),
                          flush=True)
                elif kind == "final":
                    print(f"\r\033[K{event.text}", flush=True)
                else:
                    print(f"\r\033[K{event.text} …", end="", flush=True)
        except grpc.RpcError as e:
            print(f"\nerror: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
