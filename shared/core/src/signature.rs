//! Signature capture: the strokes a finger or stylus draws become sign-off
//! evidence in two forms — a normalised vector (exact, small, replayable)
//! and a PNG (what people look at) — bound by one SHA-256 over both
//! ([`xianlu_domain::evidence::evidence_digest`]), with time and position.

use std::io::Cursor;

use chrono::{DateTime, Utc};
use image::{GrayAlphaImage, ImageFormat, LumaA};
use serde::{Deserialize, Serialize};
use xianlu_domain::evidence::{EvidenceKind, EvidenceUpload, evidence_digest};
use xianlu_domain::wire::LatLng;

use crate::error::{CoreError, CoreResult};

/// One sampled point of a stroke, in canvas pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StrokePoint {
    pub x: f32,
    pub y: f32,
    /// Milliseconds since the signature began.
    pub t_ms: u32,
    /// 0..1; devices without pressure report 0.5.
    pub pressure: f32,
}

/// Resolution of the normalised vector: coordinates in 0..=10 000 of the canvas.
const GRID: f32 = 10_000.0;
/// Width of the rendered PNG.
const PNG_WIDTH: u32 = 600;

/// The normalised vector, as stored and hashed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignatureVector {
    /// Format version.
    pub v: u8,
    /// Canvas aspect ratio, height / width, in thousandths.
    pub aspect: u32,
    /// Strokes of `[x, y, t_ms, pressure‰]`.
    pub strokes: Vec<Vec<[u32; 4]>>,
}

/// A signature being drawn.
#[derive(Debug, Clone)]
pub struct SignatureCapture {
    width: f32,
    height: f32,
    strokes: Vec<Vec<StrokePoint>>,
}

/// A finished signature, ready to upload and to name in a sign-off.
#[derive(Debug, Clone, PartialEq)]
pub struct SignatureEvidence {
    pub sha256: String,
    /// The normalised vector as JSON text (hashed exactly as is).
    pub strokes: String,
    pub png: Vec<u8>,
    pub taken_at: DateTime<Utc>,
    pub position: Option<LatLng>,
}

impl SignatureEvidence {
    pub fn upload(&self) -> EvidenceUpload {
        use base64::Engine;
        EvidenceUpload {
            kind: EvidenceKind::Signature,
            image: base64::engine::general_purpose::STANDARD.encode(&self.png),
            strokes: Some(self.strokes.clone()),
            line_no: None,
            exception_kind: None,
            taken_at: self.taken_at,
            position: self.position,
        }
    }
}

impl SignatureCapture {
    /// A canvas of this size in pixels.
    pub fn new(width: f32, height: f32) -> SignatureCapture {
        SignatureCapture { width: width.max(1.0), height: height.max(1.0), strokes: Vec::new() }
    }

    pub fn begin_stroke(&mut self) {
        self.strokes.push(Vec::new());
    }

    /// Adds a point to the current stroke (starting one if needed). Points
    /// off the canvas are clamped to its edge.
    pub fn add_point(&mut self, point: StrokePoint) {
        if self.strokes.is_empty() {
            self.begin_stroke();
        }
        let point = StrokePoint {
            x: point.x.clamp(0.0, self.width),
            y: point.y.clamp(0.0, self.height),
            t_ms: point.t_ms,
            pressure: if point.pressure.is_finite() { point.pressure.clamp(0.0, 1.0) } else { 0.5 },
        };
        if let Some(stroke) = self.strokes.last_mut() {
            stroke.push(point);
        }
    }

    /// Starts over ("clear" on the screen).
    pub fn clear(&mut self) {
        self.strokes.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.strokes.iter().all(|s| s.len() < 2)
    }

    /// The normalised vector.
    pub fn vector(&self) -> SignatureVector {
        let strokes = self
            .strokes
            .iter()
            .filter(|s| !s.is_empty())
            .map(|stroke| {
                stroke
                    .iter()
                    .map(|p| {
                        [
                            (p.x / self.width * GRID).round() as u32,
                            (p.y / self.height * GRID).round() as u32,
                            p.t_ms,
                            (p.pressure * 1000.0).round() as u32,
                        ]
                    })
                    .collect()
            })
            .collect();
        SignatureVector { v: 1, aspect: (self.height / self.width * 1000.0).round() as u32, strokes }
    }

