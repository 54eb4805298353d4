//! The keys and values a forward leaves for the next one, per layer `[b, H_kv, T, d_h]`.
//!
//! Why a layer may hold views into a larger buffer: a decoding step appends one position, and
//! concatenating the cache with it copied every cached key and value into fresh memory at every
//! step of every layer (a step cost about 13 µs more per cached position on SmolLM2,
//! `benches/results/decode-context-zen3`). A layer extended in place ([`Append::InPlace`]) keeps
//! its keys and values in a buffer with room for more positions, and the next positions are
//! written behind the ones already there.
//!
//! Caches stay values: a cache never sees its own positions change. The buffer counts the
//! positions written into it, and only a cache as long as that count may write behind them (the
//! first to claim them, atomically). Any other extension — a second continuation of the same
//! prefix, a truncated cache, a one-row prefix serving a batch — copies into a new buffer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use candle_core::Tensor;

use crate::{Error, Result};

/// How a forward extends its past keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Append {
    /// Into the past's buffer when it has room and this forward may claim it, else into a new
    /// buffer with room for more (CPU decoding).
    InPlace,
    /// A plain concatenation, exactly sized, tracked by autograd (differentiable forwards, other
    /// devices, forwards whose cache is not kept).
    Concatenate,
}

/// One layer's keys and values, `[b, H_kv, T, d_h]` each.
#[derive(Clone, Debug)]
pub struct LayerKv {
    keys: Tensor,
    values: Tensor,
    /// The buffer `keys` and `values` are the first `T` positions of, when they are views.
    room: Option<Room>,
}

/// Key and value buffers `[b, H_kv, capacity, d_h]` (contiguous) and how many positions of them
/// are written.
#[derive(Clone, Debug)]
struct Room {
    keys: Tensor,
    values: Tensor,
    written: Arc<AtomicUsize>,
}

impl Room {
    fn capacity(&self) -> usize {
        self.keys.dims()[2]
    }

    /// The first `len` positions, as a layer's keys and values.
    fn view(&self, len: usize) -> Result<LayerKv> {
        Ok(LayerKv {
            keys: self.keys.narrow(2, 0, len)?,
            values: self.values.narrow(2, 0, len)?,
            room: Some(self.clone()),
        })
    }
}

/// Positions a new buffer holds beyond the `len` it is made for: an eighth more, at least 32, so
/// that a step's copy happens once per many steps.
fn capacity_for(len: usize) -> usize {
    len + (len / 8).max(32)
}

impl LayerKv {
    pub fn new(keys: Tensor, values: Tensor) -> Self {
        LayerKv {
            keys,
            values,
            room: None,
        }
    }

    pub fn keys(&self) -> &Tensor {
        &self.keys
    }

    pub fn values(&self) -> &Tensor {
        &self.values
    }

