//! The `Tensor` handle and the reverse-mode autodiff engine.
//!
//! A tensor is an `Arc` to an immutable value plus, when it is tracked, the backward closure of the op that
//! made it and that op's inputs. Ops record a node only when gradients are enabled and some input is tracked,
//! so inference builds no graph. `backward()` sorts the tracked graph once, runs the closures in reverse and
//! sums into a gradient map keyed by tensor id. Dropping the output frees the graph.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use ndarray::{ArrayD, IxDyn};

use crate::Float;

/// Identifies a tensor (and a parameter: a [`crate::Var`] keeps its id across updates).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    pub(crate) fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TensorId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

static LIVE_NODES: AtomicUsize = AtomicUsize::new(0);

/// Number of graph nodes (tracked, non-leaf tensors) alive in the process: a leak detector for tests.
pub fn live_graph_nodes() -> usize {
    LIVE_NODES.load(Ordering::Relaxed)
}

/// Given the gradient of the output and which inputs need one, the gradients of the inputs.
pub(crate) type BackwardFn<F> = Box<dyn Fn(&ArrayD<F>, &[bool]) -> Vec<Option<ArrayD<F>>> + Send + Sync>;

pub(crate) struct Node<F: Float> {
    pub(crate) inputs: Vec<Tensor<F>>,
    pub(crate) backward: BackwardFn<F>,
}

impl<F: Float> Drop for Node<F> {
    fn drop(&mut self) {
        LIVE_NODES.fetch_sub(1, Ordering::Relaxed);
        // Unlink long chains iteratively so that dropping a deep graph cannot overflow the stack. Closures
        // hold handles to their inputs too, so each is released before its inputs are examined.
        let mut stack: Vec<Tensor<F>> = std::mem::take(&mut self.inputs);
        drop(std::mem::replace(&mut self.backward, Box::new(|_, _| Vec::new())));
        while let Some(t) = stack.pop() {
            if let Ok(mut inner) = Arc::try_unwrap(t.0) {
                if let Tracking::Op(node) = &mut inner.tracking {
                    stack.append(&mut node.inputs);
                    drop(std::mem::replace(&mut node.backward, Box::new(|_, _| Vec::new())));
                }
            }
        }
    }
}

pub(crate) enum Tracking<F: Float> {
    /// Constant: no gradient flows to or through it.
    None,
    /// A leaf that wants its gradient (a parameter or an input under study).
    Leaf,
    /// The output of a recorded op.
    Op(Node<F>),
}

pub(crate) struct Inner<F: Float> {
    pub(crate) id: TensorId,
    pub(crate) value: ArrayD<F>,
    pub(crate) tracking: Tracking<F>,
}

/// An n-dimensional array of `f32` (the default) or `f64` with reverse-mode autodiff.
///
/// Cloning is cheap (an `Arc`). Values are immutable; parameters that optimizers update are [`crate::Var`]s.
pub struct Tensor<F: Float = f32>(pub(crate) Arc<Inner<F>>);

impl<F: Float> Clone for Tensor<F> {
    fn clone(&self) -> Self {
        Tensor(Arc::clone(&self.0))
    }
}

impl<F: Float> fmt::Debug for Tensor<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor{:?}(tracked={}) {}", self.shape(), self.is_tracked(), self.value())
    }
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Runs `f` without recording any op (like `torch.no_grad()`), restoring the previous mode after.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GRAD_ENABLED.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(GRAD_ENABLED.with(|g| g.replace(false)));
    f()
}

/// Whether ops on this thread currently record the graph.
pub fn grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

impl<F: Float> Tensor<F> {
    /// A constant tensor (no gradient) owning `value`.
    pub fn new(value: ArrayD<F>) -> Self {
        Tensor(Arc::new(Inner { id: TensorId::fresh(), value, tracking: Tracking::None }))
    }

    /// A leaf whose gradient `backward()` will report (an input you want the gradient of).
    pub fn leaf(value: ArrayD<F>) -> Self {
        Tensor(Arc::new(Inner { id: TensorId::fresh(), value, tracking: Tracking::Leaf }))
    }

    pub(crate) fn leaf_with_id(id: TensorId, value: ArrayD<F>) -> Self {
        Tensor(Arc::new(Inner { id, value, tracking: Tracking::Leaf }))
    }

