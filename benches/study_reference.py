#!/usr/bin/env python3
"""The study plan's own way of running `headscope study`'s detect and ablate phases, with PyTorch + transformers,
on the samples of a study folder headscope made — timed per sample and checked against headscope's unit files.

Usage (from the repository root, with a venv holding torch, transformers >= 5, accelerate, gguf, numpy):

    python benches/study_reference.py DIR --json OUT.json [--phase detect|ablate|both] [--model LABEL]
        [--method summed_attention] [--train N] [--test N] [--threads 2] [--gguf PATH] [--with-logprob]

DIR is a study folder (`headscope study run|detect|ablate --out DIR`). Read from it: `config.toml` (instruction,
max_new_tokens, positions, ablation mode, the model's path and the rendered placeholder prompt),
`split/train.jsonl` / `split/test.jsonl`, `ablate/<model>/plan.json` (the exact head sets), and the unit files to
compare with: `detect/<model>/samples/<key>.json` and `ablate/<model>/{clean,<method>}/<key>.json`. Only samples
headscope has a unit for are run, in split order, at most N of each side.

The plan's way (transformers loading the GGUF and dequantizing it to float32; eager attention; CPU; greedy):
* detect, per training sample: `generate` the answer (max_new_tokens from the config; stop on the model's
  end-of-turn ids, as headscope's `stop_ids` lists them), then ONE forward of prompt + answer with
  `output_attentions=True`, which materialises every layer's `heads × T × T` pattern. Summed attention = the last
  prompt token's attention summed over the gold document's tokens. The document's token span follows headscope's
  token rule (RagPrompt): each token's anchor is its first non-whitespace character (its first character when it
  is all whitespace); a span covers the tokens whose anchor lies in it. The document span is the whole line
  `Document [i](Title: T): text`, located by character offsets in the rendered chat prompt (fast tokenizer offsets).
* ablate, per test sample: one clean `generate` (headscope's `clean/<key>.json`), then for every condition of the
  plan's cell for the sample's category and --method (per k: top, each random draw, layer-matched), one `generate`
  with a forward pre-hook on every layer's `self_attn.o_proj` zeroing the ablated heads' slices of its input
  (head h = columns h*head_dim:(h+1)*head_dim). Positions `all`: the hook acts on the prompt and every generated
  token; `decode-only`: only on the single-token decode steps (the first answer token comes from the clean prompt,
  as in headscope). Only ablation mode `zero` is the plan's (mean/uniform are refused).
  headscope also records the clean answer's log-prob under each ablation; the plan's way does not compute it, so
  by default neither is it here. --with-logprob adds one teacher-forced forward per condition to compute it and
  compares it too (that time is reported separately and not counted in the per-sample ablate time).

Reported (JSON): per sample seconds (detect: generate + attention forward + scores; ablate: clean generate + every
condition's generate), the attention tensors materialised (bytes of the `output_attentions` tuple:
layers × heads × T² × 4), peak RSS (getrusage), the pinned versions, and the agreement with headscope: detect —
the answer text, the needle span, the max |Δ| of summed attention over all heads and whether the top-10 sets agree;
ablate — the fraction of conditions whose regenerated answer is the same text (and the same correctness).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import sys
import time
import tomllib
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from make_fixtures import versions  # noqa: E402

# headscope's END_OF_TURN_STRINGS (src/engine/tokenizer.rs): any of these in the vocabulary stops generation.
END_OF_TURN_STRINGS = ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
                       "<|eom_id|>", "<EOT>"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---------------------------------------------------------------------------------------------------------------
# The study folder
# ---------------------------------------------------------------------------------------------------------------

def slug(s: str) -> str:
    """headscope's `slug`: letters, digits, `.`, `_`, `-` kept, anything else `-`, outer dots trimmed."""
    out = "".join(c if (c.isascii() and c.isalnum()) or c in "._-" else "-" for c in s.strip())
    return out.strip(".")


