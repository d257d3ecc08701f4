//! Shape ops: reshape, permute, broadcast, narrow, concat/stack, index select, gather, one-hot.

use ndarray::{ArrayD, Axis, IxDyn, Slice, Zip};

use super::{axis_index, sum_to_shape};
use crate::{Float, Tensor};

impl<F: Float> Tensor<F> {
    /// Same data in a new shape (row-major order). One dimension may be `usize::MAX` to be inferred.
    #[track_caller]
    pub fn reshape(&self, shape: &[usize]) -> Tensor<F> {
        let mut shape = shape.to_vec();
        if let Some(pos) = shape.iter().position(|&d| d == usize::MAX) {
            let known: usize = shape.iter().filter(|&&d| d != usize::MAX).product();
            assert!(known > 0 && self.len() % known == 0, "reshape: cannot infer {:?} from {:?}", shape, self.shape());
            shape[pos] = self.len() / known;
        }
        let n: usize = shape.iter().product();
        assert_eq!(n, self.len(), "reshape: {:?} ({} elements) into {:?}", self.shape(), self.len(), shape);
        if shape == self.shape() {
            return self.clone();
        }
        let v = super::copy(self.value()).into_shape_with_order(IxDyn(&shape)).expect("size");
        let in_shape = self.shape().to_vec();
        Tensor::from_op(v, &[self], move |g, _| {
            vec![Some(super::copy(g).into_shape_with_order(IxDyn(&in_shape)).expect("size"))]
        })
    }

    /// Collapses all dimensions from `start` on into one.
    pub fn flatten_from(&self, start: usize) -> Tensor<F> {
        let mut shape: Vec<usize> = self.shape()[..start].to_vec();
        shape.push(self.shape()[start..].iter().product());
        self.reshape(&shape)
    }

    /// Inserts a dimension of size 1.
    pub fn unsqueeze(&self, axis: usize) -> Tensor<F> {
        let mut shape = self.shape().to_vec();
        shape.insert(axis, 1);
        self.reshape(&shape)
    }

    /// Removes a dimension of size 1.
    #[track_caller]
    pub fn squeeze(&self, axis: usize) -> Tensor<F> {
        assert_eq!(self.shape()[axis], 1, "squeeze: axis {axis} of {:?} is not 1", self.shape());
        let mut shape = self.shape().to_vec();
        shape.remove(axis);
        self.reshape(&shape)
    }

    /// Reorders axes (the output's axis i is the input's axis `axes[i]`); the result is contiguous.
    #[track_caller]
    pub fn permute(&self, axes: &[usize]) -> Tensor<F> {
        assert_eq!(axes.len(), self.ndim(), "permute: {axes:?} for shape {:?}", self.shape());
        let v = super::standard_copy(self.value().view().permuted_axes(IxDyn(axes)));
        let mut inverse = vec![0; axes.len()];
        for (i, &a) in axes.iter().enumerate() {
            inverse[a] = i;
        }
        Tensor::from_op(v, &[self], move |g, _| {
            vec![Some(super::standard_copy(g.view().permuted_axes(IxDyn(&inverse))))]
        })
    }

    /// Swaps two axes (negative counts from the end).
    #[track_caller]
    pub fn transpose(&self, a: isize, b: isize) -> Tensor<F> {
        let (a, b) = (axis_index("transpose", a, self.ndim()), axis_index("transpose", b, self.ndim()));
        let mut axes: Vec<usize> = (0..self.ndim()).collect();
        axes.swap(a, b);
        self.permute(&axes)
    }

    /// Transpose of a matrix (swaps the last two axes).
    pub fn t(&self) -> Tensor<F> {
        self.transpose(-2, -1)
    }

    /// Broadcasts (copies) to `shape`.
    #[track_caller]
    pub fn broadcast_to(&self, shape: &[usize]) -> Tensor<F> {
        let v = match self.value().broadcast(IxDyn(shape)) {
            Some(v) => v.to_owned(),
            None => panic!("broadcast_to: {:?} to {:?}", self.shape(), shape),
        };
        let in_shape = self.shape().to_vec();
        Tensor::from_op(v, &[self], move |g, _| vec![Some(sum_to_shape(g, &in_shape))])
    }

    /// `len` entries of `axis` starting at `start` (like `torch.narrow`).
    #[track_caller]
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Tensor<F> {
        let a = axis_index("narrow", axis, self.ndim());
        assert!(start + len <= self.shape()[a], "narrow: {start}+{len} beyond {} on axis {a}", self.shape()[a]);
        let v = self.value().slice_axis(Axis(a), Slice::from(start..start + len)).to_owned();
        let in_shape = self.shape().to_vec();
        Tensor::from_op(v, &[self], move |g, _| {
            let mut out = ArrayD::zeros(IxDyn(&in_shape));
            out.slice_axis_mut(Axis(a), Slice::from(start..start + len)).assign(g);
            vec![Some(out)]
        })
    }

