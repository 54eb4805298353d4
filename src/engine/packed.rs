//! A GGUF weight matrix kept in its blocks' integers and scales next to its f32 tensor, for
//! products with a few rows (decoding).
//!
//! Why: a decoding step reads every weight once, and on the CPU that read is the step's cost. As
//! f32, SmolLM2-135M's products read 540 MB per step (about 21 ms at the 24–27 GB/s two Zen 3 cores
//! stream, `benches/tools/read_bandwidth.c`, `benches/results/read-bandwidth-zen3.txt`); as one
//! signed byte per weight plus a scale and offset per 32, about 170 MB. Each weight is rebuilt in
//! registers exactly as candle's dequantization writes it (`q as f32 * d`, then `+ m` for the
//! offset formats, two roundings, no fused multiply-add), so products on this form equal those on
//! the dequantized tensor bit for bit ([`super::skinny::matmul_t_packed`]).
//!
//! The block types whose weights are `q · d (+ m)` with one scale (and offset) per group of 32 or
//! 16 values are kept: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K (its super-blocks of 256 give each 32
//! its own `d · sc` and `−dmin · m`) and Q6_K (each 16 its own `d · sc`); their integers fit a
//! signed byte. Other K-quants and f16/f32 tensors stay f32 only.

use candle_core::quantized::{GgmlDType, QTensor};
use half::f16;
use rayon::prelude::*;

/// Rows are whole blocks of this many values in every format kept here (and column selections
/// take whole blocks).
pub const BLOCK: usize = 32;

/// `[n, k]` weight rows as integers `q [n·k]` and a scale `d` per group of `group` values (and an
/// offset `m` per group for Q4_1, Q5_1, Q4_K and stacks that hold one of them): weight `(r, c)` is
/// `q[r·k + c] as f32 * d[g]` (`+ m[g]`), `g = (r·k + c) / group`.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedRows {
    rows: usize,
    cols: usize,
    group: usize,
    q: Vec<i8>,
    scale: Vec<f32>,
    offset: Option<Vec<f32>>,
}

impl PackedRows {
    /// The integer form of `t` (a matrix `[n, k]`), or `None` for a block type not kept here.
    pub fn from_qtensor(t: &QTensor) -> candle_core::Result<Option<PackedRows>> {
        let dims = t.shape().dims();
        let [rows, cols] = dims else {
            return Ok(None);
        };
        let (rows, cols) = (*rows, *cols);
        if !cols.is_multiple_of(BLOCK) {
            return Ok(None);
        }
        let Some(format) = Format::of(t.dtype()) else {
            return Ok(None);
        };
        let bytes = t.data()?;
        let (group, per) = (format.group(), format.values_per_block());
        let expected = rows * cols / per * format.block_bytes();
        if !(rows * cols).is_multiple_of(per) || bytes.len() != expected {
            candle_core::bail!(
                "{:?} tensor {dims:?}: {} bytes of blocks, expected {expected}",
                t.dtype(),
                bytes.len(),
            );
        }
        // Blocks in parallel (a model's worth is ~10⁸ values): integers in place, scales collected
        // (one (d, m) per group, as many per block as the format's block holds).
        let mut q = vec![0i8; rows * cols];
        let scales: Vec<(f32, f32)> = q
            .par_chunks_mut(per)
            .zip(bytes.par_chunks_exact(format.block_bytes()))
            .flat_map_iter(|(q, block)| format.unpack(block, q))
            .collect();
        debug_assert_eq!(scales.len(), rows * cols / group);
        let packed = PackedRows {
            rows,
            cols,
            group,
            q,
            scale: scales.iter().map(|s| s.0).collect(),
            offset: format
                .has_offset()
                .then(|| scales.iter().map(|s| s.1).collect()),
        };
        Ok(Some(packed))
    }

