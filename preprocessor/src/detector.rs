//! YuNet face detection through ONNX Runtime.
//!
//! YuNet (OpenCV model zoo, MIT) takes a BGR image `[1, 3, H, W]` (0..255,
//! H and W multiples of 32) and gives, per stride 8, 16 and 32, a class and
//! an objectness score, a box and five landmarks for every cell. Decoding
//! follows OpenCV's `FaceDetectorYN`: score = sqrt(cls × obj), box centre
//! `(col + dx, row + dy) × stride`, size `exp(dw, dh) × stride`, landmarks
//! `(col + lx, row + ly) × stride`; then a score threshold and non-maximum
//! suppression.

use std::path::Path;

use mouthmap_onnx::{OnnxError, SessionSettings, load_session};
use ort::session::Session;
use ort::value::TensorRef;

/// A point in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Point {
    pub x: f32,
    pub y: f32,
}

impl Point {
    pub fn new(x: f32, y: f32) -> Self {
        Self { x, y }
    }

    pub fn mid(self, o: Point) -> Point {
        Point::new((self.x + o.x) / 2.0, (self.y + o.y) / 2.0)
    }

    pub fn dist(self, o: Point) -> f32 {
        ((self.x - o.x).powi(2) + (self.y - o.y).powi(2)).sqrt()
    }
}

/// One detected face. Landmarks as YuNet orders them: the right eye, the left
/// eye (the subject's), the nose tip, the right and the left mouth corner.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Face {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
    pub score: f32,
    pub landmarks: [Point; 5],
}

impl Face {
    pub fn right_eye(&self) -> Point {
        self.landmarks[0]
    }
    pub fn left_eye(&self) -> Point {
        self.landmarks[1]
    }
    pub fn mouth_right(&self) -> Point {
        self.landmarks[3]
    }
    pub fn mouth_left(&self) -> Point {
        self.landmarks[4]
    }
    pub fn area(&self) -> f32 {
        self.w.max(0.0) * self.h.max(0.0)
    }

    fn iou(&self, o: &Face) -> f32 {
        let x1 = self.x.max(o.x);
        let y1 = self.y.max(o.y);
        let x2 = (self.x + self.w).min(o.x + o.w);
        let y2 = (self.y + self.h).min(o.y + o.h);
        let inter = (x2 - x1).max(0.0) * (y2 - y1).max(0.0);
        let union = self.area() + o.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }
}

/// Detection errors.
#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    #[error(
        "cannot load the face model {0} (set --face-model to YuNet's ONNX file; see the preprocessor README)"
    )]
    Load(#[from] OnnxError),
    #[error("the face model does not look like YuNet: {0}")]
    Contract(String),
    #[error("face detection failed: {0}")]
    Run(String),
}

/// Detector settings.
#[derive(Debug, Clone, Copy)]
pub struct DetectorSettings {
    /// Faces scoring under this are dropped.
    pub score_threshold: f32,
    /// Overlapping boxes above this IoU are suppressed.
    pub nms_threshold: f32,
    /// ONNX Runtime intra-op threads (1 scales best across replicas).
    pub threads: usize,
    /// 2: the detector reads the frame (or region) at half its width and
    /// height, each pixel the mean of four, for about a quarter of its cost;
    /// boxes and landmarks come back in the frame's pixels. 1: full size.
    pub downscale: usize,
}

impl Default for DetectorSettings {
    fn default() -> Self {
        Self {
            score_threshold: 0.6,
            nms_threshold: 0.3,
            threads: 1,
            downscale: 1,
        }
    }
}

const STRIDES: [usize; 3] = [8, 16, 32];
const OUTPUTS: [&str; 4] = ["cls", "obj", "bbox", "kps"];

/// A loaded YuNet model.
pub struct Detector {
    session: Session,
    settings: DetectorSettings,
    input: Vec<f32>,
}

