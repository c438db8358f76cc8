//! One stream's mouth tracking: when to run the detector, which face is the
//! speaker, how the box moves, and what happens when the face is lost.

use mouthmap_contracts::CropQuality;

use crate::crop;
use crate::detector::{Detector, DetectorError, Face, Region};
use crate::geometry::{BoxParams, MouthBox};

/// Tracking and cropping settings.
#[derive(Debug, Clone, Copy)]
pub struct TrackerSettings {
    /// Run the detector on every Nth frame (1 = every frame).
    pub detect_every: u32,
    /// Between detections, run the detector anyway when the face region's
    /// mean absolute change since the last detection exceeds this (0..255).
    pub recheck_threshold: f32,
    /// Weight of a new detection in the smoothed box (1 = no smoothing),
    /// for detections one frame apart (further apart, the weight a detection
    /// on every frame would have had over those frames).
    pub smoothing: f32,
    /// Boxes between detections interpolated from the detections on both
    /// sides within a chunk, instead of held from the last one: the
    /// detector runs on each chunk's last frame and every `detect_every`th
    /// frame before it, so no frame waits for a later chunk.
    pub interpolate: bool,
    /// Frames a lost face's box is held before the stream is flagged `no_face`.
    pub max_gap: u32,
    /// Detect only near the face found last: in a region this many times the
    /// face's size larger on every side (None: always the whole frame).
    pub region_margin: Option<f32>,
    pub box_params: BoxParams,
    /// Crop size (the model's input frame size).
    pub crop_width: u32,
    pub crop_height: u32,
}

impl Default for TrackerSettings {
    fn default() -> Self {
        Self {
            detect_every: 6,
            recheck_threshold: 8.0,
            smoothing: 0.6,
            interpolate: true,
            max_gap: 25,
            region_margin: None,
            box_params: BoxParams::default(),
            crop_width: 140,
            crop_height: 46,
        }
    }
}

/// What one frame gave.
#[derive(Debug, Clone)]
pub struct FrameCrop {
    /// `crop_width` x `crop_height` grayscale.
    pub crop: Vec<u8>,
    pub quality: CropQuality,
    /// The box the crop was taken from.
    pub mouth_box: MouthBox,
    /// The face the detector found on this frame, if it ran and found one.
    pub face: Option<Face>,
    /// The stream has had no face for longer than `max_gap` frames (or never).
    pub no_face: bool,
}

const THUMB: usize = 16;

/// Tracking state of one stream.
pub struct MouthTracker {
    settings: TrackerSettings,
    mouth_box: Option<MouthBox>,
    last_face: Option<Face>,
    /// Face-region thumbnail at the last successful detection.
    thumb: Option<Vec<f32>>,
    since_detect: u32,
    gap: u32,
    ever_found: bool,
}

impl MouthTracker {
    pub fn new(settings: TrackerSettings) -> Self {
        Self {
            settings,
            mouth_box: None,
            last_face: None,
            thumb: None,
            since_detect: 0,
            gap: 0,
            ever_found: false,
        }
    }

    /// Crops one I420 (or Gray8, `luma_only`) frame.
    pub fn process(
        &mut self,
        detector: &mut Detector,
        frame: &[u8],
        width: u32,
        height: u32,
    ) -> Result<FrameCrop, DetectorError> {
        self.process_frame(detector, frame, width, height, false)
    }