    /// Cached positions.
    pub fn len(&self) -> usize {
        self.keys.dims()[2]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `len` positions (views; extending them later copies, since the buffer behind
    /// may hold more).
    pub fn truncate(&self, len: usize) -> Result<LayerKv> {
        Ok(LayerKv {
            keys: self.keys.narrow(2, 0, len)?,
            values: self.values.narrow(2, 0, len)?,
            room: self.room.clone(),
        })
    }

    /// These keys and values followed by `keys` and `values` (`[b, H_kv, t, d_h]`); a one-row
    /// past serves a batch of `b` rows.
    pub fn extend(&self, keys: &Tensor, values: &Tensor, how: Append) -> Result<LayerKv> {
        let rows = keys.dims()[0];
        let past_keys = rows_for(&self.keys, rows)?;
        let past_values = rows_for(&self.values, rows)?;
        if how == Append::Concatenate {
            return Ok(LayerKv::new(
                Tensor::cat(&[&past_keys, keys], 2)?,
                Tensor::cat(&[&past_values, values], 2)?,
            ));
        }
        if let Some(view) = self.extend_in_place(keys, values)? {
            return Ok(view);
        }
        let len = self.len() + keys.dims()[2];
        let spare = capacity_for(len) - len;
        let buffer = |past: &Tensor, new: &Tensor| -> Result<Tensor> {
            let mut dims = new.dims().to_vec();
            dims[2] = spare;
            let padding = Tensor::zeros(dims, new.dtype(), new.device())?;
            Ok(Tensor::cat(&[past, new, &padding], 2)?)
        };
        let room = Room {
            keys: buffer(&past_keys, keys)?,
            values: buffer(&past_values, values)?,
            written: Arc::new(AtomicUsize::new(len)),
        };
        room.view(len)
    }

    /// Writes `keys` and `values` behind these positions in their buffer, when there is one with
    /// room, as many rows, and nothing written behind them yet (claimed atomically: of two
    /// continuations of one cache only the first writes in place).
    fn extend_in_place(&self, keys: &Tensor, values: &Tensor) -> Result<Option<LayerKv>> {
        let Some(room) = &self.room else {
            return Ok(None);
        };
        let (len, added) = (self.len(), keys.dims()[2]);
        let fits = room.keys.dims()[0] == keys.dims()[0] && len + added <= room.capacity();
        let claimed = fits
            && room
                .written
                .compare_exchange(len, len + added, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        if !claimed {
            return Ok(None);
        }
        room.keys.slice_set(&keys.contiguous()?, 2, len)?;
        room.values.slice_set(&values.contiguous()?, 2, len)?;
        room.view(len + added).map(Some)
    }
}

/// `t` (`[1 or b, ..]`) with `b` rows: a one-row cache broadcast and copied.
fn rows_for(t: &Tensor, b: usize) -> Result<Tensor> {
    let dims = t.dims();
    if dims[0] == b {
        return Ok(t.clone());
    }
    if dims[0] != 1 {
        return Err(Error::Hook(format!(
            "KV cache batch {} cannot serve a batch of {b}",
            dims[0]
        )));
    }
    let mut target = dims.to_vec();
    target[0] = b;
    Ok(t.broadcast_as(target)?.contiguous()?)
}

/// Per-layer keys and values of a processed prefix.
#[derive(Clone, Debug)]
pub struct KvCache {
    pub layers: Vec<LayerKv>,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, LayerKv::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cache of a one-row run copied into `rows` rows (a batch decoding from one prefix).
    pub fn repeat_rows(&self, rows: usize) -> Result<KvCache> {
        let copy = |t: &Tensor| -> Result<Tensor> {
            let mut dims = t.dims().to_vec();
            if dims.first() != Some(&1) {
                return Err(Error::Hook(format!(
                    "only a one-row cache can be repeated, not one of {} rows",
                    dims.first().copied().unwrap_or(0)
                )));
            }
            dims[0] = rows;
            Ok(t.broadcast_as(dims)?.contiguous()?)
        };
        let layers = self
            .layers
            .iter()
            .map(|kv| Ok(LayerKv::new(copy(&kv.keys)?, copy(&kv.values)?)))
            .collect::<Result<_>>()?;
        Ok(KvCache { layers })
    }

    /// The first `len` positions (for reusing a shared prefix).
    pub fn truncate(&self, len: usize) -> Result<KvCache> {
        let layers = self
            .layers
            .iter()
            .map(|kv| kv.truncate(len))
            .collect::<Result<_>>()?;
        Ok(KvCache { layers })
    }

    /// This cache with its layers from `first` on replaced by `upper`'s: either the cache of a
    /// forward that started at `resid_pre` of layer `first` (holding only the layers it ran) or a
    /// cache as deep as this one. Both must cover the same positions. A forward that starts above
    /// layer 0 changes nothing below it, so a clean cache supplies those layers (live ablation
    /// re-runs decode from such a merged cache).
    pub fn with_layers_from(&self, first: usize, upper: &KvCache) -> Result<KvCache> {
        let depth = self.layers.len();
        let replaced = match upper.layers.len() {
            n if first <= depth && n == depth - first => &upper.layers[..],
            n if first <= depth && n == depth => &upper.layers[first..],
            n => {
                return Err(Error::Hook(format!(
                    "a cache of {n} layers cannot supply layers {first}.. of a {depth}-layer cache"
                )))
            }
        };
        let upper_len = replaced.first().map_or(0, LayerKv::len);
        if first > 0 && !replaced.is_empty() && upper_len != self.len() {
            return Err(Error::Hook(format!(
                "caches of {} and {upper_len} positions cannot be merged",
                self.len()
            )));
        }
        let layers = self.layers[..first]
            .iter()
            .chain(replaced)
            .cloned()
            .collect();
        Ok(KvCache { layers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// `[rows, 2, len, 4]` keys (values their negation) numbered from `first`.
    fn positions(rows: usize, len: usize, first: f32) -> (Tensor, Tensor) {
        let n = rows * 2 * len * 4;
        let k = Tensor::arange(first, first + n as f32, &Device::Cpu)
            .unwrap()
            .reshape((rows, 2, len, 4))
            .unwrap();
        let v = k.neg().unwrap();
        (k, v)
    }

    fn concatenated(a: &LayerKv, k: &Tensor, v: &Tensor) -> (Vec<f32>, Vec<f32>) {
        let flat = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = k.dims()[0];
        let pk = rows_for(a.keys(), b).unwrap();
        let pv = rows_for(a.values(), b).unwrap();
        (
            flat(Tensor::cat(&[&pk, k], 2).unwrap()),
            flat(Tensor::cat(&[&pv, v], 2).unwrap()),
        )
    }

    /// Which buffer a layer's positions live in (none for plain tensors).
    fn buffer(kv: &LayerKv) -> Option<*const AtomicUsize> {
        kv.room.as_ref().map(|r| Arc::as_ptr(&r.written))
    }

    fn contents(kv: &LayerKv) -> (Vec<f32>, Vec<f32>) {
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (flat(kv.keys()), flat(kv.values()))
    }

    #[test]
    fn steps_write_in_place_and_equal_a_concatenation() {
        let (k, v) = positions(1, 5, 0.0);
        let mut kv = LayerKv::new(k, v);
        let mut first_buffer = None;
        for step in 0..40 {
            let (nk, nv) = positions(1, 1, 1000.0 + step as f32 * 8.0);
            let expected = concatenated(&kv, &nk, &nv);
            kv = kv.extend(&nk, &nv, Append::InPlace).unwrap();
            assert_eq!(contents(&kv), expected, "step {step}");
            assert_eq!(kv.len(), 6 + step);
            assert!(buffer(&kv).is_some());
            // The first step copies into a buffer of 6 + 32 positions; the next 32 write into
            // it; step 33 outgrows it.
            match step {
                0 | 33 => first_buffer = buffer(&kv),
                _ => assert_eq!(buffer(&kv), first_buffer, "step {step}"),
            }
        }
    }

    #[test]
    fn a_second_continuation_copies_and_leaves_the_first_intact() {
        let (k, v) = positions(1, 3, 0.0);
        let a = positions(1, 1, 100.0);
        let base = LayerKv::new(k, v)
            .extend(&a.0, &a.1, Append::InPlace)
            .unwrap();
        let (c, d) = (positions(1, 1, 300.0), positions(1, 1, 400.0));
        let first = base.extend(&c.0, &c.1, Append::InPlace).unwrap();
        let first_contents = contents(&first);
        let second = base.extend(&d.0, &d.1, Append::InPlace).unwrap();
        assert_eq!(buffer(&first), buffer(&base));
        assert_ne!(buffer(&second), buffer(&base));
        assert_eq!(contents(&second), concatenated(&base, &d.0, &d.1));
        assert_eq!(contents(&first), first_contents);
        // A truncated cache copies too, and the longer one keeps its positions.
        let (e, f) = positions(1, 1, 500.0);
        let short = first.truncate(2).unwrap();
        let grown = short.extend(&e, &f, Append::InPlace).unwrap();
        assert_eq!(contents(&grown), concatenated(&short, &e, &f));
        assert_eq!(contents(&first), first_contents);
    }

    #[test]
    fn a_one_row_prefix_serves_a_batch() {
        let (k, v) = positions(1, 4, 0.0);
        let one = LayerKv::new(k, v)
            .extend(
                &positions(1, 1, 50.0).0,
                &positions(1, 1, 50.0).1,
                Append::InPlace,
            )
            .unwrap();
        let (nk, nv) = positions(3, 2, 900.0);
        let batch = one.extend(&nk, &nv, Append::InPlace).unwrap();
        assert_eq!(batch.keys().dims(), &[3, 2, 7, 4]);
        assert_eq!(contents(&batch), concatenated(&one, &nk, &nv));
        let plain = one.extend(&nk, &nv, Append::Concatenate).unwrap();
        assert_eq!(contents(&plain), contents(&batch));
        assert!(plain.room.is_none());
        assert!(KvCache { layers: vec![one] }.repeat_rows(2).is_ok());
        let two = LayerKv::new(
            Tensor::zeros((2, 2, 1, 4), DType::F32, &Device::Cpu).unwrap(),
            Tensor::zeros((2, 2, 1, 4), DType::F32, &Device::Cpu).unwrap(),
        );
        assert!(two.extend(&nk, &nv, Append::InPlace).is_err());
    }
}