impl Detector {
    pub fn load(path: &Path, settings: DetectorSettings) -> Result<Self, DetectorError> {
        let session = load_session(
            path,
            SessionSettings {
                threads: settings.threads,
                ..SessionSettings::default()
            },
        )?;
        let names: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        for s in STRIDES {
            for o in OUTPUTS {
                let want = format!("{o}_{s}");
                if !names.contains(&want.as_str()) {
                    return Err(DetectorError::Contract(format!(
                        "output {want} missing (outputs: {names:?})"
                    )));
                }
            }
        }
        Ok(Self {
            session,
            settings,
            input: Vec::new(),
        })
    }

    /// Detects faces in a BGR-ordered planar image given as luma and chroma
    /// planes of an I420 frame. Returns faces sorted by score, best first.
    pub fn detect_i420(
        &mut self,
        frame: &[u8],
        width: usize,
        height: usize,
    ) -> Result<Vec<Face>, DetectorError> {
        self.detect_i420_in(frame, width, height, None)
    }

    /// As [`detect_i420`](Self::detect_i420), looking only in `region` of the
    /// frame (at full resolution; faces in frame coordinates). YuNet is
    /// convolutional: a face well inside the region is found as in the whole
    /// frame, for the region's share of the cost.
    pub fn detect_i420_in(
        &mut self,
        frame: &[u8],
        width: usize,
        height: usize,
        region: Option<Region>,
    ) -> Result<Vec<Face>, DetectorError> {
        let r = region.unwrap_or(Region {
            x: 0,
            y: 0,
            width,
            height,
        });
        let mut faces = if self.settings.downscale == 2 {
            let (pw, ph) = (
                r.width.div_ceil(2).div_ceil(32) * 32,
                r.height.div_ceil(2).div_ceil(32) * 32,
            );
            i420_region_to_bgr_planar_half(frame, width, height, r.x, r.y, pw, ph, &mut self.input);
            let mut faces = self.run(pw, ph)?;
            for f in &mut faces {
                (f.x, f.y, f.w, f.h) = (2.0 * f.x, 2.0 * f.y, 2.0 * f.w, 2.0 * f.h);
                for p in &mut f.landmarks {
                    *p = Point::new(2.0 * p.x, 2.0 * p.y);
                }
            }
            faces
        } else {
            let (pw, ph) = (r.width.div_ceil(32) * 32, r.height.div_ceil(32) * 32);
            i420_region_to_bgr_planar(frame, width, height, r.x, r.y, pw, ph, &mut self.input);
            self.run(pw, ph)?
        };
        if (r.x, r.y) != (0, 0) {
            for f in &mut faces {
                f.x += r.x as f32;
                f.y += r.y as f32;
                for p in &mut f.landmarks {
                    *p = Point::new(p.x + r.x as f32, p.y + r.y as f32);
                }
            }
        }
        Ok(faces)
    }

