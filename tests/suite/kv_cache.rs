//! Decoding from a cache that grows in place (`engine::kv`) against forwards from scratch on the
//! tiny fixture models: every step's logits, past the buffer's capacity (so across a regrowth),
//! a second continuation of a cache already continued (which must copy and leave the first
//! intact), and a one-row prefix serving a batch of rows.

use candle_core::{Device, Tensor};

use headscope::engine::{Engine, Hooks, KvCache, LoadOptions, Start};

use crate::common;

fn engine(family: &str) -> Engine {
    let model = common::fixture_with_context(family, 512);
    Engine::load(&LoadOptions::new(model.to_string_lossy().to_string())).unwrap()
}

/// The last position's logits of each row of `ids` and, with `past`, after it; the cache.
fn step(e: &Engine, ids: &[Vec<u32>], past: Option<&KvCache>) -> (Vec<Vec<f32>>, KvCache) {
    let (rows, len) = (ids.len(), ids[0].len());
    let flat: Vec<u32> = ids.concat();
    let input = Tensor::from_vec(flat, (rows, len), &Device::Cpu).unwrap();
    let hooks = Hooks::logits_at_and_cache(len - 1);
    let mut trace = e.forward(Start::Tokens(&input), past, &hooks).unwrap();
    let logits = trace.take_logits().unwrap().squeeze(1).unwrap();
    (logits.to_vec2().unwrap(), trace.take_kv_cache().unwrap())
}

/// The last position's logits of `ids` from scratch.
fn from_scratch(e: &Engine, ids: &[u32]) -> Vec<f32> {
    step(e, &[ids.to_vec()], None).0.remove(0)
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    let d = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(d < 1e-4, "{what}: logits differ by {d}");
}

fn argmax(row: &[f32]) -> u32 {
    (0..row.len())
        .max_by(|&i, &j| row[i].total_cmp(&row[j]))
        .unwrap() as u32
}

#[test]
fn decoding_in_place_equals_forwards_from_scratch() {
    // Gemma 2's fixture has sliding-window layers, Qwen2 biases, Llama neither.
    for family in ["llama", "qwen2", "gemma2"] {
        let e = engine(family);
        let mut ids: Vec<u32> = (0..12).map(|i| 3 + (i * 7) % 50).collect();
        let (mut logits, mut cache) = step(&e, &[ids.clone()], None);
        let mut kept = Vec::new();
        // A prompt of 12 gets a buffer of 13 + 32 positions at the first step: 40 steps outgrow it.
        for s in 0..40 {
            let next = argmax(&logits[0]);
            ids.push(next);
            let (l, c) = step(&e, &[vec![next]], Some(&cache));
            assert_close(
                &l[0],
                &from_scratch(&e, &ids),
                &format!("{family} step {s}"),
            );
            if s == 10 {
                kept = vec![(cache.clone(), ids.clone(), l[0].clone())];
            }
            (logits, cache) = (l, c);
        }
        assert_eq!(cache.len(), ids.len());

        // The cache before step 10 was continued in place, 30 times over; continuing it again with
        // another token copies, and neither it nor the longest cache changed.
        let (before, mut branch, first) = kept.remove(0);
        let taken = *branch.last().unwrap();
        let other = (taken + 1) % 50;
        *branch.last_mut().unwrap() = other;
        let (l, _) = step(&e, &[vec![other]], Some(&before));
        assert_close(
            &l[0],
            &from_scratch(&e, &branch),
            &format!("{family} branch"),
        );
        let (l, _) = step(&e, &[vec![taken]], Some(&before));
        assert_close(&l[0], &first, &format!("{family} step 10 again"));
        ids.push(argmax(&logits[0]));
        let (l, _) = step(&e, &[vec![ids[ids.len() - 1]]], Some(&cache));
        assert_close(
            &l[0],
            &from_scratch(&e, &ids),
            &format!("{family} after the branches"),
        );

        // A one-row cache serves two rows, each as if alone.
        let rows = vec![vec![5, 9], vec![11, 2]];
        let (l, batch) = step(&e, &rows, Some(&before));
        assert_eq!(batch.layers[0].keys().dims()[0], 2);
        for (r, row) in rows.iter().enumerate() {
            let whole = [&branch[..branch.len() - 1], &row[..]].concat();
            assert_close(
                &l[r],
                &from_scratch(&e, &whole),
                &format!("{family} row {r}"),
            );
        }
    }
}
