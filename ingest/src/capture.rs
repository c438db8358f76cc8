//! Decoding any source to 25 fps I420 frames with GStreamer and an appsink.
//!
//! ```text
//! uridecodebin (files) | uridecodebin3 (rtsp, http)
//!   | rtmp2src ! decodebin3 | v4l2src ! decodebin3
//!   ! queue ! videoconvert ! videoscale ! videorate
//!   ! video/x-raw,format=I420,framerate=25/1,pixel-aspect-ratio=1/1[,width=W]
//!   ! appsink
//! ```
//!
//! Non-video streams (audio) are sent to a fakesink. Frames wider or taller
//! than `max_width` are scaled down, keeping the display aspect ratio. With
//! `jpeg_quality` set, a `jpegenc` before the appsink compresses each frame
//! (`image/jpeg`).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;
use mouthmap_contracts::{FPS, PixelFormat, SourceKind};

use crate::source::Source;

/// Why decoding failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CaptureError {
    #[error("GStreamer could not be initialised: {0}")]
    Init(String),
    #[error(
        "could not build the decoding pipeline: {0} (is the GStreamer plugin installed? scripts/stack up installs them)"
    )]
    Build(String),
    #[error("{source_name}: {message}")]
    Pipeline {
        source_name: String,
        message: String,
    },
    #[error("{0}: the source has no video stream")]
    NoVideo(String),
}

/// A decoded frame with its timestamp: tightly packed I420, or one JPEG.
#[derive(Debug)]
pub struct Decoded {
    pub pts_ns: u64,
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    pub data: Vec<u8>,
}

/// What one poll of the pipeline gave.
#[derive(Debug)]
pub enum Polled {
    Frame(Decoded),
    /// Nothing within the poll's timeout.
    Idle,
    /// The source ended.
    Eos,
}

/// Capture settings.
#[derive(Debug, Clone, Copy)]
pub struct CaptureSettings {
    /// Pace file sources at real time (live sources are always real time).
    pub realtime: bool,
    /// Frames wider or taller than this are scaled down (0 = never scale).
    pub max_width: u32,
    /// Compress each frame to a JPEG of this quality (1-100); None keeps I420.
    /// Set by the stream runner from its `pixel_format`.
    pub jpeg_quality: Option<u8>,
    /// Threads of a libav (avdec_*) video decoder per stream; 0 lets libav
    /// choose (one per core).
    pub decoder_threads: u32,
}

impl Default for CaptureSettings {
    fn default() -> Self {
        Self {
            realtime: false,
            max_width: 640,
            jpeg_quality: None,
            decoder_threads: 1,
        }
    }
}

/// Initialises GStreamer once per process.
pub fn init() -> Result<(), CaptureError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| gst::init().map_err(|e| e.to_string()))
        .clone()
        .map_err(CaptureError::Init)
}

#[derive(Default)]
struct PadState {
    video_linked: bool,
    no_more_pads: bool,
}

/// A running decoding pipeline. Dropping it stops it.
pub struct Capture {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    bus: gst::Bus,
    pads: Arc<Mutex<PadState>>,
    name: String,
    first_pts: Option<gst::ClockTime>,
    /// Where the last frame read ends (its timestamp plus its duration).
    read_end: gst::ClockTime,
}

/// A file whose frames end this much before its declared duration is
/// reported as cut short (more than an audio track outlasting the video
/// by a few frames, as muxers leave it).
const SHORTFALL: Duration = Duration::from_millis(500);

fn make(factory: &str) -> Result<gst::Element, CaptureError> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|e| CaptureError::Build(format!("element {factory}: {e}")))
}

