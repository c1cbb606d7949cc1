//! Real images as camera frames: PNG, JPEG (via the `image` crate) or binary PGM, of any size,
//! fitted to the bundle's frame size and converted to its pixel format.
//!
//! The fit follows the usual ImageNet evaluation transforms: [`Fit::Stretch`] resizes to the
//! frame size (aspect ratio not kept); [`Fit::CenterCrop`] resizes the image, keeping its aspect
//! ratio, so that it covers `height / crop_fraction × width / crop_fraction` and cuts out the
//! centre (torchvision's `Resize(256)` + `CenterCrop(224)` is a crop fraction of 0.875). Resizing
//! is bilinear with antialiasing when shrinking (`image`'s triangle filter, like PIL's
//! `BILINEAR`). Grey frames are the image's luma (Rec. 709 weights); RGB frames drop alpha.
//! EXIF orientation is not applied (PIL, and so torchvision's loaders, ignore it too).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};
use image::{DynamicImage, GrayImage, ImageBuffer, ImageReader, Pixel};
use splitnets_proto::bundle::{InputSpec, ResizeMode};

/// File extensions [`load_folder`] reads (case-insensitive).
pub const EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "pgm"];

/// How an image of another size becomes the frame size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fit {
    /// Resize to exactly the frame size.
    Stretch,
    /// Keep the aspect ratio: resize to cover the frame size divided by `crop_fraction` (in
    /// (0, 1]), then take the centre.
    CenterCrop { crop_fraction: f32 },
}

/// The frames a bundle wants: size, channels (1: gray8, 3: rgb8, interleaved) and fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameFormat {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub fit: Fit,
}

impl FrameFormat {
    /// The frame format of a bundle's input.
    pub fn of(spec: &InputSpec) -> Self {
        Self {
            height: spec.height,
            width: spec.width,
            channels: spec.channels(),
            fit: match spec.resize {
                ResizeMode::Stretch => Fit::Stretch,
                ResizeMode::CenterCrop => Fit::CenterCrop {
                    crop_fraction: spec.crop_fraction.unwrap_or(1.0),
                },
            },
        }
    }

    /// Bytes of one frame.
    pub fn frame_bytes(&self) -> usize {
        self.height * self.width * self.channels
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The bytes are not an image this module reads, or the format cannot be met.
    #[error("{0}")]
    Decode(String),
    #[error("frame folder {}: {cause}", dir.display())]
    Folder { dir: PathBuf, cause: std::io::Error },
    #[error(
        "frame folder {} has no images (looked for {})",
        dir.display(),
        EXTENSIONS.map(|e| format!(".{e}")).join(", ")
    )]
    Empty { dir: PathBuf },
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
}

/// Decodes an image (PNG or JPEG of any bit depth and colour type, or binary PGM) and makes it a
/// frame of `format`: `height × width × channels` interleaved bytes.
pub fn decode_frame(bytes: &[u8], format: &FrameFormat) -> Result<Vec<u8>, ImageError> {
    let img = if bytes.starts_with(b"P5") {
        let (w, h, px) = parse_pgm(bytes).map_err(ImageError::Decode)?;
        let img = GrayImage::from_raw(w as u32, h as u32, px)
            .ok_or_else(|| ImageError::Decode("PGM size out of range".into()))?;
        DynamicImage::ImageLuma8(img)
    } else {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| ImageError::Decode(e.to_string()))?
            .decode()
            .map_err(|e| ImageError::Decode(format!("not a readable PNG or JPEG: {e}")))?
    };
    frame_of(&img, format)
}

