//! Binary masks over named parameters, and grafting: `theta = mask ? theta_ft : theta_pre`, value by value.
//!
//! A mask stores, for each parameter name, the sorted flat indices it selects (a region is a tiny fraction of
//! the model, so indices are far smaller than a dense array); saved as safetensors, one I64 tensor per name,
//! with the parameter shapes in the metadata.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tensor::ndarray::ArrayD;
use tensor::{Params, StoredTensor};

use crate::{Error, Result};

/// Parameter values by name (as `Params::snapshot` gives them).
pub type Weights = BTreeMap<String, ArrayD<f32>>;

/// Which coordinates of which parameters a region holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mask {
    /// Per parameter: its shape and the sorted flat indices selected.
    pub regions: BTreeMap<String, (Vec<usize>, Vec<usize>)>,
}

impl Mask {
    /// An empty mask over the parameters of `weights` (their shapes recorded).
    pub fn empty(weights: &Weights) -> Mask {
        Mask { regions: weights.iter().map(|(n, w)| (n.clone(), (w.shape().to_vec(), Vec::new()))).collect() }
    }

    /// Coordinates selected.
    pub fn count(&self) -> usize {
        self.regions.values().map(|(_, i)| i.len()).sum()
    }

    /// Coordinates the mask ranges over (selected or not).
    pub fn total(&self) -> usize {
        self.regions.values().map(|(s, _)| s.iter().product::<usize>()).sum()
    }

    /// `count / total`.
    pub fn fraction(&self) -> f64 {
        self.count() as f64 / self.total().max(1) as f64
    }

    /// The `k` coordinates with the largest `|ft - pre|` (ties broken by name, then index: deterministic).
    pub fn top_delta(pre: &Weights, ft: &Weights, k: usize) -> Result<Mask> {
        check_same_names(pre, ft)?;
        let delta: Weights = pre.iter().map(|(n, p)| (n.clone(), (&ft[n] - p).mapv(f32::abs))).collect();
        Mask::top_scores(&delta, k)
    }

    /// The `k` coordinates with the largest score (ties broken by name, then index; NaN scores last).
    pub fn top_scores(scores: &Weights, k: usize) -> Result<Mask> {
        let mut all: Vec<(f32, usize, usize)> = Vec::new(); // (score, name index, flat index)
        for (ni, w) in scores.values().enumerate() {
            all.extend(w.iter().enumerate().map(|(i, &v)| (if v.is_nan() { f32::NEG_INFINITY } else { v }, ni, i)));
        }
        if k > all.len() {
            return Err(Error::Config(format!("{k} coordinates asked of {}", all.len())));
        }
        if k > 0 {
            all.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
        }
        let names: Vec<&String> = scores.keys().collect();
        let mut mask = Mask::empty(scores);
        for &(_, ni, i) in &all[..k] {
            mask.regions.get_mut(names[ni]).expect("same names").1.push(i);
        }
        mask.regions.values_mut().for_each(|(_, idx)| idx.sort_unstable());
        Ok(mask)
    }

    /// `k` coordinates drawn uniformly without replacement over all of `weights`.
    pub fn random(weights: &Weights, k: usize, rng: &mut tensor::Rng) -> Result<Mask> {
        let mut mask = Mask::empty(weights);
        let total = mask.total();
        if k > total {
            return Err(Error::Config(format!("{k} coordinates asked of {total}")));
        }
        // Floyd's algorithm: k distinct draws without materialising a permutation of `total`.
        let mut chosen = std::collections::BTreeSet::new();
        for j in total - k..total {
            let t = rand::RngExt::random_range(rng, 0..=j);
            if !chosen.insert(t) {
                chosen.insert(j);
            }
        }
        let mut offsets = Vec::new();
        let mut start = 0;
        for (name, (shape, _)) in &mask.regions {
            offsets.push((name.clone(), start, start + shape.iter().product::<usize>()));
            start += shape.iter().product::<usize>();
        }
        for flat in chosen {
            let (name, lo, _) = offsets.iter().find(|(_, lo, hi)| flat >= *lo && flat < *hi).expect("in range");
            mask.regions.get_mut(name).expect("listed").1.push(flat - lo);
        }
        Ok(mask)
    }

    /// The mask from a dense 0/1 relaxation rounded at 1/2.
    pub fn from_dense(dense: &Weights) -> Mask {
        let regions = dense
            .iter()
            .map(|(n, g)| {
                let idx = g.iter().enumerate().filter(|(_, v)| **v >= 0.5).map(|(i, _)| i).collect();
                (n.clone(), (g.shape().to_vec(), idx))
            })
            .collect();
        Mask { regions }
    }

    /// 1.0 where selected, 0.0 elsewhere, per parameter.
    pub fn to_dense(&self) -> Weights {
        self.regions
            .iter()
            .map(|(n, (shape, idx))| {
                let mut a = ArrayD::<f32>::zeros(tensor::ndarray::IxDyn(shape));
                let flat = a.as_slice_mut().expect("standard layout");
                for &i in idx {
                    flat[i] = 1.0;
                }
                (n.clone(), a)
            })
            .collect()
    }