impl Capture {
    /// Builds the pipeline for `source` and sets it playing.
    pub fn open(source: &Source, settings: CaptureSettings) -> Result<Self, CaptureError> {
        init()?;
        let name = source.redacted();
        let build = |e: gst::glib::BoolError| CaptureError::Build(e.to_string());
        let pipeline = gst::Pipeline::default();
        let decoder = match source.kind {
            // decodebin (v2) holds a live FLV stream back until its end,
            // waiting for flvdemux to announce all pads; decodebin3 passes
            // frames on as they arrive.
            SourceKind::Rtmp => {
                let src = gst::ElementFactory::make("rtmp2src")
                    .property_from_str("location", &source.location)
                    .build()
                    .map_err(|e| CaptureError::Build(format!("rtmp2src: {e}")))?;
                let dec = make("decodebin3")?;
                pipeline.add_many([&src, &dec]).map_err(build)?;
                src.link(&dec).map_err(build)?;
                dec
            }
            SourceKind::Camera => {
                let src = gst::ElementFactory::make("v4l2src")
                    .property("device", &source.location)
                    .build()
                    .map_err(|e| CaptureError::Build(format!("v4l2src: {e}")))?;
                let dec = make("decodebin3")?;
                pipeline.add_many([&src, &dec]).map_err(build)?;
                src.link(&dec).map_err(build)?;
                dec
            }
            SourceKind::Rtsp | SourceKind::Http => {
                let dec = gst::ElementFactory::make("uridecodebin3")
                    .property("uri", &source.location)
                    .build()
                    .map_err(|e| CaptureError::Build(format!("uridecodebin3: {e}")))?;
                if !source.follow_redirects {
                    // souphttpsrc follows redirects by default: off, so a
                    // checked address cannot send the pull elsewhere.
                    dec.connect("source-setup", false, |args| {
                        if let Ok(src) = args[1].get::<gst::Element>()
                            && src.has_property("automatic-redirect")
                        {
                            src.set_property("automatic-redirect", false);
                        }
                        None
                    });
                }
                pipeline.add(&dec).map_err(build)?;
                dec
            }
            _ => {
                let dec = gst::ElementFactory::make("uridecodebin")
                    .property("uri", &source.location)
                    .build()
                    .map_err(|e| CaptureError::Build(format!("uridecodebin: {e}")))?;
                pipeline.add(&dec).map_err(build)?;
                dec
            }
        };
        let queue = make("queue")?;
        let convert = make("videoconvert")?;
        let scale = make("videoscale")?;
        let rate = make("videorate")?;
        let filter = make("capsfilter")?;
        filter.set_property("caps", output_caps(None));
        let mut chain = vec![queue.clone(), convert, scale, rate, filter.clone()];
        let sink_caps = match settings.jpeg_quality {
            Some(q) => {
                let enc = make("jpegenc")?;
                // jpegenc reads whole 8x8 blocks, past a row's end when the
                // width is not a multiple of 16 and past the frame's end on
                // its last row: from a decoder's buffers those bytes are
                // uninitialised padding, and the last blocks' colour changed
                // from run to run (GRID's 360-wide frames: chroma columns
                // 176-179 by up to 10 levels). Each frame goes to it in the
                // caps' own layout with zeroed padding and tail.
                if let Some(pad) = enc.static_pad("sink") {
                    pad.add_probe(gst::PadProbeType::BUFFER, |pad, info| {
                        if let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data
                            && let Some(caps) = pad.current_caps()
                            && let Ok(video) = gst_video::VideoInfo::from_caps(&caps)
                            && let Some(padded) = zero_padded(buffer, &video)
                        {
                            *buffer = padded;
                        }
                        gst::PadProbeReturn::Ok
                    });
                }
                enc.set_property("quality", i32::from(q.clamp(1, 100)));
                chain.push(enc);
                gst::Caps::builder("image/jpeg").build()
            }
            None => gst::Caps::builder("video/x-raw")
                .field("format", "I420")
                .build(),
        };
        let sink = gst_app::AppSink::builder()
            .caps(&sink_caps)
            .sync(settings.realtime && !source.is_live())
            .max_buffers(16)
            .drop(false)
            .build();
        chain.push(sink.clone().upcast());
        pipeline.add_many(&chain).map_err(build)?;
        gst::Element::link_many(&chain).map_err(build)?;

        if settings.decoder_threads > 0 {
            // libav's decoders (avdec_*) thread per core by default: with
            // many streams on few cores the threads only wake each other.
            let threads = i32::try_from(settings.decoder_threads).unwrap_or(i32::MAX);
            pipeline.connect("deep-element-added", false, move |args| {
                if let Ok(e) = args[2].get::<gst::Element>()
                    && e.factory().is_some_and(|f| f.name().starts_with("avdec_"))
                    && e.has_property("max-threads")
                {
                    e.set_property("max-threads", threads);
                }
                None
            });
        }
        let pads = Arc::new(Mutex::new(PadState::default()));
        let max_width = settings.max_width;
        // A file's frames are timed by their order at its own frame rate: a
        // container's timestamp glitch (a jump in an MPEG-PS clip) would
        // otherwise become repeated, frozen frames at the 25 fps conversion.
        let restamp = source.kind == SourceKind::File;
        {
            let pads = pads.clone();
            let pipeline_weak = pipeline.downgrade();
            let queue = queue.clone();
            decoder.connect_pad_added(move |_, pad| {
                let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
                let structure = caps.structure(0);
                let is_video = structure.is_some_and(|s| s.name().starts_with("video/"));
                let mut state = pads.lock().expect("pad state lock");
                if is_video && !state.video_linked {
                    if restamp {
                        let fps = structure
                            .and_then(|s| s.get::<gst::Fraction>("framerate").ok())
                            .filter(|f| f.numer() > 0 && f.denom() > 0);
                        if let Some(fps) = fps {
                            restamp_frames(pad, fps);
                        }
                    }
                    let size = structure.and_then(|s| {
                        Some((s.get::<i32>("width").ok()?, s.get::<i32>("height").ok()?))
                    });
                    let target = size.and_then(|(w, h)| {
                        scaled_size(w.max(1) as u32, h.max(1) as u32, max_width)
                    });
                    filter.set_property("caps", output_caps(target));
                    let sinkpad = queue.static_pad("sink").expect("queue has a sink pad");
                    if pad.link(&sinkpad).is_ok() {
                        state.video_linked = true;
                    }
                } else if let Some(pipeline) = pipeline_weak.upgrade() {
                    // Audio and extra video streams are decoded into a fakesink.
                    if let Ok(fake) = gst::ElementFactory::make("fakesink")
                        .property("sync", false)
                        .property("async", false)
                        .build()
                    {
                        let _ = pipeline.add(&fake);
                        let _ = fake.sync_state_with_parent();
                        if let Some(sinkpad) = fake.static_pad("sink") {
                            let _ = pad.link(&sinkpad);
                        }
                    }
                }
            });
        }
        {
            let pads = pads.clone();
            decoder.connect_no_more_pads(move |_| {
                pads.lock().expect("pad state lock").no_more_pads = true;
            });
        }
        let bus = pipeline.bus().expect("a pipeline has a bus");
        let capture = Self {
            pipeline,
            sink,
            bus,
            pads,
            name,
            first_pts: None,
            read_end: gst::ClockTime::ZERO,
        };
        if capture.pipeline.set_state(gst::State::Playing).is_err() {
            // The bus says why.
            return Err(capture
                .pending_error()
                .unwrap_or_else(|| CaptureError::Pipeline {
                    source_name: capture.name.clone(),
                    message: "the pipeline refused to start".into(),
                }));
        }
        Ok(capture)
    }