def sample_key(sample: dict) -> str:
    sid = sample.get("id")
    if sid is None or not str(sid).strip():
        raise SystemExit("a sample without `id`: its key depends on its index in the dataset; give samples ids")
    return slug(str(sid))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Study:
    """What the reference needs from a study folder."""

    def __init__(self, root: Path, label: str | None):
        self.root = root
        rec = tomllib.loads((root / "config.toml").read_text())
        self.cfg = rec["study"]
        models = rec["provenance"].get("models", [])
        if not models:
            raise SystemExit(f"{root}/config.toml records no model: run headscope on it first")
        chosen = [m for m in models if label is None or m["label"] == label]
        if not chosen:
            raise SystemExit(f"no model `{label}` in {root}/config.toml (have: {[m['label'] for m in models]})")
        self.model = chosen[0]
        self.label = self.model["label"]
        instr = self.cfg.get("instruction")
        self.instruction = instr.strip() if instr and instr.strip() else None
        if self.cfg.get("prompt_style", "mirage") != "mirage" or self.cfg.get("prompt_template"):
            raise SystemExit("only the built-in Mirage prompt style is reproduced here")

    def unit(self, rel: str) -> dict | None:
        p = self.root / rel
        return json.loads(p.read_text()) if p.exists() else None

    def chosen(self, side: str, n: int, unit_rel) -> list[tuple[str, dict]]:
        """The first n samples of a side of the split that headscope has a unit for."""
        out = []
        for s in read_jsonl(self.root / "split" / f"{side}.jsonl"):
            key = sample_key(s)
            if (self.root / unit_rel(key)).exists():
                out.append((key, s))
            if len(out) == n:
                break
        return out


# ---------------------------------------------------------------------------------------------------------------
# The prompt, as headscope's RagPrompt writes it (Mirage style)
# ---------------------------------------------------------------------------------------------------------------

def user_message(sample: dict, instruction: str | None) -> tuple[str, list[tuple[int, int]], tuple[int, int]]:
    """The user message, each document's character range (its whole `Document [i](Title: T): text` line) and the
    question's. Titles and texts are trimmed as headscope trims them."""
    msg, docs = "", []
    for i, d in enumerate(sample["docs"], start=1):
        if docs:
            msg += "\n"
        start = len(msg)
        msg += f"Document [{i}](Title: {d['title'].strip()}): {d['text'].strip()}"
        docs.append((start, len(msg)))
    if docs:
        msg += "\n\n"
    if instruction:
        msg += instruction + "\n"
    q = len(msg)
    msg += sample["question"].strip()
    return msg, docs, (q, len(msg))


def anchors(text: str, offsets: list[tuple[int, int]]) -> list[int]:
    """headscope's token rule: the first non-whitespace character of each token (non-decreasing)."""
    out, prev = [], 0
    for s, e in offsets:
        piece = text[s:max(s, e)]
        stripped = len(piece) - len(piece.lstrip())
        a = s + stripped if stripped < len(piece) else s
        prev = max(prev, a)
        out.append(prev)
    return out


def to_span(anc: list[int], start: int, end: int) -> tuple[int, int]:
    import bisect

    a = bisect.bisect_left(anc, start)
    b = max(a, bisect.bisect_left(anc, end))
    return a, b


