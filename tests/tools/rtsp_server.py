#!/usr/bin/python3
"""A real RTSP server for MouthMap's tests (GStreamer's gst-rtsp-server, from
Debian's gir1.2-gst-rtsp-server-1.0 and python3-gi): serves one video file,
re-encoded to H.264, at rtsp://127.0.0.1:PORT/clip.

    tests/tools/rtsp_server.py PORT FILE
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

Gst.init(None)
port, path = sys.argv[1], sys.argv[2]
server = GstRtspServer.RTSPServer()
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    f'( filesrc location="{path}" ! decodebin ! videoconvert ! x264enc tune=zerolatency speed-preset=veryfast '
    f"key-int-max=25 ! rtph264pay name=pay0 pt=96 config-interval=1 )"
)
factory.set_shared(True)
server.get_mount_points().add_factory("/clip", factory)
server.attach(None)
print(f"rtsp://127.0.0.1:{port}/clip", flush=True)
GLib.MainLoop().run()
