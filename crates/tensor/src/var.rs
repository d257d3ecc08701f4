//! Trainable parameters: a `Var` is a named, mutable slot whose `tensor()` is a leaf of the current graph,
//! and `Params` is the store that names them (`blocks.3.attn.q.weight`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use ndarray::ArrayD;

use crate::checkpoint::{StoredTensor, read_safetensors, write_safetensors};
use crate::tensor::{Inner, Tracking};
use crate::{Error, Float, Result, Tensor, TensorId};

struct VarInner<F: Float> {
    id: TensorId,
    current: RwLock<Tensor<F>>,
    trainable: AtomicBool,
}

/// A parameter: a value that optimizers update in place. Its id stays the same across updates, so
/// gradients and optimizer state keyed by it (or by its name in a [`Params`]) stay valid.
pub struct Var<F: Float = f32>(Arc<VarInner<F>>);

impl<F: Float> Clone for Var<F> {
    fn clone(&self) -> Self {
        Var(Arc::clone(&self.0))
    }
}

impl<F: Float> std::fmt::Debug for Var<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Var{:?}(trainable={})", self.shape(), self.is_trainable())
    }
}

fn make<F: Float>(id: TensorId, value: ArrayD<F>, trainable: bool) -> Tensor<F> {
    if trainable {
        Tensor::leaf_with_id(id, value)
    } else {
        Tensor(Arc::new(Inner { id, value, tracking: Tracking::None }))
    }
}

impl<F: Float> Var<F> {
    pub fn new(value: ArrayD<F>) -> Self {
        let id = TensorId::fresh();
        Var(Arc::new(VarInner { id, current: RwLock::new(make(id, value, true)), trainable: AtomicBool::new(true) }))
    }

    pub fn id(&self) -> TensorId {
        self.0.id
    }

    /// The current value as a graph leaf (a constant when frozen, so no gradient is computed for it).
    pub fn tensor(&self) -> Tensor<F> {
        self.0.current.read().expect("var lock").clone()
    }

    pub fn shape(&self) -> Vec<usize> {
        self.tensor().shape().to_vec()
    }

    pub fn len(&self) -> usize {
        self.tensor().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the current value.
    pub fn value(&self) -> ArrayD<F> {
        self.tensor().value().clone()
    }

    pub fn is_trainable(&self) -> bool {
        self.0.trainable.load(Ordering::Relaxed)
    }

    /// Freezes (`false`) or unfreezes the parameter.
    pub fn set_trainable(&self, trainable: bool) {
        if self.0.trainable.swap(trainable, Ordering::Relaxed) != trainable {
            let mut cur = self.0.current.write().expect("var lock");
            let value = take_value(std::mem::replace(&mut *cur, Tensor::zeros(&[])));
            *cur = make(self.0.id, value, trainable);
        }
    }

    /// Replaces the value (any shape: growth may resize a parameter).
    pub fn set(&self, value: ArrayD<F>) {
        *self.0.current.write().expect("var lock") = make(self.0.id, value, self.is_trainable());
    }

    /// Mutates the value in place (without a copy when no live graph still holds the old value).
    pub fn update(&self, f: impl FnOnce(&mut ArrayD<F>)) {
        let mut cur = self.0.current.write().expect("var lock");
        let mut value = take_value(std::mem::replace(&mut *cur, Tensor::zeros(&[])));
        f(&mut value);
        *cur = make(self.0.id, value, self.is_trainable());
    }
}

/// The owned value of a tensor: moved out if this is the last handle, copied otherwise.
fn take_value<F: Float>(t: Tensor<F>) -> ArrayD<F> {
    match Arc::try_unwrap(t.0) {
        Ok(inner) => {
            let Inner { value, .. } = inner;
            value
        }
        Err(shared) => shared.value.clone(),
    }
}

struct Store<F: Float> {
    order: Vec<String>,
    vars: HashMap<String, Var<F>>,
}

/// The named parameters of a model. Cheap to clone (a shared handle).
///
/// Layers register parameters through a [`ParamPath`]; growing, skipping, freezing, masking, saving and
/// loading all address parameters by name.
pub struct Params<F: Float = f32>(Arc<RwLock<Store<F>>>);

impl<F: Float> Clone for Params<F> {
    fn clone(&self) -> Self {
        Params(Arc::clone(&self.0))
    }
}

impl<F: Float> Default for Params<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Float> std::fmt::Debug for Params<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Params({} tensors, {} values)", self.len(), self.num_elements())
    }
}