    fn pending_error(&self) -> Option<CaptureError> {
        while let Some(msg) = self.bus.pop() {
            if let gst::MessageView::Error(err) = msg.view() {
                return Some(CaptureError::Pipeline {
                    source_name: self.name.clone(),
                    message: describe_error(err),
                });
            }
        }
        None
    }

    /// Waits up to `timeout` for the next frame.
    pub fn poll(&mut self, timeout: Duration) -> Result<Polled, CaptureError> {
        let t = gst::ClockTime::from_nseconds(timeout.as_nanos() as u64);
        if let Some(sample) = self.sink.try_pull_sample(t) {
            return self.convert(&sample).map(Polled::Frame);
        }
        if self.sink.is_eos() {
            return Ok(Polled::Eos);
        }
        while let Some(msg) = self.bus.pop() {
            match msg.view() {
                gst::MessageView::Error(err) => {
                    return Err(CaptureError::Pipeline {
                        source_name: self.name.clone(),
                        message: describe_error(err),
                    });
                }
                gst::MessageView::Eos(_) => return Ok(Polled::Eos),
                _ => {}
            }
        }
        let pads = self.pads.lock().expect("pad state lock");
        if pads.no_more_pads && !pads.video_linked {
            return Err(CaptureError::NoVideo(self.name.clone()));
        }
        Ok(Polled::Idle)
    }

