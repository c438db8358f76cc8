//! Resampling the mouth box to the model's input, and per-crop quality.

use crate::detector::Point;
use crate::geometry::MouthBox;

/// Bilinear sample of `img` (`w` x `h`, one byte per pixel) at `(x, y)`,
/// pixel centres at integer + 0.5; edges are clamped.
fn bilinear(img: &[u8], w: usize, h: usize, x: f32, y: f32) -> f32 {
    let fx = (x - 0.5).clamp(0.0, (w - 1) as f32);
    let fy = (y - 0.5).clamp(0.0, (h - 1) as f32);
    // Both are clamped to 0 or more: the cast is their floor (without a
    // call to libm's floorf, which x86-64's baseline makes of `floor`).
    let (x0, y0) = (fx as usize, fy as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (ax, ay) = (fx - x0 as f32, fy - y0 as f32);
    let p = |x: usize, y: usize| img[y * w + x] as f32;
    let top = p(x0, y0) + ax * (p(x1, y0) - p(x0, y0));
    let bottom = p(x0, y1) + ax * (p(x1, y1) - p(x0, y1));
    top + ay * (bottom - top)
}

/// Crops `mbox` out of the grayscale image into `out` (`out_w` x `out_h`).
///
/// Each output pixel averages an n x n grid of bilinear samples over its
/// footprint in the source, n = the downscale factor rounded up (1 when
/// enlarging), which filters like an area resize when shrinking and like
/// bilinear when enlarging, at any rotation.
pub fn crop(
    img: &[u8],
    w: usize,
    h: usize,
    mbox: &MouthBox,
    out_w: usize,
    out_h: usize,
    out: &mut Vec<u8>,
) {
    out.clear();
    let sx = mbox.width / out_w as f32;
    let sy = mbox.height / out_h as f32;
    let n = sx.max(sy).ceil().clamp(1.0, 4.0) as usize;
    let inv = 1.0 / (n * n) as f32;
    // The box's rotation once, and each column's and row's sample offsets
    // in box coordinates once, not per sample.
    let global = mbox.to_global();
    let offsets = |count: usize, step: f32, half: f32| -> Vec<f32> {
        (0..count)
            .flat_map(|k| {
                (0..n).map(move |i| (k as f32 + (i as f32 + 0.5) / n as f32) * step - half)
            })
            .collect()
    };
    let xs = offsets(out_w, sx, mbox.width / 2.0);
    let ys = offsets(out_h, sy, mbox.height / 2.0);
    out.resize(out_w * out_h, 0);
    for (pixels, row) in out.chunks_exact_mut(out_w).zip(ys.chunks_exact(n)) {
        for (pixel, col) in pixels.iter_mut().zip(xs.chunks_exact(n)) {
            let mut acc = 0.0;
            for &ly in row {
                for &lx in col {
                    let p = global(Point::new(lx, ly));
                    acc += bilinear(img, w, h, p.x, p.y);
                }
            }
            *pixel = round_to_u8(acc * inv);
        }
    }
}

/// `v.round().clamp(0.0, 255.0) as u8` for `v` of 0 or more, without libm's
/// roundf: half a unit added in f64 holds every f32 exactly, so the cast
/// (which truncates, and saturates at 255) rounds half away from zero as
/// `round` does.
#[inline]
fn round_to_u8(v: f32) -> u8 {
    (v as f64 + 0.5) as u8
}

/// Mean brightness (0..255) and sharpness (variance of the 4-neighbour
/// Laplacian) of a crop.
pub fn quality(crop: &[u8], w: usize, h: usize) -> (f32, f32) {
    let n = crop.len().max(1) as f64;
    let mean = crop.iter().map(|&p| p as f64).sum::<f64>() / n;
    if w < 3 || h < 3 {
        return (mean as f32, 0.0);
    }
    // The Laplacian is an integer: sums in integers (exact, as the f64
    // sums were for a crop of this size), a row at a time over slices.
    let (mut sum, mut sum2) = (0i64, 0i64);
    for y in 1..h - 1 {
        let (up, row, down) = (
            &crop[(y - 1) * w..y * w],
            &crop[y * w..(y + 1) * w],
            &crop[(y + 1) * w..(y + 2) * w],
        );
        for x in 1..w - 1 {
            let lap = row[x - 1] as i32 + row[x + 1] as i32 + up[x] as i32 + down[x] as i32
                - 4 * row[x] as i32;
            sum += lap as i64;
            sum2 += (lap * lap) as i64;
        }
    }
    let count = ((w - 2) * (h - 2)) as f64;
    let (sum, sum2) = (sum as f64, sum2 as f64);
    let m = sum / count;
    (mean as f32, (sum2 / count - m * m) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_aligned_crop_at_native_scale_copies_pixels() {
        // A 20x10 gradient; crop the 8x4 box centred at (10, 5).
        let (w, h) = (20, 10);
        let img: Vec<u8> = (0..w * h).map(|i| ((i % w) * 10 + (i / w)) as u8).collect();
        let b = MouthBox {
            cx: 10.0,
            cy: 5.0,
            width: 8.0,
            height: 4.0,
            angle: 0.0,
        };
        let mut out = Vec::new();
        crop(&img, w, h, &b, 8, 4, &mut out);
        for v in 0..4 {
            for u in 0..8 {
                assert_eq!(out[v * 8 + u], img[(3 + v) * w + 6 + u], "({u},{v})");
            }
        }
    }

    #[test]
    fn shrinking_averages_instead_of_aliasing() {
        // A checkerboard shrunk 4x is flat grey, not a random pick of black or white.
        let (w, h) = (64, 64);
        let img: Vec<u8> = (0..w * h)
            .map(|i| if (i % w + i / w) % 2 == 0 { 0 } else { 255 })
            .collect();
        let b = MouthBox {
            cx: 32.0,
            cy: 32.0,
            width: 32.0,
            height: 32.0,
            angle: 0.0,
        };
        let mut out = Vec::new();
        crop(&img, w, h, &b, 8, 8, &mut out);
        assert!(out.iter().all(|&p| (120..=135).contains(&p)), "{out:?}");
    }

    #[test]
    fn rotated_crop_turns_the_image_upright() {
        // A bright horizontal bar rotated 90°: a box at angle 90° sees it as vertical.
        let (w, h) = (21, 21);
        let img: Vec<u8> = (0..w * h)
            .map(|i| if i / w == 10 { 255 } else { 0 })
            .collect();
        let b = MouthBox {
            cx: 10.5,
            cy: 10.5,
            width: 11.0,
            height: 11.0,
            angle: std::f32::consts::FRAC_PI_2,
        };
        let mut out = Vec::new();
        crop(&img, w, h, &b, 11, 11, &mut out);
        let column: Vec<u8> = (0..11).map(|v| out[v * 11 + 5]).collect();
        assert!(column.iter().all(|&p| p == 255), "{column:?}");
        assert_eq!(out[5 * 11], 0);
    }

    #[test]
    fn rounding_to_a_byte_matches_round() {
        // Every quarter and its neighbours one ulp either side, and past 255.
        for k in 0..=1100 {
            let v = k as f32 / 4.0;
            for v in [
                v,
                f32::from_bits(v.to_bits().saturating_sub(1)),
                f32::from_bits(v.to_bits() + 1),
            ] {
                let want = v.round().clamp(0.0, 255.0) as u8;
                assert_eq!(round_to_u8(v), want, "{v}");
            }
        }
    }

    #[test]
    fn quality_measures_brightness_and_sharpness() {
        let flat = vec![100u8; 140 * 46];
        assert_eq!(quality(&flat, 140, 46), (100.0, 0.0));
        let stripes: Vec<u8> = (0..140 * 46)
            .map(|i| if i % 2 == 0 { 0 } else { 200 })
            .collect();
        let (b, s) = quality(&stripes, 140, 46);
        assert_eq!(b, 100.0);
        assert!(s > 10_000.0);
    }
}