    /// Runs YuNet on the `pw` x `ph` input prepared in `self.input`.
    fn run(&mut self, pw: usize, ph: usize) -> Result<Vec<Face>, DetectorError> {
        let tensor = TensorRef::from_array_view(([1usize, 3, ph, pw], &self.input[..]))
            .map_err(|e| DetectorError::Run(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs!["input" => tensor])
            .map_err(|e| DetectorError::Run(e.to_string()))?;
        let mut heads = Vec::with_capacity(3);
        for s in STRIDES {
            let get = |name: &str| -> Result<Vec<f32>, DetectorError> {
                let (_, data) = outputs[format!("{name}_{s}").as_str()]
                    .try_extract_tensor::<f32>()
                    .map_err(|e| DetectorError::Run(e.to_string()))?;
                Ok(data.to_vec())
            };
            heads.push(Head {
                stride: s,
                cls: get("cls")?,
                obj: get("obj")?,
                bbox: get("bbox")?,
                kps: get("kps")?,
            });
        }
        Ok(decode(&heads, pw, ph, self.settings))
    }
}

/// A part of a frame, in its pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

impl Region {
    /// The region around `face` that holds it with `margin` times its larger
    /// side on every side, sized in multiples of 32 (YuNet's input) and moved
    /// inside the frame; None when that is most of the frame anyway.
    pub fn around(face: &Face, margin: f32, width: usize, height: usize) -> Option<Self> {
        let side = face.w.max(face.h).max(1.0);
        // Placed on YuNet's coarsest grid (32 pixels), inside the frame as
        // the detector pads it, so the region's anchors are the whole
        // frame's and a face gets the same box and landmarks.
        let span = |at: f32, len: f32, total: usize| -> (usize, usize) {
            let padded = total.div_ceil(32) * 32;
            let from = ((at - margin * side).max(0.0) as usize / 32 * 32).min(padded - 32);
            let to = (((at + len + margin * side) / 32.0).ceil().max(1.0) as usize * 32)
                .clamp(from + 32, padded);
            (from, to - from)
        };
        let (x, w) = span(face.x, face.w, width);
        let (y, h) = span(face.y, face.h, height);
        if (w * h) as f32 > 0.8 * (width.div_ceil(32) * 32 * height.div_ceil(32) * 32) as f32 {
            return None;
        }
        Some(Self {
            x,
            y,
            width: w,
            height: h,
        })
    }
}

/// The raw outputs of one stride.
pub struct Head {
    pub stride: usize,
    pub cls: Vec<f32>,
    pub obj: Vec<f32>,
    pub bbox: Vec<f32>,
    pub kps: Vec<f32>,
}

/// Decodes YuNet's outputs for a `pw` x `ph` input into faces, after the
/// score threshold and non-maximum suppression, best first.
pub fn decode(heads: &[Head], pw: usize, ph: usize, settings: DetectorSettings) -> Vec<Face> {
    let mut faces = Vec::new();
    for h in heads {
        let cols = pw / h.stride;
        let rows = ph / h.stride;
        let s = h.stride as f32;
        for r in 0..rows {
            for c in 0..cols {
                let i = r * cols + c;
                if i >= h.cls.len() {
                    break;
                }
                let score = (h.cls[i].clamp(0.0, 1.0) * h.obj[i].clamp(0.0, 1.0)).sqrt();
                if score < settings.score_threshold {
                    continue;
                }
                let b = &h.bbox[i * 4..i * 4 + 4];
                let cx = (c as f32 + b[0]) * s;
                let cy = (r as f32 + b[1]) * s;
                let w = b[2].exp() * s;
                let hh = b[3].exp() * s;
                let k = &h.kps[i * 10..i * 10 + 10];
                let landmarks = std::array::from_fn(|j| {
                    Point::new((k[2 * j] + c as f32) * s, (k[2 * j + 1] + r as f32) * s)
                });
                faces.push(Face {
                    x: cx - w / 2.0,
                    y: cy - hh / 2.0,
                    w,
                    h: hh,
                    score,
                    landmarks,
                });
            }
        }
    }
    nms(faces, settings.nms_threshold)
}

/// Greedy non-maximum suppression, best score first.
pub fn nms(mut faces: Vec<Face>, threshold: f32) -> Vec<Face> {
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Face> = Vec::new();
    for f in faces {
        if kept.iter().all(|k| k.iou(&f) <= threshold) {
            kept.push(f);
        }
    }
    kept
}

/// Converts an I420 frame to planar BGR f32 (0..255), zero-padded to `pw` x `ph`
/// (BT.601 limited range, as decoders produce).
pub fn i420_to_bgr_planar(
    frame: &[u8],
    w: usize,
    h: usize,
    pw: usize,
    ph: usize,
    out: &mut Vec<f32>,
) {
    i420_region_to_bgr_planar(frame, w, h, 0, 0, pw, ph, out);
}

/// [`i420_to_bgr_planar`] of the `pw` x `ph` part of the frame from
/// (`x0`, `y0`); what falls outside the frame is zero.
#[allow(clippy::too_many_arguments)]
pub fn i420_region_to_bgr_planar(
    frame: &[u8],
    w: usize,
    h: usize,
    x0: usize,
    y0: usize,
    pw: usize,
    ph: usize,
    out: &mut Vec<f32>,
) {
    let ([y_plane, u_plane, v_plane], cw) = i420_planes(frame, w, h);
    let [b_plane, g_plane, r_plane] = zeroed_planes(out, pw * ph);
    let x1 = w.min(x0 + pw);
    if x1 <= x0 {
        return;
    }
    for y in y0..h.min(y0 + ph) {
        // One row: slices, so the loop runs without index arithmetic or
        // bounds checks per pixel.
        let luma = &y_plane[y * w + x0..y * w + x1];
        let (us, vs) = (
            &u_plane[(y / 2) * cw..(y / 2) * cw + cw],
            &v_plane[(y / 2) * cw..(y / 2) * cw + cw],
        );
        let o = (y - y0) * pw;
        let (bs, gs, rs) = (
            &mut b_plane[o..o + (x1 - x0)],
            &mut g_plane[o..o + (x1 - x0)],
            &mut r_plane[o..o + (x1 - x0)],
        );
        // Two luma samples share a chroma sample: its terms once a pair,
        // and no `x / 2` per pixel.
        let odd = x0 % 2;
        if odd == 1 {
            (bs[0], gs[0], rs[0]) = bgr(luma[0] as f32, us[x0 / 2], vs[x0 / 2]);
        }
        let pairs = (luma.len() - odd) / 2;
        let c0 = (x0 + odd) / 2;
        let span = odd..odd + 2 * pairs;
        let (lp, bp, gp, rp) = (
            &luma[span.clone()],
            &mut bs[span.clone()],
            &mut gs[span.clone()],
            &mut rs[span],
        );
        let (up, vp) = (&us[c0..c0 + pairs], &vs[c0..c0 + pairs]);
        for k in 0..pairs {
            let terms = chroma_terms(up[k], vp[k]);
            for j in 2 * k..2 * k + 2 {
                (bp[j], gp[j], rp[j]) = bgr_with(lp[j] as f32, terms);
            }
        }
        let last = odd + 2 * pairs;
        if last < luma.len() {
            let x = x0 + last;
            (bs[last], gs[last], rs[last]) = bgr(luma[last] as f32, us[x / 2], vs[x / 2]);
        }
    }
}

/// An I420 frame's Y, U and V planes, and the chroma planes' width.
fn i420_planes(frame: &[u8], w: usize, h: usize) -> ([&[u8]; 3], usize) {
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let (y, rest) = frame.split_at(w * h);
    let (u, v) = rest.split_at(cw * ch);
    ([y, u, v], cw)
}

/// `out` as three zeroed planes of `plane` values (B, G, R).
fn zeroed_planes(out: &mut Vec<f32>, plane: usize) -> [&mut [f32]; 3] {
    out.clear();
    out.resize(3 * plane, 0.0);
    let (b, rest) = out.split_at_mut(plane);
    let (g, r) = rest.split_at_mut(plane);
    [b, g, r]
}

/// One pixel, BT.601 limited range: luma `l`, chroma `u`, `v` -> (B, G, R) in 0..255.
#[inline]
fn bgr(l: f32, u: u8, v: u8) -> (f32, f32, f32) {
    bgr_with(l, chroma_terms(u, v))
}

/// A chroma sample's contributions to B, G (from U and from V) and R.
#[inline]
fn chroma_terms(u: u8, v: u8) -> [f32; 4] {
    let (u, v) = (u as f32 - 128.0, v as f32 - 128.0);
    [2.017 * u, 0.392 * u, 0.813 * v, 1.596 * v]
}

/// [`bgr`] of luma `l` with its chroma sample's [`chroma_terms`].
#[inline]
fn bgr_with(l: f32, [bu, gu, gv, rv]: [f32; 4]) -> (f32, f32, f32) {
    let yy = (l - 16.0) * 1.164;
    (
        (yy + bu).clamp(0.0, 255.0),
        (yy - gu - gv).clamp(0.0, 255.0),
        (yy + rv).clamp(0.0, 255.0),
    )
}

/// [`i420_region_to_bgr_planar`] at half size: output pixel (x, y) is the
/// mean of the four luma samples from (`x0` + 2x, `y0` + 2y) with the
/// chroma sample they share; what falls outside the frame is zero.
#[allow(clippy::too_many_arguments)]
pub fn i420_region_to_bgr_planar_half(
    frame: &[u8],
    w: usize,
    h: usize,
    x0: usize,
    y0: usize,
    pw: usize,
    ph: usize,
    out: &mut Vec<f32>,
) {
    let ([y_plane, u_plane, v_plane], cw) = i420_planes(frame, w, h);
    let [b_plane, g_plane, r_plane] = zeroed_planes(out, pw * ph);
    // Output columns and rows whose four samples all lie in the frame.
    let cols = (w.saturating_sub(x0) / 2).min(pw);
    let rows = (h.saturating_sub(y0) / 2).min(ph);
    for oy in 0..rows {
        let y = y0 + 2 * oy;
        let (top, bottom) = (
            &y_plane[y * w + x0..y * w + x0 + 2 * cols],
            &y_plane[(y + 1) * w + x0..(y + 1) * w + x0 + 2 * cols],
        );
        let c = (y / 2) * cw + x0 / 2;
        let (us, vs) = (&u_plane[c..c + cols], &v_plane[c..c + cols]);
        let o = oy * pw;
        let (bs, gs, rs) = (
            &mut b_plane[o..o + cols],
            &mut g_plane[o..o + cols],
            &mut r_plane[o..o + cols],
        );
        for i in 0..cols {
            let l = (top[2 * i] as f32
                + top[2 * i + 1] as f32
                + bottom[2 * i] as f32
                + bottom[2 * i + 1] as f32)
                * 0.25;
            (bs[i], gs[i], rs[i]) = bgr(l, us[i], vs[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(x: f32, score: f32) -> Face {
        Face {
            x,
            y: 0.0,
            w: 10.0,
            h: 10.0,
            score,
            landmarks: [Point::default(); 5],
        }
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let kept = nms(vec![face(0.0, 0.7), face(1.0, 0.9), face(50.0, 0.8)], 0.3);
        let xs: Vec<f32> = kept.iter().map(|f| f.x).collect();
        assert_eq!(xs, [1.0, 50.0]);
    }

    #[test]
    fn decodes_a_cell_into_box_and_landmarks() {
        // A 32x32 input: stride 8 has 4x4 cells; put a face in cell (row 1, col 2).
        let mut heads: Vec<Head> = STRIDES
            .iter()
            .map(|&s| {
                let n = (32 / s) * (32 / s);
                Head {
                    stride: s,
                    cls: vec![0.0; n],
                    obj: vec![0.0; n],
                    bbox: vec![0.0; n * 4],
                    kps: vec![0.0; n * 10],
                }
            })
            .collect();
        let i = 4 + 2;
        heads[0].cls[i] = 0.81;
        heads[0].obj[i] = 1.0;
        heads[0].bbox[i * 4..i * 4 + 4].copy_from_slice(&[0.5, 0.5, 2f32.ln(), 0.0]);
        heads[0].kps[i * 10 + 6] = 0.25; // right mouth corner x offset
        let faces = decode(&heads, 32, 32, DetectorSettings::default());
        assert_eq!(faces.len(), 1);
        let f = &faces[0];
        assert!((f.score - 0.9).abs() < 1e-6);
        assert_eq!((f.w, f.h), (16.0, 8.0));
        assert_eq!((f.x, f.y), (20.0 - 8.0, 12.0 - 4.0));
        assert_eq!(f.mouth_right(), Point::new((2.0 + 0.25) * 8.0, 8.0));
    }

    #[test]
    fn grey_i420_becomes_equal_bgr() {
        let (w, h) = (3, 3);
        let frame = vec![128u8; w * h + 2 * 4];
        let mut out = Vec::new();
        i420_to_bgr_planar(&frame, w, h, 32, 32, &mut out);
        let v = (128.0 - 16.0) * 1.164;
        assert!(
            (out[0] - v).abs() < 1e-3
                && (out[1024] - v).abs() < 1e-3
                && (out[2048] - v).abs() < 1e-3
        );
        assert_eq!(out[3], 0.0, "padding is zero");
    }

    #[test]
    fn the_half_size_input_is_the_mean_of_four_full_size_pixels() {
        // A 64x32 frame of luma ramps, grey chroma; the region from (32, 0).
        let (w, h) = (64usize, 32usize);
        let mut frame: Vec<u8> = (0..w * h)
            .map(|i| ((i % w) * 3 + (i / w) * 5) as u8)
            .collect();
        frame.extend(vec![128u8; 2 * (w / 2) * (h / 2)]);
        let (mut full, mut half) = (Vec::new(), Vec::new());
        i420_region_to_bgr_planar(&frame, w, h, 32, 0, 32, 32, &mut full);
        i420_region_to_bgr_planar_half(&frame, w, h, 32, 0, 32, 32, &mut half);
        for (oy, ox) in [(0usize, 0usize), (3, 7), (15, 15)] {
            let mean = (full[2 * oy * 32 + 2 * ox]
                + full[2 * oy * 32 + 2 * ox + 1]
                + full[(2 * oy + 1) * 32 + 2 * ox]
                + full[(2 * oy + 1) * 32 + 2 * ox + 1])
                / 4.0;
            assert!((half[oy * 32 + ox] - mean).abs() < 1e-3, "({ox}, {oy})");
        }
        // Past the region's 16 half-size columns and rows: padding.
        assert_eq!((half[16], half[16 * 32]), (0.0, 0.0));
    }

    #[test]
    fn each_pixel_gets_its_own_chroma_at_any_region_offset() {
        // A 37x9 frame (odd width: a last chroma column of one luma
        // column) with distinct luma and chroma everywhere; regions that
        // start on odd and even columns and run past the frame's edge.
        let (w, h) = (37usize, 9usize);
        let cw = w.div_ceil(2);
        let ch = h.div_ceil(2);
        let mut frame: Vec<u8> = (0..w * h).map(|i| (16 + (i * 7) % 220) as u8).collect();
        frame.extend((0..cw * ch).map(|i| (40 + (i * 13) % 180) as u8));
        frame.extend((0..cw * ch).map(|i| (30 + (i * 11) % 200) as u8));
        let (yp, rest) = frame.split_at(w * h);
        let (up, vp) = rest.split_at(cw * ch);
        for (x0, y0) in [(0, 0), (1, 2), (2, 1), (5, 0), (36, 8)] {
            let (pw, ph) = (32, 8);
            let mut out = Vec::new();
            i420_region_to_bgr_planar(&frame, w, h, x0, y0, pw, ph, &mut out);
            for y in 0..ph {
                for x in 0..pw {
                    let (fx, fy) = (x0 + x, y0 + y);
                    let want = if fx < w && fy < h {
                        let c = (fy / 2) * cw + fx / 2;
                        bgr(yp[fy * w + fx] as f32, up[c], vp[c])
                    } else {
                        (0.0, 0.0, 0.0)
                    };
                    let i = y * pw + x;
                    let got = (out[i], out[pw * ph + i], out[2 * pw * ph + i]);
                    assert_eq!(got, want, "region at ({x0}, {y0}), pixel ({x}, {y})");
                }
            }
        }
    }
}
