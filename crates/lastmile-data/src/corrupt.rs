//! Image corruptions: the "last mile" shift between the data a model was trained on
//! and what a deployed device's sensor sees (a different camera gain, focus, mounting
//! angle, noise). Applied to real images; results are **synthetic shifts of real data**
//! and are named so (`<dataset>+<corruption>@<severity>`).
//!
//! Deterministic and portable: arithmetic is in `f32` with `libm` (no platform math),
//! noise comes from the crate's seeded generator, and results are rounded back to the
//! dataset's integer pixel range.

use rand_chacha::rand_core::RngCore;

use crate::Dataset;
use crate::shuffle::rng;

/// One corruption type. Severity is 1 (mild) to 5 (strong), as in ImageNet-C/MNIST-C.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Corruption {
    /// Additive Gaussian noise, σ = 0.04·severity of full scale.
    GaussianNoise,
    /// Gaussian blur, σ = 0.3·severity pixels.
    Blur,
    /// Contrast towards mid-grey by a factor 1 − 0.15·severity.
    Contrast,
    /// Rotation by 6·severity degrees (bilinear, zero fill).
    Rotate,
    /// Translation by `severity` pixels right and ⌈severity/2⌉ down (zero fill), in units
    /// of 1/8 of the image side (so it means the same on 8×8 and 28×28 images).
    Shift,
    /// Brightness offset of +0.1·severity of full scale (saturating).
    Brightness,
    /// Inverted polarity (severity ignored): dark strokes on a light background.
    Invert,
}

impl Corruption {
    /// Every corruption type.
    pub const ALL: [Corruption; 7] = [
        Corruption::GaussianNoise,
        Corruption::Blur,
        Corruption::Contrast,
        Corruption::Rotate,
        Corruption::Shift,
        Corruption::Brightness,
        Corruption::Invert,
    ];

    /// Kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            Corruption::GaussianNoise => "gaussian-noise",
            Corruption::Blur => "blur",
            Corruption::Contrast => "contrast",
            Corruption::Rotate => "rotate",
            Corruption::Shift => "shift",
            Corruption::Brightness => "brightness",
            Corruption::Invert => "invert",
        }
    }

    /// Parses a [`Corruption::name`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == s)
    }
}

impl Dataset {
    /// A copy with every image corrupted (`severity` clamped to 1..=5; `seed` drives the
    /// noise). The name becomes `<name>+<corruption>@<severity>`.
    pub fn corrupted(&self, c: Corruption, severity: u8, seed: u64) -> Dataset {
        let sev = severity.clamp(1, 5) as f32;
        let (h, w, ch) = (self.height, self.width, self.channels);
        let max = self.max_value as f32;
        let mut out = self.clone();
        out.name = format!("{}+{}@{}", self.name, c.name(), severity.clamp(1, 5));
        let mut r = rng(seed);
        let mut img = vec![0f32; h * w * ch];
        let mut tmp = vec![0f32; h * w * ch];
        for i in 0..self.len() {
            for (v, &p) in img.iter_mut().zip(self.image(i)) {
                *v = p as f32 / max;
            }
            match c {
                Corruption::GaussianNoise => {
                    let sigma = 0.04 * sev;
                    for v in img.iter_mut() {
                        *v += sigma * normal(&mut r);
                    }
                }
                Corruption::Blur => {
                    gaussian_blur(&img, &mut tmp, h, w, ch, 0.3 * sev);
                    img.copy_from_slice(&tmp);
                }
                Corruption::Contrast => {
                    let f = 1.0 - 0.15 * sev;
                    for v in img.iter_mut() {
                        *v = 0.5 + (*v - 0.5) * f;
                    }
                }
                Corruption::Rotate => {
                    rotate(&img, &mut tmp, h, w, ch, 6.0 * sev);
                    img.copy_from_slice(&tmp);
                }
                Corruption::Shift => {
                    let dx = libm::roundf(sev * w as f32 / 8.0 / 2.0) as isize;
                    let dy = libm::roundf(libm::ceilf(sev / 2.0) * h as f32 / 8.0 / 2.0) as isize;
                    tmp.iter_mut().for_each(|v| *v = 0.0);
                    for y in 0..h as isize {
                        for x in 0..w as isize {
                            let (sy, sx) = (y - dy, x - dx);
                            if sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w {
                                for k in 0..ch {
                                    tmp[(y as usize * w + x as usize) * ch + k] =
                                        img[(sy as usize * w + sx as usize) * ch + k];
                                }
                            }
                        }
                    }
                    img.copy_from_slice(&tmp);
                }
                Corruption::Brightness => img.iter_mut().for_each(|v| *v += 0.1 * sev),
                Corruption::Invert => img.iter_mut().for_each(|v| *v = 1.0 - *v),
            }
            let dst = &mut out.pixels[i * h * w * ch..(i + 1) * h * w * ch];
            for (d, &v) in dst.iter_mut().zip(&img) {
                *d = libm::rintf(v.clamp(0.0, 1.0) * max) as u8;
            }
        }
        out
    }
}

