//! Files for people and for training: `.npy` crop arrays and contact sheets.

use std::io::Write;
use std::path::Path;

use crate::detector::{Face, Point};
use crate::geometry::MouthBox;

/// Writes `data` as an uncompressed NumPy array of uint8 with `shape`.
pub fn write_npy(path: &Path, shape: &[usize], data: &[u8]) -> std::io::Result<()> {
    assert_eq!(
        shape.iter().product::<usize>(),
        data.len(),
        "shape matches data"
    );
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n', padded to 64 bytes.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    f.write_all(b"\x93NUMPY\x01\x00")?;
    f.write_all(&(header.len() as u16).to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    f.write_all(data)?;
    f.flush()
}

/// An RGB canvas to draw on.
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

impl Canvas {
    pub fn new(width: usize, height: usize, background: [u8; 3]) -> Self {
        Self {
            width,
            height,
            rgb: background.repeat(width * height),
        }
    }

    pub fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    pub fn line(&mut self, a: Point, b: Point, c: [u8; 3]) {
        let steps = (a.dist(b).ceil() as usize).max(1);
        for i in 0..=steps {
            let t = i as f32 / steps as f32;
            self.set(
                (a.x + t * (b.x - a.x)) as i64,
                (a.y + t * (b.y - a.y)) as i64,
                c,
            );
        }
    }

    pub fn polygon(&mut self, pts: &[Point], c: [u8; 3]) {
        for i in 0..pts.len() {
            self.line(pts[i], pts[(i + 1) % pts.len()], c);
        }
    }

    pub fn dot(&mut self, p: Point, c: [u8; 3]) {
        for dy in -1..=1 {
            for dx in -1..=1 {
                self.set(p.x as i64 + dx, p.y as i64 + dy, c);
            }
        }
    }

    /// Pastes an I420 frame (converted to RGB) at `(x0, y0)`.
    pub fn paste_i420(&mut self, frame: &[u8], w: usize, h: usize, x0: usize, y0: usize) {
        let cw = w.div_ceil(2);
        let (y_plane, rest) = frame.split_at(w * h);
        let (u_plane, v_plane) = rest.split_at(cw * h.div_ceil(2));
        for y in 0..h {
            for x in 0..w {
                let yy = (y_plane[y * w + x] as f32 - 16.0) * 1.164;
                let u = u_plane[(y / 2) * cw + x / 2] as f32 - 128.0;
                let v = v_plane[(y / 2) * cw + x / 2] as f32 - 128.0;
                let px = |f: f32| f.clamp(0.0, 255.0) as u8;
                let rgb = [
                    px(yy + 1.596 * v),
                    px(yy - 0.392 * u - 0.813 * v),
                    px(yy + 2.017 * u),
                ];
                self.set((x0 + x) as i64, (y0 + y) as i64, rgb);
            }
        }
    }

    /// Pastes a grayscale image at `(x0, y0)`.
    pub fn paste_gray(&mut self, img: &[u8], w: usize, h: usize, x0: usize, y0: usize) {
        for y in 0..h {
            for x in 0..w {
                let g = img[y * w + x];
                self.set((x0 + x) as i64, (y0 + y) as i64, [g, g, g]);
            }
        }
    }

    pub fn save_png(&self, path: &Path) -> Result<(), String> {
        let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut enc = png::Encoder::new(
            std::io::BufWriter::new(file),
            self.width as u32,
            self.height as u32,
        );
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| e.to_string())?;
        w.write_image_data(&self.rgb).map_err(|e| e.to_string())
    }
}

pub const GREEN: [u8; 3] = [40, 220, 60];
pub const RED: [u8; 3] = [240, 40, 40];
pub const YELLOW: [u8; 3] = [250, 220, 30];

/// What a contact sheet shows of one frame.
pub struct SheetFrame<'a> {
    pub frame: &'a [u8],
    pub width: usize,
    pub height: usize,
    pub face: Option<&'a Face>,
    pub mouth_box: MouthBox,
}

/// A contact sheet: the frame with the face box (green), landmarks (red) and
/// mouth box (yellow), then a grid of crops (`cw` x `ch` each).
pub fn contact_sheet(
    top: &SheetFrame<'_>,
    crops: &[Vec<u8>],
    cw: usize,
    ch: usize,
    columns: usize,
) -> Canvas {
    let gap = 4;
    let columns = columns.max(1);
    let rows = crops.len().div_ceil(columns);
    let width = (top.width + 2 * gap).max(columns * (cw + gap) + gap);
    let height = top.height + 2 * gap + rows * (ch + gap) + gap;
    let mut c = Canvas::new(width, height, [24, 24, 24]);
    let x0 = (width - top.width) / 2;
    c.paste_i420(top.frame, top.width, top.height, x0, gap);
    let shift = |p: Point| Point::new(p.x + x0 as f32, p.y + gap as f32);
    if let Some(f) = top.face {
        let corners = [
            (f.x, f.y),
            (f.x + f.w, f.y),
            (f.x + f.w, f.y + f.h),
            (f.x, f.y + f.h),
        ]
        .map(|(x, y)| shift(Point::new(x, y)));
        c.polygon(&corners, GREEN);
        for p in f.landmarks {
            c.dot(shift(p), RED);
        }
    }
    c.polygon(&top.mouth_box.corners().map(shift), YELLOW);
    let y0 = top.height + 2 * gap;
    for (i, crop) in crops.iter().enumerate() {
        let (col, row) = (i % columns, i / columns);
        c.paste_gray(crop, cw, ch, gap + col * (cw + gap), y0 + row * (ch + gap));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_describes_the_array() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        write_npy(&p, &[2, 3, 4], &[7u8; 24]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
        assert!(header.contains("'shape': (2, 3, 4)") && header.ends_with('\n'));
        assert_eq!(&bytes[10 + hlen..], &[7u8; 24]);
    }
}