    /// After the end of a file: why its frames stopped well before the
    /// duration its container declares (cut short or damaged), if they did.
    pub fn cut_short(&self) -> Option<String> {
        let declared = self.pipeline.query_duration::<gst::ClockTime>()?;
        let read = self.read_end;
        let shortfall = gst::ClockTime::from_nseconds(SHORTFALL.as_nanos() as u64);
        (self.first_pts.is_some() && read + shortfall < declared).then(|| {
            format!(
                "{}: its frames end at {:.2} s of the {:.2} s it declares: the file is cut short or damaged (the frames before were read)",
                self.name,
                read.nseconds() as f64 / 1e9,
                declared.nseconds() as f64 / 1e9
            )
        })
    }

    /// Asks the source to end: what is already decoded still comes out, then EOS.
    pub fn send_eos(&self) {
        self.pipeline.send_event(gst::event::Eos::new());
    }

    fn convert(&mut self, sample: &gst::Sample) -> Result<Decoded, CaptureError> {
        let fail = |message: String| CaptureError::Pipeline {
            source_name: self.name.clone(),
            message,
        };
        let buffer = sample
            .buffer()
            .ok_or_else(|| fail("sample without buffer".into()))?;
        let caps = sample
            .caps()
            .ok_or_else(|| fail("sample without caps".into()))?;
        let pts = buffer.pts().unwrap_or(gst::ClockTime::ZERO);
        self.read_end = pts + buffer.duration().unwrap_or(gst::ClockTime::ZERO);
        let first = *self.first_pts.get_or_insert(pts);
        let pts_ns = pts.saturating_sub(first).nseconds();
        if let Some(s) = caps.structure(0).filter(|s| s.name() == "image/jpeg") {
            let dim = |f: &str| {
                s.get::<i32>(f)
                    .map_err(|e| fail(format!("jpeg caps without {f}: {e}")))
            };
            let (w, h) = (dim("width")? as u32, dim("height")? as u32);
            let map = buffer
                .map_readable()
                .map_err(|e| fail(format!("unreadable jpeg: {e}")))?;
            return Ok(Decoded {
                pts_ns,
                width: w,
                height: h,
                format: PixelFormat::Jpeg,
                data: map.as_slice().to_vec(),
            });
        }
        let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| fail(e.to_string()))?;
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
            .map_err(|e| fail(format!("unreadable frame: {e}")))?;
        let (w, h) = (frame.width(), frame.height());
        let mut data = Vec::with_capacity(PixelFormat::I420.frame_bytes(w, h).unwrap_or(0));
        for plane in 0..3u32 {
            let (pw, ph) = if plane == 0 {
                (w as usize, h as usize)
            } else {
                (w.div_ceil(2) as usize, h.div_ceil(2) as usize)
            };
            let stride = frame.plane_stride()[plane as usize] as usize;
            let bytes = frame
                .plane_data(plane)
                .map_err(|e| fail(format!("plane {plane}: {e}")))?;
            for row in 0..ph {
                data.extend_from_slice(&bytes[row * stride..row * stride + pw]);
            }
        }
        Ok(Decoded {
            pts_ns,
            width: w,
            height: h,
            format: PixelFormat::I420,
            data,
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn output_caps(size: Option<(u32, u32)>) -> gst::Caps {
    let mut b = gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("framerate", gst::Fraction::new(FPS as i32, 1))
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1));
    if let Some((w, h)) = size {
        b = b.field("width", w as i32).field("height", h as i32);
    }
    b.build()
}

/// Times every decoded frame on `pad` by its position at the stream's own
/// frame rate (`fps`), from the first frame's timestamp on, replacing what
/// the container said: the frames keep their number, and a timestamp jump
/// in the container can no longer make the rate conversion repeat frames.
fn restamp_frames(pad: &gst::Pad, fps: gst::Fraction) {
    let frame_ns = 1_000_000_000u64 * fps.denom() as u64 / fps.numer() as u64;
    let state: Mutex<Option<(gst::ClockTime, u64)>> = Mutex::new(None);
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = info.data.as_mut() {
            let mut state = state.lock().expect("restamp lock");
            let (base, n) = state.get_or_insert((buffer.pts().unwrap_or(gst::ClockTime::ZERO), 0));
            let pts = *base + gst::ClockTime::from_nseconds(*n * frame_ns);
            *n += 1;
            let b = buffer.make_mut();
            b.set_pts(pts);
            b.set_dts(gst::ClockTime::NONE);
            b.set_duration(gst::ClockTime::from_nseconds(frame_ns));
        }
        gst::PadProbeReturn::Ok
    });
}