    /// As [`process`](Self::process); `detect` runs the detector whether it
    /// is due or not.
    fn process_frame(
        &mut self,
        detector: &mut Detector,
        frame: &[u8],
        width: u32,
        height: u32,
        detect: bool,
    ) -> Result<FrameCrop, DetectorError> {
        let (w, h) = (width as usize, height as usize);
        let luma = &frame[..w * h];
        let changed = match (&self.thumb, &self.last_face) {
            (Some(t), Some(f)) => {
                mean_abs_diff(t, &thumbnail(luma, w, h, f)) > self.settings.recheck_threshold
            }
            _ => true,
        };
        let due = self.since_detect + 1 >= self.settings.detect_every.max(1);
        let must_detect = detect || self.mouth_box.is_none() || self.gap > 0 || due || changed;
        let mut detected_face = None;
        if must_detect {
            self.since_detect = 0;
            let near = self.last_face.clone().filter(|_| self.gap == 0);
            match self.find_speaker(detector, frame, w, h, near.as_ref())? {
                Some(face) => {
                    let fresh = MouthBox::from_face(&face, self.settings.box_params);
                    let smoothed = match &self.mouth_box {
                        // A jump of more than half a box is a new position, not jitter.
                        Some(prev)
                            if self.gap == 0
                                && prev.center().dist(fresh.center()) < prev.width / 2.0 =>
                        {
                            prev.blend(&fresh, self.settings.smoothing)
                        }
                        _ => fresh,
                    };
                    self.mouth_box = Some(smoothed);
                    self.thumb = Some(thumbnail(luma, w, h, &face));
                    self.last_face = Some(face.clone());
                    self.gap = 0;
                    self.ever_found = true;
                    detected_face = Some(face);
                }
                None => self.gap += 1,
            }
        } else {
            self.since_detect += 1;
        }
        let mouth_box = *self
            .mouth_box
            .get_or_insert_with(|| MouthBox::fallback(width, height, self.settings.box_params));
        let (cw, ch) = (
            self.settings.crop_width as usize,
            self.settings.crop_height as usize,
        );
        let mut out = Vec::new();
        crop::crop(luma, w, h, &mouth_box, cw, ch, &mut out);
        let (brightness, sharpness) = crop::quality(&out, cw, ch);
        let face_found = self.gap == 0 && self.ever_found;
        let quality = CropQuality {
            face_score: if face_found {
                self.last_face.as_ref().map_or(0.0, |f| f.score)
            } else {
                0.0
            },
            face_found,
            detected: must_detect,
            box_width: mouth_box.width,
            brightness,
            sharpness,
        };
        Ok(FrameCrop {
            crop: out,
            quality,
            mouth_box,
            face: detected_face,
            no_face: !self.ever_found || self.gap > self.settings.max_gap,
        })
    }

    /// Crops one chunk's frames (I420, or Gray8 with `luma_only`), in order.
    /// With [`TrackerSettings::interpolate`], boxes between detections are
    /// interpolated (see there); a chunk where that cannot be done (no box
    /// yet, a face lost or found again, or one that jumped by more than half
    /// a box) is cropped frame by frame, detecting on every frame.
    pub fn process_chunk<F: AsRef<[u8]>>(
        &mut self,
        detector: &mut Detector,
        frames: &[F],
        width: u32,
        height: u32,
    ) -> Result<Vec<FrameCrop>, DetectorError> {
        let interpolate = self.settings.interpolate;
        if interpolate && let Some(crops) = self.interpolated(detector, frames, width, height)? {
            return Ok(crops);
        }
        frames
            .iter()
            .map(|f| self.process_frame(detector, f.as_ref(), width, height, interpolate))
            .collect()
    }