impl<F: Float> Params<F> {
    pub fn new() -> Self {
        Params(Arc::new(RwLock::new(Store { order: Vec::new(), vars: HashMap::new() })))
    }

    /// An independent copy: new [`Var`]s with the same names, order, values and trainable flags. Unlike
    /// `clone` (another handle on the same store), training the copy leaves this one unchanged, so candidates
    /// can be grown and trained side by side from one trained model.
    pub fn deep_copy(&self) -> Params<F> {
        let s = self.0.read().expect("params lock");
        let vars = s
            .order
            .iter()
            .map(|n| {
                let old = &s.vars[n];
                let v = Var::new(old.value());
                v.set_trainable(old.is_trainable());
                (n.clone(), v)
            })
            .collect();
        Params(Arc::new(RwLock::new(Store { order: s.order.clone(), vars })))
    }

    /// Whether `other` is a handle on this same store (what `clone` gives), not a [`Params::deep_copy`].
    pub fn same_store(&self, other: &Params<F>) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The root path for registering parameters.
    pub fn root(&self) -> ParamPath<F> {
        ParamPath { params: self.clone(), prefix: String::new() }
    }

    /// Registers a new parameter.
    pub fn insert(&self, name: &str, value: ArrayD<F>) -> Result<Var<F>> {
        let mut s = self.0.write().expect("params lock");
        if s.vars.contains_key(name) {
            return Err(Error::DuplicateParam(name.to_string()));
        }
        let v = Var::new(value);
        s.order.push(name.to_string());
        s.vars.insert(name.to_string(), v.clone());
        Ok(v)
    }

    /// Removes a parameter (e.g. a layer dropped by a growth operator).
    pub fn remove(&self, name: &str) -> Option<Var<F>> {
        let mut s = self.0.write().expect("params lock");
        s.order.retain(|n| n != name);
        s.vars.remove(name)
    }

    pub fn get(&self, name: &str) -> Option<Var<F>> {
        self.0.read().expect("params lock").vars.get(name).cloned()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.read().expect("params lock").vars.contains_key(name)
    }

    /// Names in registration order.
    pub fn names(&self) -> Vec<String> {
        self.0.read().expect("params lock").order.clone()
    }

    /// `(name, var)` in registration order.
    pub fn iter(&self) -> Vec<(String, Var<F>)> {
        let s = self.0.read().expect("params lock");
        s.order.iter().map(|n| (n.clone(), s.vars[n].clone())).collect()
    }

    /// Parameters whose name starts with `prefix` followed by `.` (or equals it).
    pub fn under(&self, prefix: &str) -> Vec<(String, Var<F>)> {
        self.iter().into_iter().filter(|(n, _)| in_prefix(n, prefix)).collect()
    }