class Prompt:
    def __init__(self, tok, sample: dict, instruction: str | None):
        msg, docs, question = user_message(sample, instruction)
        self.text = tok.apply_chat_template([{"role": "user", "content": msg}], add_generation_prompt=True,
                                            tokenize=False)
        at = self.text.find(msg)
        if at < 0:
            raise SystemExit("the chat template changed the user message")
        enc = tok(self.text, add_special_tokens=False, return_offsets_mapping=True)
        self.ids = enc["input_ids"]
        self.anchors = anchors(self.text, [tuple(o) for o in enc["offset_mapping"]])
        self.docs = [to_span(self.anchors, at + s, at + e) for s, e in docs]
        self.doc_chars = [(at + s, at + e) for s, e in docs]
        self.question = to_span(self.anchors, at + question[0], at + question[1])

    def needle(self, sample: dict, gold: int) -> tuple[int, int]:
        """headscope's `answer_needle`: the earliest accepted answer form in the gold document, else the document."""
        s, e = self.doc_chars[gold]
        text = self.text[s:e].lower()
        found = [(text.find(a.strip().lower()), len(a.strip().lower())) for a in sample.get("answers", [])
                 if a.strip()]
        found = [f for f in found if f[0] >= 0]
        if not found:
            return self.docs[gold]
        at, n = min(found)
        span = to_span(self.anchors, s + at, s + at + n)
        return span if span[1] > span[0] else self.docs[gold]


def placeholder_prompt(tok, instruction: str | None) -> str:
    sample = {"question": "{question}",
              "docs": [{"title": f"{{title {i}}}", "text": f"{{document {i}}}"} for i in (1, 2)]}
    msg, _, _ = user_message(sample, instruction)
    return tok.apply_chat_template([{"role": "user", "content": msg}], add_generation_prompt=True, tokenize=False)


def is_correct(sample: dict, answer: str) -> bool:
    text = answer.lower()
    return any(a.strip() and a.strip().lower() in text for a in sample.get("answers", []))


# ---------------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------------

class Runner:
    def __init__(self, gguf: Path, max_new_tokens: int):
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        self.tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        self.model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                          dtype=torch.float32, attn_implementation="eager")
        self.model.eval()
        cfg = self.model.config
        self.layers, self.heads = cfg.num_hidden_layers, cfg.num_attention_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        vocab = self.tok.get_vocab()
        stops = {vocab[s] for s in END_OF_TURN_STRINGS if s in vocab}
        if self.tok.eos_token_id is not None:
            stops.add(self.tok.eos_token_id)
        self.stop_ids = sorted(stops)
        self.gen = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=self.stop_ids,
                                    pad_token_id=self.stop_ids[0])
        self.context = getattr(cfg, "max_position_embeddings", 1 << 30)
        # The heads each layer's o_proj pre-hook zeroes (empty: the hook does nothing).
        self.ablated: list[list[int]] = [[] for _ in range(self.layers)]
        self.decode_only = False
        self.handles = []

    def generate(self, ids: list[int]) -> list[int]:
        gen = copy.deepcopy(self.gen)
        gen.max_new_tokens = min(gen.max_new_tokens, self.context - len(ids))
        with torch.no_grad():
            out = self.model.generate(torch.tensor([ids]), generation_config=gen)
        answer = out[0, len(ids):].tolist()
        while answer and answer[-1] in self.stop_ids:
            answer = answer[:-1]
        return answer

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False)

    def attentions(self, ids: list[int]):
        with torch.no_grad():
            return self.model(input_ids=torch.tensor([ids]), use_cache=False, output_attentions=True).attentions

    # ---- ablation ----
    def install_hooks(self) -> None:
        dh = self.head_dim

        def make(layer: int):
            def hook(_mod, args):
                heads = self.ablated[layer]
                if not heads:
                    return None
                x = args[0]
                if self.decode_only and x.shape[1] != 1:
                    return None
                x = x.clone()
                for h in heads:
                    x[..., h * dh:(h + 1) * dh] = 0.0
                return (x,) + tuple(args[1:])
            return hook

        for layer in range(self.layers):
            o_proj = self.model.model.layers[layer].self_attn.o_proj
            self.handles.append(o_proj.register_forward_pre_hook(make(layer)))

    def set_ablation(self, heads: list[list[int]] | None) -> None:
        self.ablated = [[] for _ in range(self.layers)]
        for layer, h in heads or []:
            self.ablated[layer].append(h)

    def answer_logprob(self, prompt: list[int], answer: list[int]) -> float:
        """Teacher-forced log-prob of `answer` after `prompt` (hooks active)."""
        ids = prompt + answer[:-1]
        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, len(prompt) - 1:]
        lp = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(answer)[:, None])
        return float(lp.sum())


