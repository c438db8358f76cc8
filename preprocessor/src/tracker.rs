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
    /// Weight of a new detection in the smoothed box (1 = no smoothing).
    pub smoothing: f32,
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
            detect_every: 1,
            recheck_threshold: 8.0,
            smoothing: 0.6,
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
        let (w, h) = (width as usize, height as usize);
        let luma = &frame[..w * h];
        let changed = match (&self.thumb, &self.last_face) {
            (Some(t), Some(f)) => {
                mean_abs_diff(t, &thumbnail(luma, w, h, f)) > self.settings.recheck_threshold
            }
            _ => true,
        };
        let due = self.since_detect + 1 >= self.settings.detect_every.max(1);
        let must_detect = self.mouth_box.is_none() || self.gap > 0 || due || changed;
        let mut detected_face = None;
        if must_detect {
            self.since_detect = 0;
            // Near the face found last, when there is one; the whole frame
            // when none is there.
            let region = match (&self.last_face, self.settings.region_margin) {
                (Some(f), Some(margin)) if self.gap == 0 => Region::around(f, margin, w, h),
                _ => None,
            };
            let mut faces = detector.detect_i420_in(frame, w, h, region)?;
            if faces.is_empty() && region.is_some() {
                faces = detector.detect_i420(frame, w, h)?;
            }
            match self.pick_speaker(faces) {
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