/// An image as a frame of `format` (see [`decode_frame`]).
pub fn frame_of(img: &DynamicImage, format: &FrameFormat) -> Result<Vec<u8>, ImageError> {
    if format.height == 0 || format.width == 0 {
        return Err(ImageError::Decode("the frame size is 0".into()));
    }
    if img.width() == 0 || img.height() == 0 {
        return Err(ImageError::Decode("the image is empty".into()));
    }
    let px = match format.channels {
        1 => fit(img.to_luma8(), format)?.into_raw(),
        3 => fit(img.to_rgb8(), format)?.into_raw(),
        c => {
            return Err(ImageError::Decode(format!(
                "frames of {c} channels are not supported (1 or 3)"
            )));
        }
    };
    debug_assert_eq!(px.len(), format.frame_bytes());
    Ok(px)
}

fn fit<P: Pixel<Subpixel = u8> + 'static>(
    img: ImageBuffer<P, Vec<u8>>,
    format: &FrameFormat,
) -> Result<ImageBuffer<P, Vec<u8>>, ImageError> {
    let too_big = || ImageError::Decode("the frame size is out of range".into());
    let tw = u32::try_from(format.width).map_err(|_| too_big())?;
    let th = u32::try_from(format.height).map_err(|_| too_big())?;
    let (iw, ih) = img.dimensions();
    let resize = |img: ImageBuffer<P, Vec<u8>>, w: u32, h: u32| {
        if (w, h) == (iw, ih) {
            img
        } else {
            imageops::resize(&img, w, h, FilterType::Triangle)
        }
    };
    Ok(match format.fit {
        Fit::Stretch => resize(img, tw, th),
        Fit::CenterCrop { crop_fraction } => {
            if !(crop_fraction > 0.0 && crop_fraction <= 1.0) {
                return Err(ImageError::Decode(format!(
                    "crop fraction {crop_fraction} is not in (0, 1]"
                )));
            }
            let (rw, rh) = cover_size((iw, ih), (tw, th), crop_fraction);
            let resized = resize(img, rw, rh);
            let (x, y) = (half_to_even(rw - tw), half_to_even(rh - th));
            imageops::crop_imm(&resized, x, y, tw, th).to_image()
        }
    })
}

/// The size an `image`-sized picture is resized to before the centre crop of `target`: the
/// dimension that binds gets `floor(target / crop_fraction)` (timm's `scale_size`), the other
/// keeps the aspect ratio (truncated, as torchvision's `Resize`), never below the target.
fn cover_size(image: (u32, u32), target: (u32, u32), crop_fraction: f32) -> (u32, u32) {
    let ((iw, ih), (tw, th)) = (image, target);
    // Within 1e-3 of an integer counts as it (f32 crop fractions such as 0.8 are inexact).
    let scaled = |t: u32| ((f64::from(t) / f64::from(crop_fraction) + 1e-3).floor() as u32).max(t);
    let keep = |other: u32, num: u32, den: u32| {
        u32::try_from(u64::from(other) * u64::from(num) / u64::from(den)).unwrap_or(u32::MAX)
    };
    if u64::from(tw) * u64::from(ih) >= u64::from(th) * u64::from(iw) {
        // The width binds (for a square frame: the image's shorter side is its width).
        let rw = scaled(tw);
        (rw, keep(ih, rw, iw).max(th))
    } else {
        let rh = scaled(th);
        (keep(iw, rh, ih).max(tw), rh)
    }
}

/// `round(d / 2)` as Python rounds (half to even): torchvision's centre-crop offset.
fn half_to_even(d: u32) -> u32 {
    let half = d / 2;
    if d % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// The image files of `dir` (extensions [`EXTENSIONS`]), sorted by name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let folder_err = |cause| ImageError::Folder {
        dir: dir.to_path_buf(),
        cause,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(folder_err)? {
        let path = entry.map_err(folder_err)?.path();
        let is_image = path
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| EXTENSIONS.iter().any(|e| x.eq_ignore_ascii_case(e)));
        if is_image && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    if paths.is_empty() {
        return Err(ImageError::Empty {
            dir: dir.to_path_buf(),
        });
    }
    Ok(paths)
}