    /// Several matrices with the same columns stacked by rows (the fused Q/K/V and gate/up
    /// weights); `None` unless every part is kept. Parts without offsets get zero ones when others
    /// have them: `q·d + 0` differs from `q·d` only in the sign of a zero weight, which no sum of
    /// products starting from +0 can tell. Parts with a scale per 32 beside one per 16 (Q6_K) get
    /// each scale twice, which changes no weight.
    pub fn stack(parts: Vec<PackedRows>) -> Option<PackedRows> {
        let first = parts.first()?;
        let cols = first.cols;
        if parts.iter().any(|p| p.cols != cols) {
            return None;
        }
        let offset = parts.iter().any(|p| p.offset.is_some());
        let group = parts.iter().map(|p| p.group).min()?;
        let mut out = PackedRows {
            rows: 0,
            cols,
            group,
            q: Vec::new(),
            scale: Vec::new(),
            offset: offset.then(Vec::new),
        };
        for p in parts {
            let p = p.regrouped(group);
            out.rows += p.rows;
            if let Some(o) = &mut out.offset {
                match p.offset {
                    Some(po) => o.extend(po),
                    None => o.extend(std::iter::repeat_n(0.0, p.scale.len())),
                }
            }
            out.q.extend(p.q);
            out.scale.extend(p.scale);
        }
        Some(out)
    }