    /// `|self & other| / |other|` (1 when `other` is empty).
    pub fn overlap(&self, other: &Mask) -> f64 {
        let mut both = 0usize;
        for (name, (_, idx)) in &self.regions {
            if let Some((_, o)) = other.regions.get(name) {
                let set: std::collections::HashSet<&usize> = o.iter().collect();
                both += idx.iter().filter(|i| set.contains(i)).count();
            }
        }
        if other.count() == 0 { 1.0 } else { both as f64 / other.count() as f64 }
    }

    /// Saves as safetensors: one I64 tensor of flat indices per parameter name, shapes in the metadata.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: Vec<(String, StoredTensor)> = self
            .regions
            .iter()
            .map(|(n, (_, idx))| {
                let v: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
                let a = ArrayD::from_shape_vec(tensor::ndarray::IxDyn(&[v.len()]), v).expect("1-d");
                (n.clone(), StoredTensor::I64(a))
            })
            .collect();
        let mut meta = HashMap::from([("format".to_string(), "strata-graft-mask".to_string())]);
        for (n, (shape, _)) in &self.regions {
            meta.insert(format!("shape:{n}"), serde_json::to_string(shape).expect("a list of numbers"));
        }
        tensor::write_safetensors(path, &tensors, Some(meta))?;
        Ok(())
    }

    /// Loads a mask [`Mask::save`] wrote; indices out of range, unsorted or repeated are errors naming the
    /// parameter.
    pub fn load(path: &Path) -> Result<Mask> {
        let stored = tensor::read_safetensors(path)?;
        let bad = |m: String| Error::File { path: path.to_path_buf(), message: m };
        if stored.metadata.get("format").map(String::as_str) != Some("strata-graft-mask") {
            return Err(bad("not a Strata graft mask (metadata `format` is not `strata-graft-mask`)".into()));
        }
        let mut regions = BTreeMap::new();
        for (name, t) in &stored.tensors {
            let shape: Vec<usize> = stored
                .metadata
                .get(&format!("shape:{name}"))
                .and_then(|s| serde_json::from_str(s).ok())
                .ok_or_else(|| bad(format!("`{name}` has no shape in the metadata")))?;
            let StoredTensor::I64(a) = t else { return Err(bad(format!("`{name}` is not I64 indices"))) };
            let size: usize = shape.iter().product();
            let idx: Vec<usize> = a.iter().map(|&i| usize::try_from(i).unwrap_or(usize::MAX)).collect();
            if idx.iter().any(|&i| i >= size) || idx.windows(2).any(|w| w[0] >= w[1]) {
                return Err(bad(format!("`{name}`: indices must be increasing and below {size}")));
            }
            regions.insert(name.clone(), (shape, idx));
        }
        Ok(Mask { regions })
    }

    /// Grafted values: `ft` where selected, `pre` elsewhere.
    pub fn graft(&self, pre: &Weights, ft: &Weights) -> Result<Weights> {
        check_same_names(pre, ft)?;
        let mut out = pre.clone();
        for (name, (shape, idx)) in &self.regions {
            let (Some(dst), Some(src)) = (out.get_mut(name), ft.get(name)) else {
                return Err(Error::Config(format!("the mask names `{name}`, which the model does not have")));
            };
            if dst.shape() != shape.as_slice() {
                return Err(Error::Config(format!("`{name}`: mask shape {shape:?}, model {:?}", dst.shape())));
            }
            let (d, s) = (dst.as_slice_mut().expect("standard layout"), src.as_slice().expect("standard layout"));
            for &i in idx {
                d[i] = s[i];
            }
        }
        Ok(out)
    }
}

/// The values of the parameters named by `names` (or every parameter under `prefix`) in standard layout.
pub fn weights_under(params: &Params<f32>, prefix: &str) -> Weights {
    params.under(prefix).into_iter().map(|(n, v)| (n, v.value().as_standard_layout().to_owned())).collect()
}

/// Writes `weights` into `params` (every name must exist with the same shape).
pub fn set_weights(params: &Params<f32>, weights: &Weights) -> Result<()> {
    for (name, value) in weights {
        let var = params.get(name).ok_or_else(|| Error::Config(format!("no parameter `{name}`")))?;
        if var.shape() != value.shape() {
            return Err(Error::Config(format!("`{name}`: shape {:?}, model {:?}", value.shape(), var.shape())));
        }
        var.set(value.clone());
    }
    Ok(())
}

fn check_same_names(a: &Weights, b: &Weights) -> Result<()> {
    if a.len() != b.len() || a.iter().zip(b).any(|((n, x), (m, y))| n != m || x.shape() != y.shape()) {
        return Err(Error::Config("pretrained and fine-tuned weights differ in names or shapes".into()));
    }
    Ok(())
}