    /// The chunk's crops with interpolated boxes, or None (nothing changed)
    /// where the chunk must be cropped frame by frame.
    fn interpolated<F: AsRef<[u8]>>(
        &mut self,
        detector: &mut Detector,
        frames: &[F],
        width: u32,
        height: u32,
    ) -> Result<Option<Vec<FrameCrop>>, DetectorError> {
        let (w, h) = (width as usize, height as usize);
        let Some(start) = self.mouth_box.filter(|_| self.gap == 0 && self.ever_found) else {
            return Ok(None);
        };
        let n = frames.len();
        let every = self.settings.detect_every.max(1) as usize;
        // The last frame and every `every`th before it, in frame order.
        let mut anchors: Vec<usize> = (0..n).rev().step_by(every).collect();
        anchors.reverse();
        // Each anchor's face and smoothed box; the box before the chunk sits
        // at index -1.
        let mut detected = Vec::with_capacity(anchors.len());
        let (mut prev_box, mut prev_at) = (start, -1i64);
        let mut face_ref = self.last_face.clone();
        for &i in &anchors {
            let frame = frames[i].as_ref();
            let Some(face) = self.find_speaker(detector, frame, w, h, face_ref.as_ref())? else {
                return Ok(None);
            };
            let fresh = MouthBox::from_face(&face, self.settings.box_params);
            if prev_box.center().dist(fresh.center()) >= prev_box.width / 2.0 {
                return Ok(None);
            }
            let span = i as i64 - prev_at;
            let alpha = 1.0 - (1.0 - self.settings.smoothing).powi(span as i32);
            let smoothed = prev_box.blend(&fresh, alpha);
            detected.push((i, face.clone(), smoothed));
            (prev_box, prev_at) = (smoothed, i as i64);
            face_ref = Some(face);
        }
        let (cw, ch) = (
            self.settings.crop_width as usize,
            self.settings.crop_height as usize,
        );
        let mut out = Vec::with_capacity(n);
        let (mut from, mut from_at) = (start, -1i64);
        let mut next = detected.iter().peekable();
        for (i, frame) in frames.iter().enumerate() {
            let &(to_at, ref face, to) = *next.peek().expect("the last frame is an anchor");
            let anchor = to_at == i;
            let mouth_box = if anchor {
                to
            } else {
                let t = (i as i64 - from_at) as f32 / (to_at as i64 - from_at) as f32;
                from.blend(&to, t)
            };
            let luma = &frame.as_ref()[..w * h];
            let mut crop_px = Vec::new();
            crop::crop(luma, w, h, &mouth_box, cw, ch, &mut crop_px);
            let (brightness, sharpness) = crop::quality(&crop_px, cw, ch);
            out.push(FrameCrop {
                crop: crop_px,
                quality: CropQuality {
                    face_score: face.score,
                    face_found: true,
                    detected: anchor,
                    box_width: mouth_box.width,
                    brightness,
                    sharpness,
                },
                mouth_box,
                face: anchor.then(|| face.clone()),
                no_face: false,
            });
            if anchor {
                (from, from_at) = (to, i as i64);
                next.next();
            }
        }
        let (last_at, last_face, last_box) = detected.pop().expect("at least the last frame");
        self.thumb = Some(thumbnail(
            &frames[last_at].as_ref()[..w * h],
            w,
            h,
            &last_face,
        ));
        self.mouth_box = Some(last_box);
        self.last_face = Some(last_face);
        self.since_detect = 0;
        Ok(Some(out))
    }

    /// Runs the detector on one frame, near `near` when a region margin is
    /// set (the whole frame when nothing is found there, or no face is
    /// given), and picks the speaker.
    fn find_speaker(
        &self,
        detector: &mut Detector,
        frame: &[u8],
        w: usize,
        h: usize,
        near: Option<&Face>,
    ) -> Result<Option<Face>, DetectorError> {
        let region = match (near, self.settings.region_margin) {
            (Some(f), Some(margin)) => Region::around(f, margin, w, h),
            _ => None,
        };
        let mut faces = detector.detect_i420_in(frame, w, h, region)?;
        if faces.is_empty() && region.is_some() {
            faces = detector.detect_i420(frame, w, h)?;
        }
        Ok(self.pick_speaker(faces))
    }

    /// The speaker: the face nearest the current box, or the largest at first.
    fn pick_speaker(&self, faces: Vec<Face>) -> Option<Face> {
        match &self.mouth_box {
            Some(b) if self.gap <= self.settings.max_gap => faces.into_iter().min_by(|x, y| {
                let d = |f: &Face| f.mouth_right().mid(f.mouth_left()).dist(b.center());
                d(x).total_cmp(&d(y))
            }),
            _ => faces
                .into_iter()
                .max_by(|x, y| (x.area() * x.score).total_cmp(&(y.area() * y.score))),
        }
    }
}

/// A 16x16 mean-pooled thumbnail of the face's box.
fn thumbnail(luma: &[u8], w: usize, h: usize, face: &Face) -> Vec<f32> {
    let mut out = vec![0.0; THUMB * THUMB];
    for (i, cell) in out.iter_mut().enumerate() {
        let (ty, tx) = (i / THUMB, i % THUMB);
        let mut sum = 0.0;
        let mut n = 0.0;
        for sy in 0..2 {
            for sx in 0..2 {
                let x = face.x + face.w * (tx as f32 + 0.25 + 0.5 * sx as f32) / THUMB as f32;
                let y = face.y + face.h * (ty as f32 + 0.25 + 0.5 * sy as f32) / THUMB as f32;
                let (xi, yi) = (
                    x.clamp(0.0, (w - 1) as f32) as usize,
                    y.clamp(0.0, (h - 1) as f32) as usize,
                );
                sum += luma[yi * w + xi] as f32;
                n += 1.0;
            }
        }
        *cell = sum / n;
    }
    out
}

fn mean_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len().max(1) as f32
}
