//! A synthetic image task whose class evidence is known by construction: one of four 9x9 shapes (filled square,
//! hollow square, plus, X) placed at a random position on a textured background (random gratings and noise). The
//! shape's bounding box is the ground-truth evidence region; the background carries no class information.

use serde::{Deserialize, Serialize};
use tensor::ndarray::{ArrayD, IxDyn};

use crate::{Error, LabelledImages, Result};

/// Generator settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShapesConfig {
    pub size: usize,
    pub shape_size: usize,
    /// Amplitude of the background gratings.
    pub texture: f32,
    /// Standard deviation of per-pixel noise.
    pub noise: f32,
}

impl Default for ShapesConfig {
    fn default() -> Self {
        ShapesConfig { size: 28, shape_size: 9, texture: 0.25, noise: 0.08 }
    }
}

pub const CLASSES: [&str; 4] = ["square", "frame", "plus", "cross"];

/// Images, labels, and the ground-truth evidence regions `[N, H, W]`.
#[derive(Debug, Clone)]
pub struct ShapesData {
    pub data: LabelledImages,
    pub regions: ArrayD<bool>,
}

fn shape_pixel(class: usize, y: usize, x: usize, s: usize) -> bool {
    let edge = y == 0 || x == 0 || y == s - 1 || x == s - 1;
    let mid = s / 2;
    match class {
        0 => true,
        1 => edge,
        2 => y.abs_diff(mid) <= 1 || x.abs_diff(mid) <= 1,
        _ => y.abs_diff(x) <= 1 || (y + x).abs_diff(s - 1) <= 1,
    }
}

/// Generates `n` examples with balanced classes, seeded.
pub fn generate(config: &ShapesConfig, n: usize, seed: u64) -> Result<ShapesData> {
    let (size, s) = (config.size, config.shape_size);
    if s < 3 || s > size || !(config.texture >= 0.0) || !(config.noise >= 0.0) {
        return Err(Error::Config(format!("shapes config {config:?}")));
    }
    let mut rng = tensor::seeded(seed);
    let params = tensor::uniform::<f64>(&[n, 7], 0.0, 1.0, &mut rng);
    let noise = tensor::normal::<f32>(&[n, size, size], 0.0, config.noise as f64, &mut rng);
    let mut images = vec![0f32; n * size * size];
    let mut regions = vec![false; n * size * size];
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % CLASSES.len();
        labels.push(class);
        let p = |j: usize| params[[i, j]];
        let (oy, ox) = ((p(0) * (size - s + 1) as f64) as usize, (p(1) * (size - s + 1) as f64) as usize);
        let (fy, fx) = (0.1 + 0.5 * p(2), 0.1 + 0.5 * p(3));
        let (phase, brightness) = (p(4) * std::f64::consts::TAU, 0.3 + 0.2 * p(5));
        let ink = 0.75 + 0.25 * p(6) as f32;
        for y in 0..size {
            for x in 0..size {
                let at = i * size * size + y * size + x;
                let grating = ((fy * y as f64 + fx * x as f64 + phase).sin() * 0.5 + 0.5) as f32;
                let mut v = brightness as f32 + config.texture * (grating - 0.5) + noise[[i, y, x]];
                let (in_y, in_x) = (y >= oy && y < oy + s, x >= ox && x < ox + s);
                if in_y && in_x {
                    regions[at] = true;
                    if shape_pixel(class, y - oy, x - ox, s) {
                        v = ink + noise[[i, y, x]] * 0.5;
                    }
                }
                images[at] = v.clamp(0.0, 1.0);
            }
        }
    }
    let images = ArrayD::from_shape_vec(IxDyn(&[n, 1, size, size]), images).expect("sized");
    let regions = ArrayD::from_shape_vec(IxDyn(&[n, size, size]), regions).expect("sized");
    Ok(ShapesData { data: LabelledImages::new(images, labels)?, regions })
}