    /// Splits `axis` into pieces of the given sizes.
    pub fn split(&self, axis: isize, sizes: &[usize]) -> Vec<Tensor<F>> {
        let mut start = 0;
        sizes
            .iter()
            .map(|&s| {
                let t = self.narrow(axis, start, s);
                start += s;
                t
            })
            .collect()
    }

    /// Joins tensors along an existing axis.
    #[track_caller]
    pub fn concat(tensors: &[&Tensor<F>], axis: isize) -> Tensor<F> {
        assert!(!tensors.is_empty(), "concat of no tensors");
        let a = axis_index("concat", axis, tensors[0].ndim());
        let views: Vec<_> = tensors.iter().map(|t| t.value().view()).collect();
        let v = ndarray::concatenate(Axis(a), &views).unwrap_or_else(|e| {
            panic!("concat: shapes {:?}: {e}", tensors.iter().map(|t| t.shape()).collect::<Vec<_>>())
        });
        let sizes: Vec<usize> = tensors.iter().map(|t| t.shape()[a]).collect();
        Tensor::from_op(v, tensors, move |g, needs| {
            let mut start = 0;
            sizes
                .iter()
                .zip(needs)
                .map(|(&s, &need)| {
                    let piece = need.then(|| g.slice_axis(Axis(a), Slice::from(start..start + s)).to_owned());
                    start += s;
                    piece
                })
                .collect()
        })
    }

    /// Joins same-shape tensors along a new axis.
    #[track_caller]
    pub fn stack(tensors: &[&Tensor<F>], axis: usize) -> Tensor<F> {
        let expanded: Vec<Tensor<F>> = tensors.iter().map(|t| t.unsqueeze(axis)).collect();
        let refs: Vec<&Tensor<F>> = expanded.iter().collect();
        Tensor::concat(&refs, axis as isize)
    }

    /// Picks entries `indices` along `axis` (an embedding lookup is `weight.index_select(0, ids)`).
    /// Repeated indices accumulate their gradients.
    #[track_caller]
    pub fn index_select(&self, axis: isize, indices: &[usize]) -> Tensor<F> {
        let a = axis_index("index_select", axis, self.ndim());
        let n = self.shape()[a];
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            panic!("index_select: index {bad} out of range for axis {a} of size {n}");
        }
        let v = self.value().select(Axis(a), indices);
        let in_shape = self.shape().to_vec();
        let indices = indices.to_vec();
        Tensor::from_op(v, &[self], move |g, _| {
            let mut out = ArrayD::<F>::zeros(IxDyn(&in_shape));
            for (j, &i) in indices.iter().enumerate() {
                let mut dst = out.index_axis_mut(Axis(a), i);
                dst += &g.index_axis(Axis(a), j);
            }
            vec![Some(out)]
        })
    }

    /// `out[.., j, ..] = self[.., index[.., j, ..], ..]` along `axis` (like `torch.gather`);
    /// `index` has this tensor's shape except along `axis`.
    #[track_caller]
    pub fn gather(&self, axis: isize, index: &ArrayD<usize>) -> Tensor<F> {
        let a = axis_index("gather", axis, self.ndim());
        assert_eq!(index.ndim(), self.ndim(), "gather: index rank");
        for d in 0..self.ndim() {
            assert!(
                d == a || index.shape()[d] == self.shape()[d],
                "gather: index shape {:?} vs {:?}",
                index.shape(),
                self.shape()
            );
        }
        let n = self.shape()[a];
        assert!(index.iter().all(|&i| i < n), "gather: index out of range for axis size {n}");
        let mut v = ArrayD::<F>::zeros(index.raw_dim());
        Zip::from(v.lanes_mut(Axis(a))).and(index.lanes(Axis(a))).and(self.value().lanes(Axis(a))).for_each(
            |mut o, idx, src| {
                for (o, &i) in o.iter_mut().zip(idx.iter()) {
                    *o = src[i];
                }
            },
        );
        let in_shape = self.shape().to_vec();
        let index = index.clone();
        Tensor::from_op(v, &[self], move |g, _| {
            let mut out = ArrayD::<F>::zeros(IxDyn(&in_shape));
            Zip::from(out.lanes_mut(Axis(a))).and(index.lanes(Axis(a))).and(g.lanes(Axis(a))).for_each(
                |mut o, idx, g| {
                    for (&i, &gv) in idx.iter().zip(g.iter()) {
                        o[i] += gv;
                    }
                },
            );
            vec![Some(out)]
        })
    }

    /// One-hot encoding: shape `[labels.len(), classes]` (a constant).
    #[track_caller]
    pub fn one_hot(labels: &[usize], classes: usize) -> Tensor<F> {
        let mut v = ArrayD::<F>::zeros(IxDyn(&[labels.len(), classes]));
        for (r, &l) in labels.iter().enumerate() {
            assert!(l < classes, "one_hot: label {l} >= {classes} classes");
            v[[r, l]] = F::one();
        }
        Tensor::new(v)
    }
}