# ---------------------------------------------------------------------------------------------------------------
# The phases
# ---------------------------------------------------------------------------------------------------------------

def top_set(matrix, k: int = 10) -> set[tuple[int, int]]:
    flat = sorted(((v, (l, h)) for l, row in enumerate(matrix) for h, v in enumerate(row)),
                  key=lambda x: (-x[0], x[1]))
    return {lh for _, lh in flat[:k]}


def detect(study: Study, run: Runner, n: int) -> dict:
    samples = study.chosen("train", n, lambda k: f"detect/{study.label}/samples/{k}.json")
    rows = []
    for key, sample in samples:
        unit = study.unit(f"detect/{study.label}/samples/{key}.json")
        gold = int(sample["gold"])
        t0 = time.perf_counter()
        prompt = Prompt(run.tok, sample, study.instruction)
        answer = run.generate(prompt.ids)
        t_gen = time.perf_counter() - t0
        row: dict = {"sample": key, "prompt_tokens": len(prompt.ids), "answer_tokens": len(answer)}
        if not answer:
            row.update(seconds=time.perf_counter() - t0, skipped=True,
                       agrees_skipped=unit.get("skipped") is not None)
            rows.append(row)
            continue
        t1 = time.perf_counter()
        att = run.attentions(prompt.ids + answer)
        p = len(prompt.ids)
        g0, g1 = prompt.docs[gold]
        summed = [[float(v) for v in a[0, :, p - 1, g0:g1].double().sum(-1)] for a in att]
        att_bytes = sum(a.numel() * a.element_size() for a in att)
        del att
        t_fwd = time.perf_counter() - t1
        seconds = time.perf_counter() - t0
        text = run.decode(answer)
        ours = (unit.get("scores") or {}).get("summed_attention")
        needle = prompt.needle(sample, gold)
        q0 = prompt.question[0]
        captured_rows = p - 1 + len(answer) - q0  # headscope's capture: question start .. last answer-predicting row
        row.update(
            seconds=seconds, generate_seconds=t_gen, attention_forward_seconds=t_fwd,
            total_tokens=p + len(answer), attention_bytes=att_bytes,
            headscope_captured_attention_bytes=run.layers * run.heads * captured_rows * (p + len(answer) - 1) * 4,
            answer=text, correct=is_correct(sample, text),
            answer_agrees=text == unit.get("answer"),
            needle=[needle[0], needle[1]],
            needle_agrees=unit.get("needle") == {"start": needle[0], "end": needle[1]},
        )
        if ours is not None:
            diff = max(abs(a - b) for ra, rb in zip(summed, ours) for a, b in zip(ra, rb))
            overlap = len(top_set(summed) & top_set(ours))
            row.update(summed_attention_max_abs_diff=diff, top10_overlap=overlap, top10_agrees=overlap == 10)
        rows.append(row)
        log(f"detect {key}: {len(prompt.ids)}+{len(answer)} tokens, {seconds:.2f} s "
            f"(generate {t_gen:.2f} s, attention forward {t_fwd:.2f} s), answer agrees {row['answer_agrees']}, "
            f"max |Δ| {row.get('summed_attention_max_abs_diff', float('nan')):.2e}, top-10 {row.get('top10_overlap')}/10")
    scored = [r for r in rows if "summed_attention_max_abs_diff" in r]
    return {
        "samples": rows,
        "n": len(rows),
        "seconds_total": sum(r["seconds"] for r in rows),
        "seconds_per_sample": sum(r["seconds"] for r in rows) / max(1, len(rows)),
        "attention_bytes_max": max((r.get("attention_bytes", 0) for r in rows), default=0),
        "headscope_captured_attention_bytes_max": max((r.get("headscope_captured_attention_bytes", 0) for r in rows),
                                                      default=0),
        "answers_agree": sum(bool(r.get("answer_agrees", r.get("agrees_skipped"))) for r in rows),
        "needles_agree": sum(bool(r.get("needle_agrees")) for r in rows),
        "summed_attention_max_abs_diff": max((r["summed_attention_max_abs_diff"] for r in scored), default=None),
        "top10_agree": sum(r["top10_agrees"] for r in scored),
        "top10_min_overlap": min((r["top10_overlap"] for r in scored), default=None),
        "scored": len(scored),
    }