    /// Builds a tensor from row-major data.
    ///
    /// # Panics
    /// If `data.len()` differs from the product of `shape`.
    #[track_caller]
    pub fn from_vec(data: Vec<F>, shape: &[usize]) -> Self {
        let n: usize = shape.iter().product();
        assert_eq!(data.len(), n, "Tensor::from_vec: {} values for shape {:?}", data.len(), shape);
        Self::new(ArrayD::from_shape_vec(IxDyn(shape), data).expect("checked length"))
    }

    /// A 0-d tensor.
    pub fn scalar(x: F) -> Self {
        Self::new(ArrayD::from_elem(IxDyn(&[]), x))
    }

    pub fn zeros(shape: &[usize]) -> Self {
        Self::new(ArrayD::zeros(IxDyn(shape)))
    }

    pub fn ones(shape: &[usize]) -> Self {
        Self::new(ArrayD::ones(IxDyn(shape)))
    }

    pub fn full(shape: &[usize], x: F) -> Self {
        Self::new(ArrayD::from_elem(IxDyn(shape), x))
    }

    /// Records an op. `backward` maps the output gradient to the inputs' gradients; it is stored only if
    /// gradients are enabled and some input is tracked.
    pub(crate) fn from_op(
        value: ArrayD<F>,
        inputs: &[&Tensor<F>],
        backward: impl Fn(&ArrayD<F>, &[bool]) -> Vec<Option<ArrayD<F>>> + Send + Sync + 'static,
    ) -> Self {
        let track = grad_enabled() && inputs.iter().any(|t| t.is_tracked());
        let tracking = if track {
            LIVE_NODES.fetch_add(1, Ordering::Relaxed);
            Tracking::Op(Node { inputs: inputs.iter().map(|t| (*t).clone()).collect(), backward: Box::new(backward) })
        } else {
            Tracking::None
        };
        Tensor(Arc::new(Inner { id: TensorId::fresh(), value, tracking }))
    }

    /// Defines an op outside this crate (like `torch.autograd.Function`): `value` is the forward result and
    /// `backward(grad_out, needs)` returns one gradient per input (same shape as that input, or `None`;
    /// `needs[i]` says whether input `i` wants one). Nothing is recorded when no input is tracked or under
    /// [`no_grad`]. Check a custom op with [`crate::gradcheck::check`].
    pub fn custom_op(
        value: ArrayD<F>,
        inputs: &[&Tensor<F>],
        backward: impl Fn(&ArrayD<F>, &[bool]) -> Vec<Option<ArrayD<F>>> + Send + Sync + 'static,
    ) -> Self {
        Self::from_op(value, inputs, backward)
    }

    pub fn id(&self) -> TensorId {
        self.0.id
    }

    pub fn value(&self) -> &ArrayD<F> {
        &self.0.value
    }

    pub fn shape(&self) -> &[usize] {
        self.0.value.shape()
    }

    pub fn ndim(&self) -> usize {
        self.0.value.ndim()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.0.value.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.value.is_empty()
    }

    /// Whether gradients flow through this tensor.
    pub fn is_tracked(&self) -> bool {
        !matches!(self.0.tracking, Tracking::None)
    }

    /// The same value, cut from the graph.
    pub fn detach(&self) -> Self {
        if self.is_tracked() { Self::new(self.0.value.clone()) } else { self.clone() }
    }

    /// The single value of a one-element tensor.
    ///
    /// # Panics
    /// If the tensor has more than one element.
    #[track_caller]
    pub fn item(&self) -> F {
        assert_eq!(self.len(), 1, "item() on a tensor of shape {:?}", self.shape());
        *self.0.value.iter().next().expect("one element")
    }

    /// Row-major copy of the values.
    pub fn to_vec(&self) -> Vec<F> {
        self.0.value.iter().copied().collect()
    }

    /// Gradients of this (scalar) tensor with respect to every tracked leaf it depends on.
    ///
    /// # Panics
    /// If the tensor has more than one element (use [`Tensor::backward_with`] to seed a non-scalar output).
    #[track_caller]
    pub fn backward(&self) -> Grads<F> {
        assert_eq!(self.len(), 1, "backward() needs a scalar, got shape {:?}", self.shape());
        self.backward_with(ArrayD::ones(self.0.value.raw_dim()))
    }