    /// The same weights with a scale (and offset) per `group` values, `group` dividing this
    /// form's: each entry repeated.
    fn regrouped(self, group: usize) -> PackedRows {
        if group == self.group {
            return self;
        }
        let times = self.group / group;
        let spread = |v: Vec<f32>| -> Vec<f32> {
            v.into_iter()
                .flat_map(|x| std::iter::repeat_n(x, times))
                .collect()
        };
        PackedRows {
            group,
            scale: spread(self.scale),
            offset: self.offset.map(spread),
            ..self
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per scale: 32, or 16 for Q6_K and stacks that hold it.
    pub fn group(&self) -> usize {
        self.group
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `r`: its integers, its groups' scales and offsets.
    pub fn row(&self, r: usize) -> (&[i8], &[f32], Option<&[f32]>) {
        let nb = self.cols / self.group;
        (
            &self.q[r * self.cols..(r + 1) * self.cols],
            &self.scale[r * nb..(r + 1) * nb],
            self.offset.as_ref().map(|o| &o[r * nb..(r + 1) * nb]),
        )
    }

    /// Whether the weights carry an offset per block (Q4_1, Q5_1).
    pub fn has_offset(&self) -> bool {
        self.offset.is_some()
    }

    /// Row `r` as f32, as candle's dequantization writes it.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let (q, d, m) = self.row(r);
        for (c, (o, &q)) in out.iter_mut().zip(q).enumerate() {
            let w = q as f32 * d[c / self.group];
            *o = match m {
                Some(m) => w + m[c / self.group],
                None => w,
            };
        }
    }

    /// The rows `keep`, in that order (a pruned model's kept Q/K/V rows).
    pub fn select_rows(&self, keep: &[usize]) -> Option<PackedRows> {
        if keep.iter().any(|&r| r >= self.rows) {
            return None;
        }
        let nb = self.cols / self.group;
        let pick = |v: &[f32]| -> Vec<f32> {
            keep.iter()
                .flat_map(|&r| v[r * nb..(r + 1) * nb].iter().copied())
                .collect()
        };
        Some(PackedRows {
            rows: keep.len(),
            cols: self.cols,
            group: self.group,
            q: keep
                .iter()
                .flat_map(|&r| self.row(r).0.iter().copied())
                .collect(),
            scale: pick(&self.scale),
            offset: self.offset.as_deref().map(pick),
        })
    }

    /// The columns `keep`, in that order (a pruned model's kept `o_proj` inputs); `None` unless
    /// they come in whole, aligned blocks (a head's columns when `d_h` is a multiple of 32).
    pub fn select_columns(&self, keep: &[usize]) -> Option<PackedRows> {
        if !keep.len().is_multiple_of(BLOCK) || keep.iter().any(|&c| c >= self.cols) {
            return None;
        }
        let blocks: Vec<usize> = keep
            .chunks_exact(BLOCK)
            .map(|run| {
                let b = run[0] / BLOCK;
                let whole = run[0].is_multiple_of(BLOCK)
                    && run.iter().enumerate().all(|(i, &c)| c == run[0] + i);
                whole.then_some(b)
            })
            .collect::<Option<_>>()?;
        let cols = blocks.len() * BLOCK;
        let per = BLOCK / self.group;
        let mut out = PackedRows {
            rows: self.rows,
            cols,
            group: self.group,
            q: Vec::with_capacity(self.rows * cols),
            scale: Vec::with_capacity(self.rows * blocks.len() * per),
            offset: self.offset.as_ref().map(|_| Vec::new()),
        };
        for r in 0..self.rows {
            let (q, d, m) = self.row(r);
            for &b in &blocks {
                out.q.extend_from_slice(&q[b * BLOCK..(b + 1) * BLOCK]);
                let groups = b * per..(b + 1) * per;
                out.scale.extend_from_slice(&d[groups.clone()]);
                if let (Some(o), Some(m)) = (&mut out.offset, m) {
                    o.extend_from_slice(&m[groups]);
                }
            }
        }
        Some(out)
    }
}

/// The block layouts kept (ggml's `block_q4_0` … `block_q8_0`, little-endian).
#[derive(Clone, Copy)]
enum Format {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q6K,
}

impl Format {
    fn of(dtype: GgmlDType) -> Option<Format> {
        Some(match dtype {
            GgmlDType::Q4_0 => Format::Q4_0,
            GgmlDType::Q4_1 => Format::Q4_1,
            GgmlDType::Q5_0 => Format::Q5_0,
            GgmlDType::Q5_1 => Format::Q5_1,
            GgmlDType::Q8_0 => Format::Q8_0,
            GgmlDType::Q4K => Format::Q4K,
            GgmlDType::Q6K => Format::Q6K,
            _ => return None,
        })
    }

    fn block_bytes(self) -> usize {
        match self {
            Format::Q4_0 => 2 + 16,
            Format::Q4_1 => 4 + 16,
            Format::Q5_0 => 2 + 4 + 16,
            Format::Q5_1 => 4 + 4 + 16,
            Format::Q8_0 => 2 + 32,
            Format::Q4K => 2 + 2 + 12 + 128,
            Format::Q6K => 128 + 64 + 16 + 2,
        }
    }

    fn values_per_block(self) -> usize {
        match self {
            Format::Q4K | Format::Q6K => 256,
            _ => BLOCK,
        }
    }

    /// Values per scale.
    fn group(self) -> usize {
        match self {
            Format::Q6K => 16,
            _ => 32,
        }
    }

    fn has_offset(self) -> bool {
        matches!(self, Format::Q4_1 | Format::Q5_1 | Format::Q4K)
    }

    /// One block's integers into `q` (its [`Format::values_per_block`] values), and the scale and
    /// offset of each group of them (offset 0 where the format has none).
    fn unpack(self, block: &[u8], q: &mut [i8]) -> Vec<(f32, f32)> {
        match self {
            Format::Q4K => unpack_q4k(block, q),
            Format::Q6K => unpack_q6k(block, q),
            _ => vec![self.unpack_32(block, q.try_into().expect("32 values"))],
        }
    }

    /// [`Format::unpack`] for the formats of one 32-value block.
    fn unpack_32(self, block: &[u8], q: &mut [i8; BLOCK]) -> (f32, f32) {
        let half_at = |i: usize| f16::from_le_bytes([block[i], block[i + 1]]).to_f32();
        let d = half_at(0);
        let m = if self.has_offset() { half_at(2) } else { 0.0 };
        match self {
            Format::Q8_0 => {
                for (q, &b) in q.iter_mut().zip(&block[2..]) {
                    *q = b as i8;
                }
            }
            Format::Q4_0 | Format::Q4_1 => {
                let (qs, bias) = match self {
                    Format::Q4_0 => (&block[2..], 8),
                    _ => (&block[4..], 0),
                };
                for (j, &b) in qs.iter().enumerate() {
                    q[j] = (b & 0x0F) as i8 - bias;
                    q[j + BLOCK / 2] = (b >> 4) as i8 - bias;
                }
            }
            Format::Q5_0 | Format::Q5_1 => {
                let (at, bias) = match self {
                    Format::Q5_0 => (2, 16),
                    _ => (4, 0),
                };
                let qh = u32::from_le_bytes(block[at..at + 4].try_into().expect("4 bytes"));
                for (j, &b) in block[at + 4..].iter().enumerate() {
                    let h0 = (((qh >> j) << 4) & 0x10) as u8;
                    let h1 = ((qh >> (j + 12)) & 0x10) as u8;
                    q[j] = ((b & 0x0F) | h0) as i8 - bias;
                    q[j + BLOCK / 2] = ((b >> 4) | h1) as i8 - bias;
                }
            }
            Format::Q4K | Format::Q6K => unreachable!("K-quant blocks hold 256 values"),
        }
        (d, m)
    }
}

/// A Q4_K super-block (`d`, `dmin` f16, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles):
/// each 32 values `q · (d·sc) − dmin·m`, the products rounded to f32 first as candle's
/// dequantization does, so the offset is `−(dmin·m)`.
fn unpack_q4k(block: &[u8], q: &mut [i8]) -> Vec<(f32, f32)> {
    let half_at = |i: usize| f16::from_le_bytes([block[i], block[i + 1]]).to_f32();
    let (d, dmin) = (half_at(0), half_at(2));
    let scales = &block[4..16];
    let qs = &block[16..144];
    // ggml's `get_scale_min_k4`: the j-th 6-bit scale and min.
    let scale_min = |j: usize| -> (u8, u8) {
        if j < 4 {
            (scales[j] & 63, scales[j + 4] & 63)
        } else {
            (
                (scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4),
                (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
            )
        }
    };
    let mut out = Vec::with_capacity(8);
    for (chunk, (qs, q)) in qs.chunks_exact(32).zip(q.chunks_exact_mut(64)).enumerate() {
        let (lo, hi) = q.split_at_mut(32);
        for ((b, lo), hi) in qs.iter().zip(lo).zip(hi) {
            *lo = (b & 0xF) as i8;
            *hi = (b >> 4) as i8;
        }
        for j in [2 * chunk, 2 * chunk + 1] {
            let (sc, m) = scale_min(j);
            out.push((d * sc as f32, -(dmin * m as f32)));
        }
    }
    out
}

/// A Q6_K super-block (128 bytes of low nibbles, 64 of high bit pairs, 16 signed 8-bit scales,
/// `d` f16): each 16 values `(d·sc) · q`, `q` in −32..32, the scale rounded to f32 first as
/// candle's dequantization computes `d * sc * q`.
fn unpack_q6k(block: &[u8], q: &mut [i8]) -> Vec<(f32, f32)> {
    let (ql, rest) = block.split_at(128);
    let (qh, rest) = rest.split_at(64);
    let (scales, d) = rest.split_at(16);
    let d = f16::from_le_bytes([d[0], d[1]]).to_f32();
    // Each half of 128 values: 64 low-nibble bytes and 32 high-bit bytes give four runs of 32.
    for (half, q) in q.chunks_exact_mut(128).enumerate() {
        let (ql, qh) = (&ql[64 * half..], &qh[32 * half..]);
        for l in 0..32 {
            let (lo, hi, h) = (ql[l], ql[l + 32], qh[l]);
            q[l] = ((lo & 0xF) | ((h & 3) << 4)) as i8 - 32;
            q[l + 32] = ((hi & 0xF) | (((h >> 2) & 3) << 4)) as i8 - 32;
            q[l + 64] = ((lo >> 4) | (((h >> 4) & 3) << 4)) as i8 - 32;
            q[l + 96] = ((hi >> 4) | (((h >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    scales
        .iter()
        .map(|&sc| (d * (sc as i8) as f32, 0.0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn quantized(dtype: GgmlDType, rows: usize, cols: usize) -> QTensor {
        let t = Tensor::randn(0f32, 1.0, (rows, cols), &Device::Cpu).unwrap();
        QTensor::quantize(&t, dtype).unwrap()
    }

    fn dequantized(p: &PackedRows) -> Vec<Vec<f32>> {
        (0..p.rows())
            .map(|r| {
                let mut row = vec![0f32; p.cols()];
                p.dequantize_row(r, &mut row);
                row
            })
            .collect()
    }

    /// The integer form rebuilds candle's dequantized weights bit for bit, in every format kept.
    #[test]
    fn rebuilds_candles_dequantization_exactly() {
        for dtype in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            let cols = match dtype {
                GgmlDType::Q4K | GgmlDType::Q6K => 512,
                _ => 96,
            };
            let q = quantized(dtype, 5, cols);
            let p = PackedRows::from_qtensor(&q).unwrap().expect("kept");
            let want = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let got = dequantized(&p);
            for (w, g) in want.iter().zip(&got) {
                assert_eq!(
                    w.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    g.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{dtype:?}"
                );
            }
        }
    }

    #[test]
    fn other_k_quants_and_floats_are_not_kept() {
        for dtype in [
            GgmlDType::Q2K,
            GgmlDType::Q3K,
            GgmlDType::Q5K,
            GgmlDType::F32,
            GgmlDType::F16,
        ] {
            let q = quantized(dtype, 2, 256);
            assert!(PackedRows::from_qtensor(&q).unwrap().is_none(), "{dtype:?}");
        }
    }

    #[test]
    fn stacking_and_row_selection_keep_each_rows_values() {
        let a = PackedRows::from_qtensor(&quantized(GgmlDType::Q4_1, 3, 64))
            .unwrap()
            .unwrap();
        let b = PackedRows::from_qtensor(&quantized(GgmlDType::Q4_1, 2, 64))
            .unwrap()
            .unwrap();
        let stacked = PackedRows::stack(vec![a.clone(), b.clone()]).unwrap();
        assert_eq!(stacked.rows(), 5);
        let (da, db, ds) = (dequantized(&a), dequantized(&b), dequantized(&stacked));
        assert_eq!(ds, [da.clone(), db.clone()].concat());
        let picked = stacked.select_rows(&[4, 0]).unwrap();
        assert_eq!(dequantized(&picked), vec![db[1].clone(), da[0].clone()]);
        assert!(stacked.select_rows(&[5]).is_none());
        // A part without offsets stacks with zero ones: the same values (up to a zero's sign).
        let c = PackedRows::from_qtensor(&quantized(GgmlDType::Q8_0, 1, 64))
            .unwrap()
            .unwrap();
        let mixed = PackedRows::stack(vec![a.clone(), c.clone()]).unwrap();
        assert!(mixed.has_offset());
        assert_eq!(dequantized(&mixed), [da, dequantized(&c)].concat());
        // Different widths do not stack.
        let narrow = PackedRows::from_qtensor(&quantized(GgmlDType::Q4_1, 1, 32))
            .unwrap()
            .unwrap();
        assert!(PackedRows::stack(vec![a, narrow]).is_none());
    }

    /// Q6_K (a scale per 16) stacks with a scale-per-32 part, whose scales are then repeated:
    /// the values stay, and rows and whole blocks of columns select as before.
    #[test]
    fn scales_per_16_stack_and_select_with_scales_per_32() {
        let six = PackedRows::from_qtensor(&quantized(GgmlDType::Q6K, 3, 256))
            .unwrap()
            .unwrap();
        assert_eq!(six.group(), 16);
        let four = PackedRows::from_qtensor(&quantized(GgmlDType::Q4_1, 2, 256))
            .unwrap()
            .unwrap();
        assert_eq!(four.group(), 32);
        let stacked = PackedRows::stack(vec![four.clone(), six.clone()]).unwrap();
        assert_eq!((stacked.group(), stacked.rows()), (16, 5));
        assert!(stacked.has_offset());
        let (d4, d6) = (dequantized(&four), dequantized(&six));
        let all = [d4.clone(), d6.clone()].concat();
        assert_eq!(dequantized(&stacked), all);
        assert_eq!(
            dequantized(&stacked.select_rows(&[3, 1]).unwrap()),
            vec![d6[1].clone(), d4[1].clone()]
        );
        let keep: Vec<usize> = (224..256).chain(32..64).collect();
        for p in [&six, &stacked] {
            let full = dequantized(p);
            let got = dequantized(&p.select_columns(&keep).unwrap());
            for (g, f) in got.iter().zip(&full) {
                let want: Vec<f32> = keep.iter().map(|&c| f[c]).collect();
                assert_eq!(g, &want);
            }
        }
    }

    #[test]
    fn column_selection_takes_whole_aligned_blocks_only() {
        let p = PackedRows::from_qtensor(&quantized(GgmlDType::Q5_0, 2, 128))
            .unwrap()
            .unwrap();
        let full = dequantized(&p);
        let keep: Vec<usize> = (96..128).chain(0..32).collect();
        let got = dequantized(&p.select_columns(&keep).unwrap());
        for (g, f) in got.iter().zip(&full) {
            let want: Vec<f32> = keep.iter().map(|&c| f[c]).collect();
            assert_eq!(g, &want);
        }
        let misaligned: Vec<usize> = (16..48).collect();
        assert!(p.select_columns(&misaligned).is_none());
        assert!(p.select_columns(&[0, 1, 2]).is_none());
    }
}