def conditions(cell: dict) -> list[tuple[int, str, int, list]]:
    """headscope's `conditions`: per k, top, each random draw, layer-matched."""
    out = []
    for p in cell["points"]:
        out.append((p["k"], "top", 0, p["top"]))
        out.extend((p["k"], "random", d, s) for d, s in enumerate(p["random"]))
        out.append((p["k"], "layer_matched", 0, p["layer_matched"]))
    return out


def ablate(study: Study, run: Runner, n: int, method: str, with_logprob: bool, limit: int | None) -> dict:
    mode = study.cfg.get("ablation", "zero")
    if mode != "zero":
        raise SystemExit(f"ablation mode `{mode}`: the plan's o_proj hook is zero ablation only")
    run.decode_only = study.cfg.get("positions", "all") == "decode-only"
    plan = study.unit(f"ablate/{study.label}/plan.json")
    if plan is None:
        raise SystemExit(f"no ablate/{study.label}/plan.json: run `headscope study ablate` first")
    samples = study.chosen("test", n, lambda k: f"ablate/{study.label}/{method}/{k}.json")
    run.install_hooks()
    rows = []
    for key, sample in samples:
        unit = study.unit(f"ablate/{study.label}/{method}/{key}.json")
        clean_unit = study.unit(f"ablate/{study.label}/clean/{key}.json")
        cell = next(c for c in plan["cells"] if c["method"] == method and c["category"] == sample["category"])
        theirs = {(c["k"], c["control"], c["draw"]): c for c in unit["conditions"]}
        t0 = time.perf_counter()
        prompt = Prompt(run.tok, sample, study.instruction)
        run.set_ablation(None)
        clean = run.generate(prompt.ids)
        clean_text = run.decode(clean)
        results, logprob_seconds = [], 0.0
        for k, control, draw, heads in conditions(cell)[:limit]:
            run.set_ablation(heads)
            text = run.decode(run.generate(prompt.ids))
            res = {"k": k, "control": control, "draw": draw, "answer": text, "correct": is_correct(sample, text)}
            if with_logprob and clean:
                t = time.perf_counter()
                res["clean_answer_logprob"] = run.answer_logprob(prompt.ids, clean)
                logprob_seconds += time.perf_counter() - t
            results.append(res)
        run.set_ablation(None)
        seconds = time.perf_counter() - t0 - logprob_seconds
        agree = sum(theirs.get((r["k"], r["control"], r["draw"]), {}).get("answer") == r["answer"] for r in results)
        agree_correct = sum(theirs.get((r["k"], r["control"], r["draw"]), {}).get("correct") == r["correct"]
                            for r in results)
        row = {"sample": key, "category": sample["category"], "prompt_tokens": len(prompt.ids), "seconds": seconds,
               "generate_calls": 1 + len(results), "clean_answer": clean_text,
               "clean_agrees": clean_text == (clean_unit or {}).get("answer"),
               "conditions": len(results), "answers_agree": agree, "correct_agrees": agree_correct,
               "results": results}
        if with_logprob:
            diffs = [abs(r["clean_answer_logprob"] - theirs[(r["k"], r["control"], r["draw"])]["clean_answer_logprob"])
                     for r in results if "clean_answer_logprob" in r]
            row.update(logprob_seconds=logprob_seconds, clean_answer_logprob_max_abs_diff=max(diffs, default=None))
        rows.append(row)
        log(f"ablate {key}: {len(results)} conditions + clean in {seconds:.2f} s, clean agrees {row['clean_agrees']}, "
            f"{agree}/{len(results)} answers agree")
    total = sum(r["conditions"] for r in rows)
    return {
        "method": method,
        "positions": study.cfg.get("positions", "all"),
        "mode": mode,
        "samples": rows,
        "n": len(rows),
        "seconds_total": sum(r["seconds"] for r in rows),
        "seconds_per_sample": sum(r["seconds"] for r in rows) / max(1, len(rows)),
        "generate_calls": sum(r["generate_calls"] for r in rows),
        "conditions": total,
        "answers_agree": sum(r["answers_agree"] for r in rows),
        "correct_agree": sum(r["correct_agrees"] for r in rows),
        "agreement_rate": sum(r["answers_agree"] for r in rows) / max(1, total),
        "clean_agree": sum(r["clean_agrees"] for r in rows),
        "clean_answer_logprob_max_abs_diff": max((r["clean_answer_logprob_max_abs_diff"] for r in rows
                                                  if r.get("clean_answer_logprob_max_abs_diff") is not None),
                                                 default=None),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", type=Path, help="the study folder headscope made")
    ap.add_argument("--json", type=Path, required=True, help="where to write the results")
    ap.add_argument("--phase", choices=["detect", "ablate", "both"], default="both")
    ap.add_argument("--model", default=None, help="the model label in config.toml (default: the first)")
    ap.add_argument("--method", default="summed_attention", help="the plan's method to ablate")
    ap.add_argument("--train", type=int, default=4, help="training samples to detect on")
    ap.add_argument("--test", type=int, default=2, help="test samples to ablate")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gguf", type=Path, default=None, help="the model file (default: config.toml's path)")
    ap.add_argument("--with-logprob", action="store_true",
                    help="also compute the clean answer's log-prob under each ablation (not the plan's way)")
    ap.add_argument("--limit-conditions", type=int, default=None,
                    help="run only the first N conditions per sample (development only: not a benchmark)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    study = Study(args.study, args.model)
    gguf = args.gguf or Path(study.model["path"])
    t0 = time.perf_counter()
    run = Runner(gguf, int(study.cfg.get("max_new_tokens", 24)))
    load_s = time.perf_counter() - t0
    rendered = placeholder_prompt(run.tok, study.instruction)
    result: dict = {
        "study": str(args.study),
        "model": study.label,
        "gguf": str(gguf),
        "backend": "pytorch eager (transformers, GGUF dequantized to float32), CPU",
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "versions": versions(),
        "load_seconds": load_s,
        "layers": run.layers,
        "heads": run.heads,
        "stop_ids": run.stop_ids,
        "max_new_tokens": run.gen.max_new_tokens,
        "prompt_matches_headscope": rendered == study.model.get("rendered_prompt"),
        "loadavg_at_start": os.getloadavg(),
    }
    if not result["prompt_matches_headscope"]:
        log("WARNING: the rendered placeholder prompt differs from config.toml's rendered_prompt")
    if args.phase in ("detect", "both"):
        result["detect"] = detect(study, run, args.train)
    if args.phase in ("ablate", "both"):
        result["ablate"] = ablate(study, run, args.test, args.method, args.with_logprob, args.limit_conditions)
        if args.limit_conditions is not None:
            result["ablate"]["limited_to_conditions"] = args.limit_conditions
    result["loadavg_at_end"] = os.getloadavg()
    result["peak_rss_mib"] = peak_rss_mib()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    log(f"peak RSS {result['peak_rss_mib']:.0f} MiB; results in {args.json}")


if __name__ == "__main__":
    main()
