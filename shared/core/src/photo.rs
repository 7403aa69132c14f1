//! Photo evidence: resized and compressed to a bounded size, re-encoded as
//! JPEG — which drops every metadata block the camera wrote (EXIF with its
//! GPS tags, maker notes) — and hashed. Time and position travel in our own
//! fields, where the user can see them.

use std::io::Cursor;

use base64::Engine;
use chrono::{DateTime, Utc};
use image::{DynamicImage, ImageReader};
use xianlu_domain::ExceptionKind;
use xianlu_domain::evidence::{EvidenceKind, EvidenceUpload, evidence_digest};
use xianlu_domain::wire::LatLng;

use crate::error::{CoreError, CoreResult};

#[derive(Debug, Clone, Copy)]
pub struct PhotoSettings {
    /// Longest side, pixels.
    pub max_side: u32,
    /// Largest encoded size, bytes.
    pub max_bytes: usize,
}

impl Default for PhotoSettings {
    fn default() -> Self {
        PhotoSettings { max_side: 1600, max_bytes: 350 * 1024 }
    }
}

/// A prepared photo.
#[derive(Debug, Clone, PartialEq)]
pub struct PhotoEvidence {
    pub kind: EvidenceKind,
    pub sha256: String,
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub taken_at: DateTime<Utc>,
    pub position: Option<LatLng>,
    pub line_no: Option<u16>,
    pub exception_kind: Option<ExceptionKind>,
}

impl PhotoEvidence {
    pub fn upload(&self) -> EvidenceUpload {
        EvidenceUpload {
            kind: self.kind,
            image: base64::engine::general_purpose::STANDARD.encode(&self.jpeg),
            strokes: None,
            line_no: self.line_no,
            exception_kind: self.exception_kind,
            taken_at: self.taken_at,
            position: self.position,
        }
    }
}

/// Prepares a camera image (JPEG or PNG) as evidence.
pub fn prepare(
    bytes: &[u8],
    kind: EvidenceKind,
    taken_at: DateTime<Utc>,
    position: Option<LatLng>,
    settings: PhotoSettings,
) -> CoreResult<PhotoEvidence> {
    if kind == EvidenceKind::Signature {
        return Err(CoreError::Refused("a signature is captured from strokes, not a photo".into()));
    }
    let image = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| CoreError::Refused(format!("not an image: {e}")))?
        .decode()
        .map_err(|e| CoreError::Refused(format!("the photo cannot be read: {e}")))?;
    let image = if image.width().max(image.height()) > settings.max_side {
        image.resize(settings.max_side, settings.max_side, image::imageops::FilterType::Triangle)
    } else {
        image
    };
    let rgb = DynamicImage::ImageRgb8(image.to_rgb8());
    let (mut scale, mut quality) = (rgb.clone(), 85u8);
    loop {
        let mut jpeg = Vec::new();
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, quality);
        scale.write_with_encoder(encoder).map_err(|e| CoreError::Refused(e.to_string()))?;
        if jpeg.len() <= settings.max_bytes || (quality <= 40 && scale.width() <= 320) {
            return Ok(PhotoEvidence {
                kind,
                sha256: evidence_digest(kind, &jpeg, None),
                width: scale.width(),
                height: scale.height(),
                jpeg,
                taken_at,
                position,
                line_no: None,
                exception_kind: None,
            });
        }
        if quality > 40 {
            quality -= 15;
        } else {
            // Still too big at low quality: smaller pixels.
            scale = scale.resize(scale.width() * 3 / 4, scale.height() * 3 / 4, image::imageops::FilterType::Triangle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photos_are_bounded_and_hashed() {
        // Noise compresses badly: a worst case for the size bound.
        let mut seed = 7u32;
        let noisy = image::RgbImage::from_fn(3000, 2000, |_, _| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            image::Rgb([(seed >> 24) as u8, (seed >> 16) as u8, (seed >> 8) as u8])
        });
        let mut png = Vec::new();
        noisy.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).expect("png");
        let settings = PhotoSettings::default();
        let photo = prepare(&png, EvidenceKind::Photo, Utc::now(), None, settings).expect("photo");
        assert!(photo.jpeg.len() <= settings.max_bytes, "{} bytes", photo.jpeg.len());
        assert!(photo.width <= 1600 && photo.height <= 1600);
        assert_eq!(photo.sha256, evidence_digest(EvidenceKind::Photo, &photo.jpeg, None));
        assert!(prepare(b"not a picture", EvidenceKind::Photo, Utc::now(), None, settings).is_err());
    }
}