    /// Backpropagates `seed` (the gradient of some scalar with respect to this tensor).
    pub fn backward_with(&self, seed: ArrayD<F>) -> Grads<F> {
        assert_eq!(seed.shape(), self.shape(), "backward seed shape");
        let mut grads: HashMap<TensorId, ArrayD<F>> = HashMap::new();
        if !self.is_tracked() {
            return Grads { map: grads };
        }
        let order = topological_order(self);
        grads.insert(self.id(), seed);
        let mut leaf_grads = HashMap::new();
        for t in order.iter().rev() {
            let Some(g) = grads.remove(&t.id()) else { continue };
            match &t.0.tracking {
                Tracking::Leaf => {
                    leaf_grads.insert(t.id(), g);
                }
                Tracking::Op(node) => {
                    let needs: Vec<bool> = node.inputs.iter().map(|i| i.is_tracked()).collect();
                    let input_grads = (node.backward)(&g, &needs);
                    debug_assert_eq!(input_grads.len(), node.inputs.len());
                    for ((input, ig), need) in node.inputs.iter().zip(input_grads).zip(needs) {
                        let Some(ig) = ig else { continue };
                        if !need {
                            continue;
                        }
                        debug_assert_eq!(ig.shape(), input.shape(), "gradient shape of an op input");
                        match grads.get_mut(&input.id()) {
                            Some(acc) => *acc += &ig,
                            None => {
                                grads.insert(input.id(), ig);
                            }
                        }
                    }
                }
                Tracking::None => {}
            }
        }
        Grads { map: leaf_grads }
    }
}

/// Tracked tensors reachable from `root`, inputs before outputs.
fn topological_order<F: Float>(root: &Tensor<F>) -> Vec<Tensor<F>> {
    let mut order = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // Iterative DFS: (tensor, children already pushed)
    let mut stack = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !seen.insert(t.id()) {
            continue;
        }
        stack.push((t.clone(), true));
        if let Tracking::Op(node) = &t.0.tracking {
            for input in &node.inputs {
                if input.is_tracked() && !seen.contains(&input.id()) {
                    stack.push((input.clone(), false));
                }
            }
        }
    }
    order
}

/// Gradients of a scalar with respect to leaves, keyed by tensor (or parameter) id.
#[derive(Clone, Default)]
pub struct Grads<F: Float = f32> {
    pub(crate) map: HashMap<TensorId, ArrayD<F>>,
}

impl<F: Float> fmt::Debug for Grads<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Grads({} tensors)", self.map.len())
    }
}

impl<F: Float> Grads<F> {
    /// Gradient for a leaf tensor, if it received any.
    pub fn get(&self, t: &Tensor<F>) -> Option<&ArrayD<F>> {
        self.map.get(&t.id())
    }

    pub fn get_id(&self, id: TensorId) -> Option<&ArrayD<F>> {
        self.map.get(&id)
    }

    pub fn get_id_mut(&mut self, id: TensorId) -> Option<&mut ArrayD<F>> {
        self.map.get_mut(&id)
    }

    pub fn insert(&mut self, id: TensorId, g: ArrayD<F>) {
        self.map.insert(id, g);
    }

    pub fn remove(&mut self, id: TensorId) -> Option<ArrayD<F>> {
        self.map.remove(&id)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&TensorId, &ArrayD<F>)> {
        self.map.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&TensorId, &mut ArrayD<F>)> {
        self.map.iter_mut()
    }

    /// Adds `other` into `self` (gradient accumulation over micro-batches).
    pub fn accumulate(&mut self, other: Grads<F>) {
        for (id, g) in other.map {
            match self.map.get_mut(&id) {
                Some(acc) => *acc += &g,
                None => {
                    self.map.insert(id, g);
                }
            }
        }
    }

    /// Multiplies every gradient by `s`.
    pub fn scale(&mut self, s: F) {
        for g in self.map.values_mut() {
            g.mapv_inplace(|x| x * s);
        }
    }

    /// Euclidean norm of all gradients concatenated (accumulated in f64).
    pub fn global_norm(&self) -> f64 {
        let mut ids: Vec<_> = self.map.keys().copied().collect();
        ids.sort();
        ids.iter()
            .map(|id| self.map[id].iter().map(|&x| x.to_f64_lossy() * x.to_f64_lossy()).sum::<f64>())
            .sum::<f64>()
            .sqrt()
    }

    /// Rescales all gradients so that their global norm is at most `max_norm`; returns the norm before.
    pub fn clip_global_norm(&mut self, max_norm: f64) -> f64 {
        let norm = self.global_norm();
        if norm > max_norm && norm.is_finite() {
            self.scale(F::of(max_norm / (norm + 1e-12)));
        }
        norm
    }

    /// Whether every gradient value is finite.
    pub fn all_finite(&self) -> bool {
        self.map.values().all(|g| g.iter().all(|x| x.is_finite()))
    }
}