/// The size to scale to when either side is over `max_side` (the longer
/// side becomes `max_side`, the aspect ratio kept, both even for I420), so
/// neither a wide nor a tall frame can exceed it.
fn scaled_size(width: u32, height: u32, max_side: u32) -> Option<(u32, u32)> {
    if max_side == 0 || (width <= max_side && height <= max_side) {
        return None;
    }
    let scale = max_side as f64 / width.max(height) as f64;
    let even = |v: f64| ((v.round() as u32) & !1).max(2);
    Some((even(width as f64 * scale), even(height as f64 * scale)))
}

fn describe_error(err: &gst::message::Error) -> String {
    let e = err.error();
    let mut text = e.to_string();
    if e.matches(gst::StreamError::TypeNotFound) || e.matches(gst::StreamError::WrongType) {
        text = format!("not a video GStreamer can read ({text})");
    } else if e.matches(gst::ResourceError::NotFound) || e.matches(gst::ResourceError::OpenRead) {
        text = format!("cannot open the source ({text})");
    }
    if let Some(debug) = err.debug() {
        let first_line = debug.lines().last().unwrap_or_default().trim().to_string();
        if !first_line.is_empty() {
            text = format!("{text} [{first_line}]");
        }
    }
    text
}

/// Bytes of zeros after a frame copied by [`zero_padded`]: more than an
/// 8x8 block reads past a plane's last row.
const ZERO_TAIL: usize = 64;

