#!/usr/bin/env python3
"""Python/PyTorch reference timings for headscope, on SmolLM2-135M-Instruct (transformers loading the Q4_1 GGUF and
dequantizing it to float32; eager attention; CPU; torch.set_num_threads(2) unless --threads says otherwise).

Usage (from the repository root, with the venv of scripts/requirements-fixtures.txt):

    ~/.cache/headscope/venv/bin/python benches/reference_bench.py --json /tmp/ref_bench.json
        [--tokens 512] [--repeats 5] [--sample tests/fixtures/smollm2/sample.json] [--heads N]
        [--gguf PATH] [--threads 2] [--skip-forward] [--skip-sweep] [--decode N]

Measures
  1. forward: median wall-clock seconds of one full forward (no KV cache, all positions' logits) over --tokens
     token ids (drawn with a fixed seed from [17, vocab), i.e. no control tokens), after one warm-up, --repeats runs.
  2. sweep: the naive per-head ablation sweep. The first sample of --sample (MIRAGE format: a JSON object, a JSON
     list, or JSONL) is turned into the prompt exactly as scripts/make_fixtures.py part D does; the answer is
     generated greedily (up to 32 new tokens, stop at id 2). Then, for every (layer, head), one full teacher-forced
     forward over prompt + answer with that head's slice zeroed at the o_proj input; delta[layer][head] =
     sum of answer-token log-probs (ablated) - the same sum unablated. With --heads N only the first N heads in
     (layer, head) order are run and the total time is extrapolated (the output says so and leaves the rest of
     the matrix null).
  3. decode (with --decode N): greedy decoding tokens/s with the KV cache, one token per step: the --tokens
     random ids are prefilled, then N steps each feed the previous step's argmax (the model's own forward with
     past_key_values, no generate() bookkeeping); median over --repeats runs after one warm-up.
Peak RSS (resource.getrusage(RUSAGE_SELF).ru_maxrss) is reported at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from make_fixtures import build_user_message, default_smollm2_gguf, versions  # noqa: E402


def load_sample(path: Path) -> dict:
    text = path.read_text()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:  # JSONL
        obj = json.loads(next(line for line in text.splitlines() if line.strip()))
    if isinstance(obj, list):
        obj = obj[0]
    return obj


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, required=True, help="where to write the results")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sample", type=Path, default=ROOT / "tests/fixtures/smollm2/sample.json")
    ap.add_argument("--heads", type=int, default=None, help="time only the first N (layer, head) pairs")
    ap.add_argument("--gguf", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-forward", action="store_true")
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--decode", type=int, default=0, help="also time N greedy decoding steps after the prefill")
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    gguf_path = args.gguf or default_smollm2_gguf()
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                 dtype=torch.float32, attn_implementation="eager")
    model.eval()
    load_s = time.perf_counter() - t0
    cfg = model.config
    L, H = cfg.num_hidden_layers, cfg.num_attention_heads
    dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    result: dict = {
        "model": gguf_path.name,
        "backend": "pytorch eager (transformers, GGUF dequantized to float32)",
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load_seconds": load_s,
        "loadavg_at_start": os.getloadavg(),
        "layers": L,
        "heads": H,
        "versions": versions(),
    }

    # ---- 1. full forward ----
    if not args.skip_forward:
        g = torch.Generator().manual_seed(1234)
        ids = torch.randint(17, cfg.vocab_size, (1, args.tokens), generator=g)
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)  # warm-up
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                model(input_ids=ids, use_cache=False)
                times.append(time.perf_counter() - t)
        result["forward"] = {"tokens": args.tokens, "repeats": args.repeats, "median_seconds": statistics.median(times),
                             "all_seconds": times}
        print(f"forward over {args.tokens} tokens: median {statistics.median(times):.3f} s", flush=True)

    # ---- 3. greedy decoding with the KV cache ----
    if args.decode > 0:
        g = torch.Generator().manual_seed(1234)
        ids = torch.randint(17, cfg.vocab_size, (1, args.tokens), generator=g)

        def decode_seconds() -> float:
            with torch.no_grad():
                out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
                past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
                t = time.perf_counter()
                for _ in range(args.decode):
                    out = model(input_ids=nxt, past_key_values=past, use_cache=True)
                    past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
                return time.perf_counter() - t

        decode_seconds()  # warm-up
        times = [decode_seconds() for _ in range(args.repeats)]
        med = statistics.median(times)
        result["decode"] = {"prefill_tokens": args.tokens, "steps": args.decode, "repeats": args.repeats,
                            "median_seconds": med, "tokens_per_s": args.decode / med, "all_seconds": times}
        print(f"decode after {args.tokens} tokens: {args.decode / med:.1f} tokens/s", flush=True)

    # ---- 2. naive per-head sweep ----
    if not args.skip_sweep:
        sample = load_sample(args.sample)
        msg = build_user_message(sample)
        prompt_text = tok.apply_chat_template([{"role": "user", "content": msg}], add_generation_prompt=True,
                                              tokenize=False)
        prompt_ids = tok.encode(prompt_text, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(torch.tensor([prompt_ids]), max_new_tokens=32, do_sample=False, eos_token_id=2,
                                 pad_token_id=2)
        answer = gen[0, len(prompt_ids):].tolist()
        if answer and answer[-1] == 2:
            answer = answer[:-1]
        full = torch.tensor([prompt_ids + answer])
        P = len(prompt_ids)
        tgt = torch.tensor(answer)

        ablate = {"layer": -1, "head": -1}

        def make_hook(layer: int):
            def hook(mod, hargs):
                if ablate["layer"] != layer:
                    return None
                z = hargs[0].clone()
                h = ablate["head"]
                z[..., h * dh:(h + 1) * dh] = 0.0
                return (z,)
            return hook

        handles = [model.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(make_hook(layer))
                   for layer in range(L)]

        def answer_logprob() -> float:
            with torch.no_grad():
                logits = model(input_ids=full, use_cache=False).logits[0, P - 1:P - 1 + len(answer)]
            return float(torch.log_softmax(logits.float(), -1).gather(1, tgt[:, None]).sum())

        base = answer_logprob()
        pairs = [(layer, h) for layer in range(L) for h in range(H)]
        todo = pairs if args.heads is None else pairs[:args.heads]
        delta = [[None] * H for _ in range(L)]
        t = time.perf_counter()
        for layer, h in todo:
            ablate["layer"], ablate["head"] = layer, h
            delta[layer][h] = answer_logprob() - base
        elapsed = time.perf_counter() - t
        ablate["layer"] = -1
        for hd in handles:
            hd.remove()
        extrapolated = len(todo) < len(pairs)
        result["sweep"] = {
            "sample_id": sample.get("id"),
            "prompt_tokens": P,
            "answer_tokens": len(answer),
            "answer_text": tok.decode(answer),
            "total_tokens_per_forward": P + len(answer),
            "base_answer_logprob_sum": base,
            "heads_run": len(todo),
            "heads_total": len(pairs),
            "seconds_measured": elapsed,
            "seconds_per_head": elapsed / max(1, len(todo)),
            "total_seconds": elapsed / max(1, len(todo)) * len(pairs),
            "total_seconds_is_extrapolated": extrapolated,
            "delta": delta,
        }
        msg = f"sweep: {len(todo)} of {len(pairs)} heads in {elapsed:.2f} s"
        if extrapolated:
            msg += f"; EXTRAPOLATED total for all heads: {result['sweep']['total_seconds']:.1f} s"
        print(msg, flush=True)

    result["loadavg_at_end"] = os.getloadavg()
    result["peak_rss_mib"] = peak_rss_mib()
    print(f"peak RSS {result['peak_rss_mib']:.0f} MiB", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