    /// Finishes the signature. Refuses one that is empty or a mere dot.
    pub fn finish(&self, taken_at: DateTime<Utc>, position: Option<LatLng>) -> CoreResult<SignatureEvidence> {
        let vector = self.vector();
        let (mut min_x, mut min_y, mut max_x, mut max_y) = (u32::MAX, u32::MAX, 0, 0);
        for p in vector.strokes.iter().flatten() {
            min_x = min_x.min(p[0]);
            min_y = min_y.min(p[1]);
            max_x = max_x.max(p[0]);
            max_y = max_y.max(p[1]);
        }
        // At least 3 % of the canvas in one direction: a tap is not a signature.
        if self.is_empty() || (max_x.saturating_sub(min_x)).max(max_y.saturating_sub(min_y)) < 300 {
            return Err(CoreError::Refused("the signature is empty; ask the customer to sign".into()));
        }
        let strokes = serde_json::to_string(&vector).map_err(|e| CoreError::Refused(e.to_string()))?;
        let png = render(&vector)?;
        let sha256 = evidence_digest(EvidenceKind::Signature, &png, Some(&strokes));
        Ok(SignatureEvidence { sha256, strokes, png, taken_at, position })
    }
}

/// Draws the vector as black ink on a transparent PNG, line width by pressure.
pub fn render(vector: &SignatureVector) -> CoreResult<Vec<u8>> {
    let width = PNG_WIDTH;
    let height = ((PNG_WIDTH as f32) * vector.aspect as f32 / 1000.0).round().clamp(50.0, 2000.0) as u32;
    let mut image = GrayAlphaImage::from_pixel(width, height, LumaA([255, 0]));
    let to_px = |p: &[u32; 4]| (p[0] as f32 / GRID * (width - 1) as f32, p[1] as f32 / GRID * (height - 1) as f32);
    for stroke in &vector.strokes {
        for pair in stroke.windows(2) {
            let (x0, y0) = to_px(&pair[0]);
            let (x1, y1) = to_px(&pair[1]);
            let radius = 1.0 + 2.0 * (pair[0][3] + pair[1][3]) as f32 / 2000.0;
            let steps = ((x1 - x0).hypot(y1 - y0) / 0.5).ceil().max(1.0) as u32;
            for i in 0..=steps {
                let f = i as f32 / steps as f32;
                stamp(&mut image, x0 + (x1 - x0) * f, y0 + (y1 - y0) * f, radius);
            }
        }
        if stroke.len() == 1 {
            let (x, y) = to_px(&stroke[0]);
            stamp(&mut image, x, y, 2.0);
        }
    }
    let mut png = Vec::new();
    image.write_to(&mut Cursor::new(&mut png), ImageFormat::Png).map_err(|e| CoreError::Refused(e.to_string()))?;
    Ok(png)
}

fn stamp(image: &mut GrayAlphaImage, cx: f32, cy: f32, radius: f32) {
    let (w, h) = (image.width() as i64, image.height() as i64);
    let r = radius.ceil() as i64;
    for y in (cy as i64 - r)..=(cy as i64 + r) {
        for x in (cx as i64 - r)..=(cx as i64 + r) {
            if x < 0 || y < 0 || x >= w || y >= h {
                continue;
            }
            let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
            let coverage = (radius + 0.5 - d).clamp(0.0, 1.0);
            if coverage > 0.0 {
                let pixel = image.get_pixel_mut(x as u32, y as u32);
                let alpha = (coverage * 255.0) as u8;
                *pixel = LumaA([0, pixel[1].max(alpha)]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zigzag() -> SignatureCapture {
        let mut capture = SignatureCapture::new(400.0, 200.0);
        capture.begin_stroke();
        for i in 0..40u32 {
            let x = 20.0 + i as f32 * 9.0;
            let y = if i % 2 == 0 { 60.0 } else { 140.0 };
            capture.add_point(StrokePoint { x, y, t_ms: i * 16, pressure: 0.6 });
        }
        capture
    }

    #[test]
    fn the_digest_binds_vector_and_png() {
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let evidence = zigzag().finish(at, None).expect("a signature");
        assert_eq!(evidence.sha256, evidence_digest(EvidenceKind::Signature, &evidence.png, Some(&evidence.strokes)));
        assert_eq!(zigzag().finish(at, None).expect("again").sha256, evidence.sha256, "deterministic");
        let decoded = image::load_from_memory(&evidence.png).expect("png").to_luma_alpha8();
        assert_eq!(decoded.width(), 600);
        assert!(decoded.pixels().filter(|p| p[1] > 0).count() > 2000, "ink on the page");
    }

    #[test]
    fn a_tap_is_not_a_signature() {
        let mut capture = SignatureCapture::new(400.0, 200.0);
        capture.add_point(StrokePoint { x: 10.0, y: 10.0, t_ms: 0, pressure: 0.5 });
        capture.add_point(StrokePoint { x: 11.0, y: 10.0, t_ms: 5, pressure: 0.5 });
        assert!(capture.finish(Utc::now(), None).is_err());
        assert!(SignatureCapture::new(10.0, 10.0).finish(Utc::now(), None).is_err());
    }
}