    /// Number of parameter tensors.
    pub fn len(&self) -> usize {
        self.0.read().expect("params lock").order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total number of scalar values.
    pub fn num_elements(&self) -> usize {
        self.iter().iter().map(|(_, v)| v.len()).sum()
    }

    /// Number of scalar values in trainable parameters.
    pub fn num_trainable(&self) -> usize {
        self.iter().iter().filter(|(_, v)| v.is_trainable()).map(|(_, v)| v.len()).sum()
    }

    /// Freezes (or unfreezes) every parameter under `prefix` (`""` for all); returns how many changed scope.
    pub fn set_trainable(&self, prefix: &str, trainable: bool) -> usize {
        let vars = self.under(prefix);
        vars.iter().for_each(|(_, v)| v.set_trainable(trainable));
        vars.len()
    }

    /// Copies every parameter under `from` to the same suffix under `to` (a layer copy for growth).
    /// Fails if a target name exists already.
    pub fn copy_prefix(&self, from: &str, to: &str) -> Result<Vec<String>> {
        let mut created = Vec::new();
        for (name, var) in self.under(from) {
            let new_name = format!("{to}{}", &name[from.len()..]);
            self.insert(&new_name, var.value())?;
            created.push(new_name);
        }
        Ok(created)
    }

    /// Renames every parameter under `from` to live under `to` (keeps the same `Var`s).
    pub fn rename_prefix(&self, from: &str, to: &str) -> Result<()> {
        let mut s = self.0.write().expect("params lock");
        let moves: Vec<(String, String)> = s
            .order
            .iter()
            .filter(|n| in_prefix(n, from))
            .map(|n| (n.clone(), format!("{to}{}", &n[from.len()..])))
            .collect();
        for (_, new) in &moves {
            if s.vars.contains_key(new) && !moves.iter().any(|(old, _)| old == new) {
                return Err(Error::DuplicateParam(new.clone()));
            }
        }
        let taken: Vec<(String, Var<F>)> =
            moves.iter().map(|(old, new)| (new.clone(), s.vars.remove(old).expect("listed"))).collect();
        for (new, var) in taken {
            s.vars.insert(new, var);
        }
        for n in s.order.iter_mut() {
            if let Some((_, new)) = moves.iter().find(|(old, _)| old == n) {
                *n = new.clone();
            }
        }
        Ok(())
    }

    /// Current values by name (a snapshot, e.g. `theta_pre` for grafting).
    pub fn snapshot(&self) -> BTreeMap<String, ArrayD<F>> {
        self.iter().into_iter().map(|(n, v)| (n, v.value())).collect()
    }

    /// Sets values from a snapshot; every name must exist with the same shape.
    pub fn restore(&self, values: &BTreeMap<String, ArrayD<F>>) -> Result<()> {
        for (name, value) in values {
            let var = self.get(name).ok_or_else(|| Error::UnknownParam(name.clone()))?;
            check_shape(name, &var.shape(), value.shape())?;
        }
        for (name, value) in values {
            self.get(name).expect("checked").set(value.clone());
        }
        Ok(())
    }

    /// Multiplies parameter `name` elementwise by `mask` (same shape).
    pub fn apply_mask(&self, name: &str, mask: &ArrayD<F>) -> Result<()> {
        let var = self.get(name).ok_or_else(|| Error::UnknownParam(name.to_string()))?;
        check_shape(name, &var.shape(), mask.shape())?;
        var.update(|v| *v *= mask);
        Ok(())
    }

    /// Writes all parameters to a safetensors file atomically, with optional string metadata.
    pub fn save(&self, path: &Path, metadata: Option<HashMap<String, String>>) -> Result<()> {
        let tensors: Vec<(String, StoredTensor)> =
            self.iter().into_iter().map(|(n, v)| (n, StoredTensor::from_float(&v.value()))).collect();
        write_safetensors(path, &tensors, metadata)
    }

    /// Loads values for every parameter from a safetensors file: each must be present with the same shape,
    /// and the file must hold nothing else (use [`Params::load_partial`] to relax this).
    ///
    /// Tensors stored in half precision (f16, bf16) are refused here, before anything changes: loaded into an
    /// f32/f64 model they would silently carry only half precision. [`Params::load_partial`] accepts them and
    /// lists them in [`LoadReport::half_precision`].
    pub fn load(&self, path: &Path) -> Result<()> {
        let loaded = self.load_checked(path, false)?;
        if !loaded.missing.is_empty() {
            return Err(Error::MissingParams(loaded.missing));
        }
        if !loaded.unexpected.is_empty() {
            return Err(Error::UnexpectedParams(loaded.unexpected));
        }
        Ok(())
    }

    /// Loads every parameter the file has (converting f32/f64/f16/bf16 to this element type) and reports
    /// which were missing from the file or unknown to the model. Nothing is changed if a shape mismatches.
    pub fn load_partial(&self, path: &Path) -> Result<LoadReport> {
        self.load_checked(path, true)
    }

    fn load_checked(&self, path: &Path, allow_half: bool) -> Result<LoadReport> {
        let stored = read_safetensors(path)?;
        let mut updates = Vec::new();
        let mut unexpected = Vec::new();
        let mut half_precision = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (name, t) in stored.tensors {
            match self.get(&name) {
                Some(var) => {
                    if matches!(t, StoredTensor::Half(_)) {
                        if !allow_half {
                            return Err(Error::BadValue {
                                name,
                                reason: format!(
                                    "{} stores it in half precision (f16/bf16); loading it into a {} model would \
                                     keep only half precision (Params::load_partial accepts and lists such tensors)",
                                    path.display(),
                                    F::DTYPE_NAME
                                ),
                            });
                        }
                        half_precision.push(name.clone());
                    }
                    let value = t.to_float::<F>().map_err(|reason| Error::BadValue { name: name.clone(), reason })?;
                    check_shape(&name, &var.shape(), value.shape())?;
                    seen.insert(name.clone());
                    updates.push((var, value));
                }
                None => unexpected.push(name),
            }
        }
        let missing = self.names().into_iter().filter(|n| !seen.contains(n)).collect();
        for (var, value) in updates {
            var.set(value);
        }
        unexpected.sort();
        half_precision.sort();
        Ok(LoadReport { missing, unexpected, half_precision, metadata: stored.metadata })
    }
}

/// What [`Params::load_partial`] found.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Model parameters the file did not have (left unchanged).
    pub missing: Vec<String>,
    /// File tensors the model does not have (ignored).
    pub unexpected: Vec<String>,
    /// Parameters loaded from half-precision (f16/bf16) tensors: their values carry only half precision.
    pub half_precision: Vec<String>,
    pub metadata: HashMap<String, String>,
}

