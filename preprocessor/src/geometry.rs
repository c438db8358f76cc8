//! The mouth box: where to crop, from a face's landmarks.
//!
//! The box is centred between the mouth corners, sized from the distance
//! between the eyes (stable while the mouth moves), and rotated upright by
//! the eye line, so a tilted head gives a level crop.

use crate::detector::{Face, Point};

/// How the box follows from the landmarks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxParams {
    /// Box width as a multiple of the distance between the eyes.
    pub width_scale: f32,
    /// Box height as a fraction of its width.
    pub aspect: f32,
    /// Shift of the centre below the mouth corners' midpoint, as a fraction
    /// of the box height (the lower lip moves further than the upper one).
    pub drop: f32,
}

impl Default for BoxParams {
    fn default() -> Self {
        Self {
            width_scale: 1.3,
            aspect: 0.5,
            drop: 0.08,
        }
    }
}

/// A rotated rectangle in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MouthBox {
    pub cx: f32,
    pub cy: f32,
    pub width: f32,
    pub height: f32,
    /// Rotation of the box's x axis from the frame's, radians (the eye line).
    pub angle: f32,
}

impl MouthBox {
    pub fn from_face(face: &Face, p: BoxParams) -> Self {
        // The subject's right eye appears on the image's left.
        let (re, le) = (face.right_eye(), face.left_eye());
        let angle = (le.y - re.y).atan2(le.x - re.x);
        let eye_dist = re.dist(le).max(1.0);
        let width = eye_dist * p.width_scale;
        let height = width * p.aspect;
        let mid = face.mouth_right().mid(face.mouth_left());
        // "Down" in the face's own frame is the eye line turned by +90°.
        let (s, c) = angle.sin_cos();
        let d = p.drop * height;
        Self {
            cx: mid.x - s * d,
            cy: mid.y + c * d,
            width,
            height,
            angle,
        }
    }

    /// A box for frames before any face was found: the lower middle of the frame.
    pub fn fallback(frame_w: u32, frame_h: u32, p: BoxParams) -> Self {
        let width = frame_w as f32 * 0.3;
        Self {
            cx: frame_w as f32 / 2.0,
            cy: frame_h as f32 * 0.7,
            width,
            height: width * p.aspect,
            angle: 0.0,
        }
    }

    /// `p` in the box's own coordinates (x along the eye line, origin at the centre).
    pub fn local(&self, p: Point) -> Point {
        let (s, c) = self.angle.sin_cos();
        let (dx, dy) = (p.x - self.cx, p.y - self.cy);
        Point::new(c * dx + s * dy, -s * dx + c * dy)
    }

    /// Frame coordinates of a point given in box coordinates.
    pub fn global(&self, l: Point) -> Point {
        self.to_global()(l)
    }

    /// [`global`](Self::global) with the rotation's sine and cosine taken
    /// once, for mapping many points of one box.
    pub fn to_global(&self) -> impl Fn(Point) -> Point + use<> {
        let (s, c) = self.angle.sin_cos();
        let (cx, cy) = (self.cx, self.cy);
        move |l| Point::new(cx + c * l.x - s * l.y, cy + s * l.x + c * l.y)
    }

    pub fn contains(&self, p: Point) -> bool {
        let l = self.local(p);
        l.x.abs() <= self.width / 2.0 && l.y.abs() <= self.height / 2.0
    }

    /// Corners, clockwise from the top left.
    pub fn corners(&self) -> [Point; 4] {
        let (hw, hh) = (self.width / 2.0, self.height / 2.0);
        [(-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh)].map(|(x, y)| self.global(Point::new(x, y)))
    }

    /// Exponential smoothing towards `new` with weight `alpha` (1 = jump).
    pub fn blend(&self, new: &MouthBox, alpha: f32) -> MouthBox {
        let mix = |a: f32, b: f32| a + alpha * (b - a);
        MouthBox {
            cx: mix(self.cx, new.cx),
            cy: mix(self.cy, new.cy),
            width: mix(self.width, new.width),
            height: mix(self.height, new.height),
            angle: mix(self.angle, new.angle),
        }
    }

    pub fn center(&self) -> Point {
        Point::new(self.cx, self.cy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(re: (f32, f32), le: (f32, f32), mr: (f32, f32), ml: (f32, f32)) -> Face {
        let p = |(x, y): (f32, f32)| Point::new(x, y);
        Face {
            x: 0.0,
            y: 0.0,
            w: 100.0,
            h: 100.0,
            score: 0.9,
            landmarks: [p(re), p(le), p((0.0, 0.0)), p(mr), p(ml)],
        }
    }

    #[test]
    fn level_face_gives_level_box_between_the_corners() {
        let f = face(
            (100.0, 100.0),
            (160.0, 100.0),
            (110.0, 170.0),
            (150.0, 170.0),
        );
        let b = MouthBox::from_face(
            &f,
            BoxParams {
                drop: 0.0,
                ..Default::default()
            },
        );
        assert_eq!((b.cx, b.cy, b.angle), (130.0, 170.0, 0.0));
        assert!((b.width - 78.0).abs() < 1e-4);
        assert!((b.height - 39.0).abs() < 1e-4);
        assert!(b.contains(f.mouth_left()) && b.contains(f.mouth_right()));
        assert!(
            !b.contains(Point::new(130.0, 100.0)),
            "the eyes are outside"
        );
    }

    #[test]
    fn tilted_face_gives_a_box_rotated_with_the_eyes() {
        // Eyes on a 45° line; the mouth below, perpendicular to it.
        let f = face((0.0, 0.0), (50.0, 50.0), (0.0, 60.0), (30.0, 90.0));
        let b = MouthBox::from_face(&f, BoxParams::default());
        assert!((b.angle - std::f32::consts::FRAC_PI_4).abs() < 1e-5);
        // The drop moves the centre along the face's own "down" (here down-left).
        assert!(b.cx < 15.0 && b.cy > 75.0, "{b:?}");
        for c in b.corners() {
            let l = b.local(c);
            assert!(
                (l.x.abs() - b.width / 2.0).abs() < 1e-3
                    && (l.y.abs() - b.height / 2.0).abs() < 1e-3
            );
        }
        assert!(b.contains(f.mouth_left()) && b.contains(f.mouth_right()));
    }

    #[test]
    fn blending_moves_part_way() {
        let a = MouthBox {
            cx: 0.0,
            cy: 0.0,
            width: 10.0,
            height: 5.0,
            angle: 0.0,
        };
        let b = MouthBox {
            cx: 10.0,
            cy: 20.0,
            width: 20.0,
            height: 10.0,
            angle: 0.2,
        };
        let m = a.blend(&b, 0.5);
        assert_eq!((m.cx, m.cy, m.width, m.height), (5.0, 10.0, 15.0, 7.5));
        assert_eq!(a.blend(&b, 1.0), b);
    }
}