/// `buffer`'s frame copied into `video`'s own layout (its strides and
/// offsets), every byte outside the picture zero, with [`ZERO_TAIL`] zero
/// bytes allocated past its end; None for a frame that does not map (it is
/// then passed on as it came).
fn zero_padded(buffer: &gst::Buffer, video: &gst_video::VideoInfo) -> Option<gst::Buffer> {
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), video).ok()?;
    let size = video.size();
    let mut out = gst::Buffer::with_size(size + ZERO_TAIL).ok()?;
    {
        let out_ref = out.get_mut()?;
        {
            let mut map = out_ref.map_writable().ok()?;
            let data = map.as_mut_slice();
            data.fill(0);
            for plane in 0..video.n_planes() {
                let (p, comp) = (plane as usize, plane as u8);
                let row_bytes = video.comp_width(comp) as usize * video.comp_pstride(comp) as usize;
                let (src, src_stride) = (
                    frame.plane_data(plane).ok()?,
                    frame.plane_stride()[p] as usize,
                );
                let (dst_offset, dst_stride) = (video.offset()[p], video.stride()[p] as usize);
                for row in 0..video.comp_height(comp) as usize {
                    let from = src.get(row * src_stride..row * src_stride + row_bytes)?;
                    let at = dst_offset + row * dst_stride;
                    data.get_mut(at..at + row_bytes)?.copy_from_slice(from);
                }
            }
        }
        out_ref.set_size(size);
        buffer
            .copy_into(
                out_ref,
                gst::BufferCopyFlags::FLAGS
                    | gst::BufferCopyFlags::TIMESTAMPS
                    | gst::BufferCopyFlags::META,
                ..,
            )
            .ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `max-threads` of every libav decoder in the capture's pipeline.
    fn decoder_threads(capture: &Capture) -> Vec<i32> {
        capture
            .pipeline
            .iterate_recurse()
            .into_iter()
            .flatten()
            .filter(|e| e.factory().is_some_and(|f| f.name().starts_with("avdec_")))
            .map(|e| e.property::<i32>("max-threads"))
            .collect()
    }

    #[test]
    fn the_decoder_runs_the_threads_it_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let video = dir.path().join("h264.mp4");
        let made = std::process::Command::new("ffmpeg")
            .args([
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=64x48:rate=25",
            ])
            .args(["-t", "0.4", "-c:v", "libx264", "-pix_fmt", "yuv420p"])
            .arg(&video)
            .status()
            .expect("ffmpeg runs");
        assert!(made.success(), "ffmpeg made no H.264 clip");
        let source = Source::parse(video.to_str().unwrap()).unwrap();
        for (threads, want) in [(1, 1), (3, 3), (0, 0)] {
            let settings = CaptureSettings {
                decoder_threads: threads,
                ..CaptureSettings::default()
            };
            let mut capture = Capture::open(&source, settings).unwrap();
            // The decoder exists once the first frame has come through it.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !matches!(
                capture.poll(Duration::from_millis(100)).unwrap(),
                Polled::Frame(_)
            ) {
                assert!(std::time::Instant::now() < deadline, "no frame");
            }
            // 0 leaves libav's default, which is 0 (one per core) too.
            assert_eq!(
                decoder_threads(&capture),
                vec![want],
                "--decoder-threads {threads}"
            );
        }
    }

    #[test]
    fn frames_reach_the_jpeg_encoder_with_zeroed_padding() {
        init().unwrap();
        // A 36x10 I420 frame whose decoder rows are padded to 48 and 32
        // bytes, the padding full of garbage (0xAA).
        let video = gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, 36, 10)
            .build()
            .unwrap();
        let (strides, offsets) = ([48i32, 32, 32], [0usize, 480, 640]);
        let mut buffer = gst::Buffer::from_mut_slice(vec![0xAAu8; 800]);
        {
            let b = buffer.get_mut().unwrap();
            {
                let mut map = b.map_writable().unwrap();
                let data = map.as_mut_slice();
                for (p, (w, h)) in [(36, 10), (18, 5), (18, 5)].into_iter().enumerate() {
                    for row in 0..h {
                        for x in 0..w {
                            data[offsets[p] + row * strides[p] as usize + x] =
                                (p * 50 + row * 3 + x) as u8;
                        }
                    }
                }
            }
            gst_video::VideoMeta::add_full(
                b,
                gst_video::VideoFrameFlags::empty(),
                gst_video::VideoFormat::I420,
                36,
                10,
                &offsets,
                &strides,
            )
            .unwrap();
            b.set_pts(gst::ClockTime::from_mseconds(40));
        }
        let mut out = zero_padded(&buffer, &video).unwrap();
        assert_eq!(out.size(), video.size());
        assert_eq!(out.pts(), Some(gst::ClockTime::from_mseconds(40)));
        // The caps' own layout (strides 36, 20, 20), the picture copied and
        // every other byte, the tail past the frame included, zero.
        out.get_mut().unwrap().set_size(video.size() + ZERO_TAIL);
        let map = out.map_readable().unwrap();
        let mut want = vec![0u8; video.size() + ZERO_TAIL];
        for (p, (w, h)) in [(36, 10), (18, 5), (18, 5)].into_iter().enumerate() {
            for row in 0..h {
                for x in 0..w {
                    want[video.offset()[p] + row * video.stride()[p] as usize + x] =
                        (p * 50 + row * 3 + x) as u8;
                }
            }
        }
        assert_eq!(video.stride(), &[36, 20, 20]);
        assert_eq!(map.as_slice(), &want[..]);
    }

    #[test]
    fn frames_are_bounded_on_both_sides() {
        assert_eq!(scaled_size(360, 288, 640), None);
        assert_eq!(scaled_size(1280, 720, 640), Some((640, 360)));
        assert_eq!(scaled_size(720, 1280, 640), Some((360, 640)));
        assert_eq!(scaled_size(16, 100_000, 640), Some((2, 640)));
        assert_eq!(scaled_size(4000, 4000, 0), None);
    }
}