/// Every image of `dir` (see [`list_images`]), in name order, as frames of `format`. Errors name
/// the file.
pub fn load_folder(dir: &Path, format: &FrameFormat) -> Result<Vec<Vec<u8>>, ImageError> {
    list_images(dir)?
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).map_err(|e| ImageError::File {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            decode_frame(&bytes, format).map_err(|e| ImageError::File {
                path,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// Parses a binary PGM (P5) with maxval ≤ 255: returns (width, height, pixels).
pub fn parse_pgm(b: &[u8]) -> Result<(usize, usize, Vec<u8>), String> {
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'#') {
            if b[i] == b'#' {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            } else {
                i += 1;
            }
        }
        let start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        if start == i {
            return Err("truncated PGM header".into());
        }
        fields.push(String::from_utf8_lossy(&b[start..i]).to_string());
    }
    if fields[0] != "P5" {
        return Err(format!("not a binary PGM (magic {:?}, want P5)", fields[0]));
    }
    let num = |s: &str| {
        s.parse::<usize>()
            .map_err(|_| format!("bad PGM header field {s:?}"))
    };
    let (w, h, max) = (num(&fields[1])?, num(&fields[2])?, num(&fields[3])?);
    if max == 0 || max > 255 {
        return Err(format!("PGM maxval {max} is not 1..=255"));
    }
    let data = &b[(i + 1).min(b.len())..];
    let n = w
        .checked_mul(h)
        .ok_or_else(|| format!("PGM size {w}x{h} is out of range"))?;
    if data.len() < n {
        return Err(format!(
            "PGM has {} pixel bytes, {w}x{h} needs {n}",
            data.len()
        ));
    }
    Ok((w, h, data[..n].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, Luma, Rgb, RgbImage, Rgba, RgbaImage};

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn fmt(height: usize, width: usize, channels: usize, fit: Fit) -> FrameFormat {
        FrameFormat {
            height,
            width,
            channels,
            fit,
        }
    }

    /// An image whose left half is red and right half blue.
    fn halves(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, _| {
            if x < w / 2 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        })
    }

    #[test]
    fn png_at_frame_size_is_exact() {
        let img = RgbImage::from_fn(3, 2, |x, y| Rgb([x as u8 * 10, y as u8 * 20, 7]));
        let png = encode(&DynamicImage::ImageRgb8(img.clone()), ImageFormat::Png);
        let f = decode_frame(&png, &fmt(2, 3, 3, Fit::Stretch)).unwrap();
        assert_eq!(f, img.into_raw(), "interleaved RGB rows, untouched");
        // Gray frames are the luma; a gray PNG comes through unchanged.
        let gray = GrayImage::from_fn(4, 4, |x, y| Luma([(x * 16 + y) as u8]));
        let png = encode(&DynamicImage::ImageLuma8(gray.clone()), ImageFormat::Png);
        let f = decode_frame(&png, &fmt(4, 4, 1, Fit::Stretch)).unwrap();
        assert_eq!(f, gray.into_raw());
        // Gray to RGB replicates the channel.
        let f = decode_frame(&png, &fmt(4, 4, 3, Fit::Stretch)).unwrap();
        assert_eq!(&f[..6], &[0, 0, 0, 16, 16, 16]);
    }

    #[test]
    fn rgba_and_16_bit_pngs_become_8_bit_frames() {
        let rgba = RgbaImage::from_pixel(2, 2, Rgba([10, 20, 30, 0]));
        let png = encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png);
        let f = decode_frame(&png, &fmt(2, 2, 3, Fit::Stretch)).unwrap();
        assert_eq!(f, [10, 20, 30].repeat(4), "alpha is dropped");
        let deep = ImageBuffer::<Rgb<u16>, _>::from_pixel(2, 2, Rgb([65535, 0, 32896]));
        let png = encode(&DynamicImage::ImageRgb16(deep), ImageFormat::Png);
        let f = decode_frame(&png, &fmt(2, 2, 3, Fit::Stretch)).unwrap();
        assert_eq!(f, [255, 0, 128].repeat(4));
        let f = decode_frame(&png, &fmt(2, 2, 1, Fit::Stretch)).unwrap();
        // Rec. 709 luma of (255, 0, 128): 0.2126 * 255 + 0.0722 * 128.
        assert_eq!(f, [63; 4]);
    }

    #[test]
    fn jpeg_of_another_size_is_stretched() {
        let jpg = encode(&DynamicImage::ImageRgb8(halves(64, 32)), ImageFormat::Jpeg);
        let f = decode_frame(&jpg, &fmt(8, 8, 3, Fit::Stretch)).unwrap();
        assert_eq!(f.len(), 8 * 8 * 3);
        let px = |x: usize, y: usize| &f[(y * 8 + x) * 3..][..3];
        // Left column red, right column blue (JPEG is lossy: roughly).
        assert!(px(0, 4)[0] > 200 && px(0, 4)[2] < 60, "{:?}", px(0, 4));
        assert!(px(7, 4)[2] > 200 && px(7, 4)[0] < 60, "{:?}", px(7, 4));
    }

    #[test]
    fn center_crop_keeps_the_aspect_ratio() {
        // 40x20: red | blue halves with a green 10 px band at the centre.
        let img = RgbImage::from_fn(40, 20, |x, _| match x {
            0..15 => Rgb([255, 0, 0]),
            15..25 => Rgb([0, 255, 0]),
            _ => Rgb([0, 0, 255]),
        });
        let png = encode(&DynamicImage::ImageRgb8(img), ImageFormat::Png);
        // Crop fraction 1: shorter side (20) stays 20, centre 20x20 = columns 10..30: green
        // centre, red and blue at the borders, no stretch.
        let f = decode_frame(
            &png,
            &fmt(20, 20, 3, Fit::CenterCrop { crop_fraction: 1.0 }),
        )
        .unwrap();
        let px = |f: &[u8], w: usize, x: usize, y: usize| f[(y * w + x) * 3..][..3].to_vec();
        assert_eq!(px(&f, 20, 0, 0), [255, 0, 0]);
        assert_eq!(px(&f, 20, 10, 10), [0, 255, 0]);
        assert_eq!(px(&f, 20, 19, 19), [0, 0, 255]);
        // Columns 10..15 red, 15..25 green, 25..30 blue.
        assert_eq!(px(&f, 20, 4, 5), [255, 0, 0]);
        assert_eq!(px(&f, 20, 5, 5), [0, 255, 0]);
        assert_eq!(px(&f, 20, 15, 5), [0, 0, 255]);
        // Crop fraction 0.25: the shorter side is resized to 20 / 0.25 = 80 (160x80, the green
        // band at columns 60..100), and the centre 20x20 is all green.
        let f = decode_frame(
            &png,
            &fmt(
                20,
                20,
                3,
                Fit::CenterCrop {
                    crop_fraction: 0.25,
                },
            ),
        )
        .unwrap();
        assert!(f.chunks(3).all(|p| p == [0, 255, 0]), "{f:?}");
        // Stretch squeezes the whole width in instead: red, green and blue all show.
        let f = decode_frame(&png, &fmt(20, 20, 3, Fit::Stretch)).unwrap();
        assert_eq!(px(&f, 20, 2, 0), [255, 0, 0]);
        assert_eq!(px(&f, 20, 10, 0), [0, 255, 0]);
        assert_eq!(px(&f, 20, 17, 0), [0, 0, 255]);
    }

    #[test]
    fn cover_sizes_match_the_imagenet_transforms() {
        // Resize(256) + CenterCrop(224) of a 500x375 photo: 341x256, crop offset (58, 16).
        assert_eq!(cover_size((500, 375), (224, 224), 0.875), (341, 256));
        assert_eq!(cover_size((375, 500), (224, 224), 0.875), (256, 341));
        assert_eq!(cover_size((224, 224), (224, 224), 1.0), (224, 224));
        // An inexact f32 fraction: 224 / 0.8 = 280.
        assert_eq!(cover_size((100, 100), (224, 224), 0.8), (280, 280));
        // A wide frame from a tall image: the width binds.
        assert_eq!(cover_size((100, 200), (64, 32), 1.0), (64, 128));
        assert_eq!(half_to_even(85), 42);
        assert_eq!(half_to_even(3), 2);
        assert_eq!(half_to_even(5), 2);
        assert_eq!(half_to_even(0), 0);
    }

    #[test]
    fn pgm_still_reads_and_bad_bytes_are_refused() {
        let mut b = b"P5\n# made by hand\n3 2\n255\n".to_vec();
        b.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(parse_pgm(&b).unwrap(), (3, 2, vec![1, 2, 3, 4, 5, 6]));
        assert_eq!(
            decode_frame(&b, &fmt(2, 3, 1, Fit::Stretch)).unwrap(),
            [1, 2, 3, 4, 5, 6]
        );
        assert!(
            parse_pgm(b"P6\n1 1\n255\n\0\0\0")
                .unwrap_err()
                .contains("P5")
        );
        assert!(
            parse_pgm(b"P5\n4 4\n255\n\0")
                .unwrap_err()
                .contains("needs 16")
        );
        let e = decode_frame(b"hello", &fmt(2, 2, 1, Fit::Stretch)).unwrap_err();
        assert!(e.to_string().contains("PNG or JPEG"), "{e}");
    }

    #[test]
    fn folders_load_in_name_order_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let gray = |v: u8, w: u32| DynamicImage::ImageLuma8(GrayImage::from_pixel(w, 4, Luma([v])));
        std::fs::write(
            dir.path().join("b.png"),
            encode(&gray(20, 4), ImageFormat::Png),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("a.JPG"),
            encode(&gray(10, 8), ImageFormat::Jpeg),
        )
        .unwrap();
        let mut pgm = b"P5 4 4 255\n".to_vec();
        pgm.extend([30; 16]);
        std::fs::write(dir.path().join("c.pgm"), pgm).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
        let frames = load_folder(dir.path(), &fmt(4, 4, 1, Fit::Stretch)).unwrap();
        let firsts: Vec<u8> = frames.iter().map(|f| f[0]).collect();
        assert_eq!(frames.len(), 3);
        assert!(frames.iter().all(|f| f.len() == 16));
        assert!((9..=11).contains(&firsts[0]), "a.JPG first: {firsts:?}");
        assert_eq!(firsts[1..], [20, 30]);
        std::fs::write(dir.path().join("d.jpeg"), "garbage").unwrap();
        let e = load_folder(dir.path(), &fmt(4, 4, 1, Fit::Stretch)).unwrap_err();
        assert!(e.to_string().contains("d.jpeg"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        let e = load_folder(empty.path(), &fmt(4, 4, 1, Fit::Stretch)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&empty.path().display().to_string()), "{msg}");
        assert!(msg.contains(".png, .jpg, .jpeg, .pgm"), "{msg}");
        let e =
            load_folder(&empty.path().join("missing"), &fmt(4, 4, 1, Fit::Stretch)).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn frame_format_of_a_bundle_input() {
        let spec = InputSpec {
            height: 224,
            width: 224,
            pixel_format: "rgb8".into(),
            resize: ResizeMode::CenterCrop,
            crop_fraction: Some(0.875),
            ..InputSpec::default()
        };
        assert_eq!(
            FrameFormat::of(&spec),
            fmt(
                224,
                224,
                3,
                Fit::CenterCrop {
                    crop_fraction: 0.875
                }
            )
        );
        assert_eq!(FrameFormat::of(&spec).frame_bytes(), spec.raw_frame_bytes());
    }
}