/// Standard normal from two 24-bit uniforms (Box–Muller, `libm`).
fn normal(r: &mut impl RngCore) -> f32 {
    let u1 = ((r.next_u32() >> 8) + 1) as f32 / 16_777_216.0;
    let u2 = (r.next_u32() >> 8) as f32 / 16_777_216.0;
    libm::sqrtf(-2.0 * libm::logf(u1)) * libm::cosf(core::f32::consts::TAU * u2)
}

fn gaussian_blur(src: &[f32], dst: &mut [f32], h: usize, w: usize, ch: usize, sigma: f32) {
    let radius = libm::ceilf(2.0 * sigma) as isize;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|d| libm::expf(-((d * d) as f32) / (2.0 * sigma * sigma)))
        .collect();
    let norm: f32 = kernel.iter().sum();
    let mut mid = vec![0f32; src.len()];
    // Separable: rows then columns, zero outside the image (the background is 0).
    for y in 0..h {
        for x in 0..w {
            for k in 0..ch {
                let mut acc = 0.0;
                for (j, &kv) in kernel.iter().enumerate() {
                    let sx = x as isize + j as isize - radius;
                    if sx >= 0 && (sx as usize) < w {
                        acc += kv * src[(y * w + sx as usize) * ch + k];
                    }
                }
                mid[(y * w + x) * ch + k] = acc / norm;
            }
        }
    }
    for y in 0..h {
        for x in 0..w {
            for k in 0..ch {
                let mut acc = 0.0;
                for (j, &kv) in kernel.iter().enumerate() {
                    let sy = y as isize + j as isize - radius;
                    if sy >= 0 && (sy as usize) < h {
                        acc += kv * mid[(sy as usize * w + x) * ch + k];
                    }
                }
                dst[(y * w + x) * ch + k] = acc / norm;
            }
        }
    }
}

fn rotate(src: &[f32], dst: &mut [f32], h: usize, w: usize, ch: usize, degrees: f32) {
    let t = degrees * core::f32::consts::PI / 180.0;
    let (s, c) = (libm::sinf(t), libm::cosf(t));
    let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
    let at = |y: isize, x: isize, k: usize| -> f32 {
        if y < 0 || x < 0 || y as usize >= h || x as usize >= w {
            0.0
        } else {
            src[(y as usize * w + x as usize) * ch + k]
        }
    };
    for y in 0..h {
        for x in 0..w {
            // Inverse map: where in the source does this destination pixel come from.
            let (dy, dx) = (y as f32 - cy, x as f32 - cx);
            let sy = c * dy - s * dx + cy;
            let sx = s * dy + c * dx + cx;
            let (y0, x0) = (libm::floorf(sy), libm::floorf(sx));
            let (fy, fx) = (sy - y0, sx - x0);
            let (y0, x0) = (y0 as isize, x0 as isize);
            for k in 0..ch {
                let v = (1.0 - fy) * ((1.0 - fx) * at(y0, x0, k) + fx * at(y0, x0 + 1, k))
                    + fy * ((1.0 - fx) * at(y0 + 1, x0, k) + fx * at(y0 + 1, x0 + 1, k));
                dst[(y * w + x) * ch + k] = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digits;

    #[test]
    fn every_corruption_changes_images_and_keeps_invariants() {
        let d = digits().subset(&(0..50).collect::<Vec<_>>());
        for c in Corruption::ALL {
            let x = d.corrupted(c, 3, 1);
            assert_eq!(x.labels, d.labels);
            assert_eq!(x.pixels.len(), d.pixels.len());
            assert!(x.pixels.iter().all(|&p| p <= d.max_value), "{c:?}");
            assert_ne!(x.pixels, d.pixels, "{c:?} changed nothing");
            assert_eq!(x.name, format!("digits+{}@3", c.name()));
            assert_eq!(x, d.corrupted(c, 3, 1), "{c:?} is deterministic");
        }
    }

    #[test]
    fn severity_orders_the_damage() {
        let d = digits().subset(&(0..100).collect::<Vec<_>>());
        let dist = |x: &Dataset| -> u64 {
            x.pixels
                .iter()
                .zip(&d.pixels)
                .map(|(&a, &b)| (a as i64 - b as i64).unsigned_abs())
                .sum()
        };
        for c in [
            Corruption::GaussianNoise,
            Corruption::Blur,
            Corruption::Contrast,
            Corruption::Rotate,
        ] {
            assert!(
                dist(&d.corrupted(c, 1, 0)) < dist(&d.corrupted(c, 5, 0)),
                "{c:?}"
            );
        }
    }

    #[test]
    fn names_round_trip() {
        for c in Corruption::ALL {
            assert_eq!(Corruption::parse(c.name()), Some(c));
        }
        assert_eq!(Corruption::parse("fog"), None);
    }
}
