//! JPEG frames (ingest `--pixel-format jpeg`) back to I420, the layout the
//! detector and the tracker read.

use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

/// Why a JPEG frame could not be used.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum JpegError {
    #[error("not a decodable JPEG: {0}")]
    Undecodable(String),
    #[error("a {found_width}x{found_height} JPEG in a chunk of {width}x{height} frames")]
    WrongSize {
        found_width: usize,
        found_height: usize,
        width: u32,
        height: u32,
    },
    #[error("a JPEG that decodes to {found} bytes, not {width}x{height} YCbCr")]
    WrongLength {
        found: usize,
        width: u32,
        height: u32,
    },
}

/// Decodes one JPEG into `out` as tightly packed I420 (`width` x `height`,
/// chroma averaged over 2x2 blocks). The image must have the size the chunk
/// says, which is checked from its header before any pixel is decoded (a
/// small file that declares a huge image allocates nothing); anything else
/// is an error that names what was wrong.
pub fn decode_i420(
    jpeg: &[u8],
    width: u32,
    height: u32,
    out: &mut Vec<u8>,
) -> Result<(), JpegError> {
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::YCbCr);
    let mut decoder = JpegDecoder::new_with_options(std::io::Cursor::new(jpeg), options);
    decoder
        .decode_headers()
        .map_err(|e| JpegError::Undecodable(e.to_string()))?;
    let info = decoder
        .info()
        .ok_or_else(|| JpegError::Undecodable("no image information".into()))?;
    let (w, h) = (width as usize, height as usize);
    if (info.width as usize, info.height as usize) != (w, h) {
        return Err(JpegError::WrongSize {
            found_width: info.width as usize,
            found_height: info.height as usize,
            width,
            height,
        });
    }
    let ycc = decoder
        .decode()
        .map_err(|e| JpegError::Undecodable(e.to_string()))?;
    if ycc.len() != w * h * 3 {
        return Err(JpegError::WrongLength {
            found: ycc.len(),
            width,
            height,
        });
    }
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    out.clear();
    out.reserve(w * h + 2 * cw * ch);
    out.extend(ycc.chunks_exact(3).map(|p| p[0]));
    let row = |y: usize| &ycc[y * w * 3..(y + 1) * w * 3];
    for channel in [1, 2] {
        for cy in 0..ch {
            // A 2x2 block's mean; at an odd edge the last row or column
            // counts twice, which gives the mean of the samples there are.
            let (r0, r1) = (row(2 * cy), row((2 * cy + 1).min(h - 1)));
            let pairs = r0.chunks_exact(6).zip(r1.chunks_exact(6));
            out.extend(pairs.map(|(a, b)| {
                let sum = u32::from(a[channel])
                    + u32::from(a[channel + 3])
                    + u32::from(b[channel])
                    + u32::from(b[channel + 3]);
                ((sum + 2) / 4) as u8
            }));
            if w % 2 == 1 {
                let i = (w - 1) * 3 + channel;
                let sum = 2 * (u32::from(r0[i]) + u32::from(r1[i]));
                out.push(((sum + 2) / 4) as u8);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // ffmpeg's test pattern, 40x32, as a JPEG and as raw I420.
    const JPEG: &[u8] = include_bytes!("../../tests/data/pattern-40x32.jpg");
    const RAW: &[u8] = include_bytes!("../../tests/data/pattern-40x32.i420");

    #[test]
    fn a_jpeg_decodes_to_the_i420_it_was_made_from() {
        let mut out = Vec::new();
        decode_i420(JPEG, 40, 32, &mut out).unwrap();
        assert_eq!(out.len(), RAW.len());
        let luma = 40 * 32;
        let mean_diff = |a: &[u8], b: &[u8]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| f64::from(x.abs_diff(*y)))
                .sum::<f64>()
                / a.len() as f64
        };
        // Lossy, but close: measured 2.2 levels on average for luma, 9.0
        // for chroma (upsampled by the decoder and averaged back, across the
        // pattern's hard colour edges); swapped planes or garbage are 50+.
        assert!(mean_diff(&out[..luma], &RAW[..luma]) < 4.0);
        assert!(mean_diff(&out[luma..], &RAW[luma..]) < 12.0);
    }

    #[test]
    fn chroma_is_the_mean_of_each_block_at_odd_sizes_too() {
        // A colour gradient encoded by the test at even, odd and tiny sizes:
        // the decoder's upsampled chroma averaged back, against a plain
        // per-block mean of the same decoded samples (the loop this replaced).
        for (w, h) in [(40usize, 32usize), (39, 31), (1, 1), (3, 2)] {
            let mut pixels = Vec::with_capacity(w * h * 3);
            for y in 0..h {
                for x in 0..w {
                    pixels.extend([(x * 7 + y) as u8, (x * 13 + y * 3) as u8, (y * 11) as u8]);
                }
            }
            let mut jpeg = Vec::new();
            let enc = jpeg_encoder::Encoder::new(&mut jpeg, 95);
            enc.encode(&pixels, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
                .unwrap();
            let mut out = Vec::new();
            decode_i420(&jpeg, w as u32, h as u32, &mut out).unwrap();
            let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::YCbCr);
            let ycc = JpegDecoder::new_with_options(std::io::Cursor::new(&jpeg), options)
                .decode()
                .unwrap();
            let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
            let mut want: Vec<u8> = ycc.chunks_exact(3).map(|p| p[0]).collect();
            for channel in [1, 2] {
                for cy in 0..ch {
                    for cx in 0..cw {
                        let (mut sum, mut n) = (0u32, 0u32);
                        for y in 2 * cy..(2 * cy + 2).min(h) {
                            for x in 2 * cx..(2 * cx + 2).min(w) {
                                sum += u32::from(ycc[(y * w + x) * 3 + channel]);
                                n += 1;
                            }
                        }
                        want.push(((sum + n / 2) / n) as u8);
                    }
                }
            }
            assert_eq!(out, want, "{w}x{h}");
        }
    }

    #[test]
    fn bad_bytes_and_wrong_sizes_are_named() {
        let mut out = Vec::new();
        let err = decode_i420(b"not a jpeg", 8, 8, &mut out)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a decodable JPEG"), "{err}");
        let err = decode_i420(JPEG, 44, 32, &mut out).unwrap_err().to_string();
        assert!(
            err.contains("a 40x32 JPEG in a chunk of 44x32 frames"),
            "{err}"
        );
    }
}