pub(crate) fn in_prefix(name: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || name == prefix
        || (name.starts_with(prefix) && name.as_bytes().get(prefix.len()) == Some(&b'.'))
}

fn check_shape(name: &str, expected: &[usize], found: &[usize]) -> Result<()> {
    if expected != found {
        return Err(Error::ShapeMismatch {
            name: name.to_string(),
            expected: expected.to_vec(),
            found: found.to_vec(),
        });
    }
    Ok(())
}

/// A position in the parameter namespace: `params.root().sub("blocks").sub(3).sub("attn")`.
pub struct ParamPath<F: Float = f32> {
    params: Params<F>,
    prefix: String,
}

impl<F: Float> Clone for ParamPath<F> {
    fn clone(&self) -> Self {
        ParamPath { params: self.params.clone(), prefix: self.prefix.clone() }
    }
}

impl<F: Float> ParamPath<F> {
    /// The path one level down.
    pub fn sub(&self, name: impl std::fmt::Display) -> ParamPath<F> {
        let prefix = if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) };
        ParamPath { params: self.params.clone(), prefix }
    }

    /// The full name of `name` under this path.
    pub fn name(&self, name: &str) -> String {
        if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn params(&self) -> &Params<F> {
        &self.params
    }

    /// The parameter `name` under this path: the existing one if registered already (e.g. loaded or grown),
    /// else a new one from `init`.
    ///
    /// # Panics
    /// If an existing parameter has a different shape (a model built against the wrong parameters).
    #[track_caller]
    pub fn var(&self, name: &str, shape: &[usize], init: impl FnOnce() -> ArrayD<F>) -> Var<F> {
        let full = self.name(name);
        if let Some(v) = self.params.get(&full) {
            assert_eq!(v.shape(), shape, "parameter `{full}` exists with another shape");
            return v;
        }
        let value = init();
        assert_eq!(value.shape(), shape, "initialiser of `{full}` gave the wrong shape");
        self.params.insert(&full, value).expect("checked absent")
    }
}
