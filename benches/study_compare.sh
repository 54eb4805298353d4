#!/usr/bin/env bash
# headscope's study phases (detect, ablate) vs the study plan's own way with PyTorch + transformers
# (benches/study_reference.py), on the same samples, on the same machine, in the same run.
#
#   benches/study_compare.sh [OUT_DIR]          (default OUT_DIR: benches/results)
#
# Writes OUT_DIR/study-speed.json and OUT_DIR/study-speed.md; the raw outputs of both sides go to
# OUT_DIR/study-speed/. Settings (environment variables, defaults in brackets):
#   TRAIN_PER_CATEGORY [1]  training samples per category (the filings data has 4 categories)
#   TEST_PER_CATEGORY  [1]  test samples per category
#   KS [0,10]  DRAWS [2]  METHOD [summed-attention]   the ablation grid (one method)
#   POSITIONS [all]   where the ablation acts: all, or decode-only (then the files are named
#                     study-speed-decode-only.{json,md} and the raw outputs go to study-speed-decode-only/)
#   THREADS [2]   torch.set_num_threads for the reference, RAYON_NUM_THREADS for headscope
#   DATA [samples/filings.jsonl]   MODEL [~/.cache/headscope/models/SmolLM2-135M-Instruct.Q4_1.gguf]
#   HEADSCOPE_BIN [target/release/headscope]   HEADSCOPE_VENV [~/.cache/headscope/venv]
# Needs GNU time at /usr/bin/time. This script builds nothing: it uses the existing release binary
# (built with `cargo build --release --locked` only when there is none), so rebuild first if the
# source changed. The defaults take about 5-10 minutes on 2 cores.
#
# Timing: each headscope phase runs as its own process under /usr/bin/time (wall seconds, peak RSS);
# the model load time it prints ("loading … in X s") is subtracted, and the rest divided by the number
# of samples. The reference times each sample itself (model load excluded) and runs each phase as its
# own process too, so both sides' peak RSS is per phase. The phases are interleaved (ours detect,
# reference detect, ours ablate, reference ablate) so a drift of the machine's load hits both sides.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benches/results}"
train_n="${TRAIN_PER_CATEGORY:-1}"
test_n="${TEST_PER_CATEGORY:-1}"
ks="${KS:-0,10}"
draws="${DRAWS:-2}"
method="${METHOD:-summed-attention}"
positions="${POSITIONS:-all}"
name=study-speed
[[ "$positions" == all ]] || name="study-speed-$positions"
threads="${THREADS:-2}"
data="${DATA:-samples/filings.jsonl}"
model="${MODEL:-$HOME/.cache/headscope/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
bin="${HEADSCOPE_BIN:-target/release/headscope}"
venv="${HEADSCOPE_VENV:-$HOME/.cache/headscope/venv}"
py="$venv/bin/python"

if [[ ! -x "$bin" ]]; then
  echo "no $bin: building it (cargo build --release --locked)" >&2
  cargo build --release --locked >&2
  bin=target/release/headscope
fi
echo "using $bin (not rebuilt)" >&2

raw="$out/$name"
mkdir -p "$raw"
study="$(mktemp -d /tmp/headscope-study-bench.XXXXXX)"
trap 'rm -rf "$study"' EXIT

# One headscope phase, timed: writes $raw/ours-$1.{time,stderr}.
ours() {
  local phase="$1"
  echo "headscope study $phase …" >&2
  cut -d' ' -f1-3 /proc/loadavg > "$raw/ours-$phase.loadavg"
  RAYON_NUM_THREADS="$threads" /usr/bin/time -f "wall_s %e max_rss_kib %M" -o "$raw/ours-$phase.time" \
    "$bin" study "$phase" "$data" --out "$study" --model "$model" --methods "$method" --ks "$ks" \
    --draws "$draws" --positions "$positions" --train-per-category "$train_n" --test-per-category "$test_n" --offline \
    2> "$raw/ours-$phase.stderr" > /dev/null
}

# One reference phase: writes $raw/ref-$1.{json,time,stderr}.
ref() {
  local phase="$1"
  echo "reference $phase …" >&2
  /usr/bin/time -f "wall_s %e max_rss_kib %M" -o "$raw/ref-$phase.time" \
    "$py" benches/study_reference.py "$study" --phase "$phase" --method "${method//-/_}" \
    --train 100000 --test 100000 --threads "$threads" --json "$raw/ref-$phase.json" 2> "$raw/ref-$phase.stderr"
}

ours detect
ref detect
ours ablate
ref ablate
cp "$study/config.toml" "$raw/config.toml"
cp "$study"/ablate/*/plan.json "$raw/plan.json"
n_detect=$(ls "$study"/detect/*/samples/*.json | wc -l)
n_ablate=$(ls "$study"/ablate/*/clean/*.json | wc -l)

"$py" - "$out" "$raw" "$n_detect" "$n_ablate" "$threads" "$train_n" "$test_n" "$ks" "$draws" "$method" "$data" "$name" "$positions" <<'PY'
import datetime, json, pathlib, re, sys

out, raw = map(pathlib.Path, sys.argv[1:3])
n_detect, n_ablate = int(sys.argv[3]), int(sys.argv[4])
threads, train_n, test_n, ks, draws, method, data, name, positions = sys.argv[5:14]


def timed(name):
    t = dict(zip(*[iter((raw / f"{name}.time").read_text().split())] * 2))
    return float(t["wall_s"]), float(t["max_rss_kib"]) / 1024


def load_s(name):
    m = re.search(r"loading .*? in ([0-9.]+)s", (raw / f"{name}.stderr").read_text())
    return float(m.group(1)) if m else 0.0


ref_d = json.loads((raw / "ref-detect.json").read_text())
ref_a = json.loads((raw / "ref-ablate.json").read_text())
label = ref_d["model"]
phases = {}
for phase, n, ref in (("detect", n_detect, ref_d), ("ablate", n_ablate, ref_a)):
    wall, rss = timed(f"ours-{phase}")
    load = load_s(f"ours-{phase}")
    ref_wall, ref_rss = timed(f"ref-{phase}")
    r = ref[phase]
    ours_per = (wall - load) / max(1, n)
    phases[phase] = {
        "samples": n,
        "headscope_s_per_sample": ours_per,
        "headscope_phase_wall_s": wall,
        "headscope_load_s": load,
        "headscope_peak_rss_mib": rss,
        "reference_s_per_sample": r["seconds_per_sample"],
        "reference_phase_wall_s": ref_wall,
        "reference_load_s": ref["load_seconds"],
        "reference_peak_rss_mib": ref_rss,
        "speedup": r["seconds_per_sample"] / ours_per if ours_per > 0 else None,
    }
d, a = ref_d["detect"], ref_a["ablate"]
ours_total = sum(p["headscope_s_per_sample"] * p["samples"] for p in phases.values())
ref_total = sum(p["reference_s_per_sample"] * p["samples"] for p in phases.values())
summary = {
    "date": datetime.date.today().isoformat(),
    "cpu": ref_d["cpu"],
    "threads": int(threads),
    "model": label,
    "settings": {"data": data, "train_per_category": int(train_n), "test_per_category": int(test_n), "ks": ks,
                 "draws": int(draws), "method": method, "positions": a["positions"], "mode": a["mode"]},
    "reference_versions": ref_d["versions"],
    "phases": phases,
    "overall_speedup": ref_total / ours_total if ours_total > 0 else None,
    "overall_seconds": {"headscope": ours_total, "reference": ref_total},
    "attention_memory": {
        "reference_bytes_max": d["attention_bytes_max"],
        "reference_rule": "output_attentions: layers x heads x T^2 x 4 bytes, all layers held at once",
        "headscope_captured_bytes_max": d["headscope_captured_attention_bytes_max"],
        "headscope_rule": "captured rows only: layers x heads x (question .. last answer-predicting row) x T x 4",
    },
    "agreement": {
        "prompt_matches": ref_d["prompt_matches_headscope"],
        "detect_answers": f"{d['answers_agree']}/{d['n']}",
        "detect_needles": f"{d['needles_agree']}/{d['n']}",
        "summed_attention_max_abs_diff": d["summed_attention_max_abs_diff"],
        "top10_sets_agree": f"{d['top10_agree']}/{d['scored']}",
        "top10_min_overlap": d["top10_min_overlap"],
        "ablate_clean_answers": f"{a['clean_agree']}/{a['n']}",
        "ablate_answers": f"{a['answers_agree']}/{a['conditions']}",
        "ablate_answer_agreement_rate": a["agreement_rate"],
        "ablate_correctness": f"{a['correct_agree']}/{a['conditions']}",
    },
    "reference_generate_calls": a["generate_calls"],
    "prompt_tokens": [min(r["prompt_tokens"] for r in d["samples"] + a["samples"]),
                      max(r["prompt_tokens"] for r in d["samples"] + a["samples"])],
    "loadavg_1_5_15_at_phase_start": {
        "headscope_detect": (raw / "ours-detect.loadavg").read_text().split(),
        "reference_detect": ref_d["loadavg_at_start"],
        "headscope_ablate": (raw / "ours-ablate.loadavg").read_text().split(),
        "reference_ablate": ref_a["loadavg_at_start"],
    },
}
(out / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")

mib = lambda b: f"{b / 2**20:,.0f} MiB"
lines = [
    f"Study phases, headscope vs the plan's PyTorch way — {summary['date']}, {summary['cpu']}, "
    f"{threads} thread{'' if threads == '1' else 's'}, {label}, method {method}, ks {ks}, {draws} draws, positions {a['positions']}",
    "",
    "| phase | samples | headscope s/sample | reference s/sample | speedup | peak RSS headscope | peak RSS reference |",
    "|---|---:|---:|---:|---:|---:|---:|",
]
for phase, p in phases.items():
    lines.append(f"| {phase} | {p['samples']} | {p['headscope_s_per_sample']:.2f} | {p['reference_s_per_sample']:.2f} "
                 f"| {p['speedup']:.1f}× | {p['headscope_peak_rss_mib']:,.0f} MiB | {p['reference_peak_rss_mib']:,.0f} MiB |")
lines.append(f"| **both phases, all samples** | {n_detect} + {n_ablate} | {ours_total:.1f} s total | {ref_total:.1f} s total "
             f"| **{summary['overall_speedup']:.1f}×** | | |")
ag = summary["agreement"]
lines += [
    "",
    f"Attention held per detection forward (largest sample): reference {mib(d['attention_bytes_max'])} "
    f"(layers × heads × T² × 4 B), headscope {mib(d['headscope_captured_attention_bytes_max'])} "
    f"(captured rows only: question → last answer row, × T).",
    "",
    f"Same results: prompt identical: {ag['prompt_matches']}; detection answers {ag['detect_answers']}, needles "
    f"{ag['detect_needles']}, summed attention max |Δ| {ag['summed_attention_max_abs_diff']:.1e}, top-10 sets "
    f"equal {ag['top10_sets_agree']} (min overlap {ag['top10_min_overlap']}/10); ablation clean answers "
    f"{ag['ablate_clean_answers']}, regenerated answers identical {ag['ablate_answers']} "
    f"({100 * ag['ablate_answer_agreement_rate']:.0f} %), correctness {ag['ablate_correctness']}.",
    "",
    f"Prompts {summary['prompt_tokens'][0]}–{summary['prompt_tokens'][1]} tokens; the reference made "
    f"{a['generate_calls']} `generate` calls for ablation (one per sample × condition, plus the clean answer). "
    "headscope does more per sample than the reference: its detection (the attention rows its answer's generation "
    "recorded, no second forward) also yields retrieval and summed attention to the answer's tokens (QRHead's "
    "null-query pass runs only when qrhead is a method), and each ablated condition also gets the clean answer's "
    "log-prob; the reference computes only what is compared. "
    "Seconds per sample exclude model loading (headscope's printed load time is subtracted from the phase's wall "
    "time; the reference times each sample). Peak RSS is per phase process (`/usr/bin/time`).",
    "",
    "Load average (1 min) at each phase's start, on this 2-core machine: "
    + ", ".join(f"{k.replace('_', ' ')} {float(v[0]):.1f}" for k, v in summary["loadavg_1_5_15_at_phase_start"].items())
    + " (above 2, other work shared the cores and the times are less certain).",
    "",
    f"Re-run: `DATA={data} TRAIN_PER_CATEGORY={train_n} TEST_PER_CATEGORY={test_n} KS={ks} DRAWS={draws} METHOD={method} "
    f"POSITIONS={positions} THREADS={threads} HEADSCOPE_VENV=<venv> benches/study_compare.sh` (settings: the script's header).",
]
(out / f"{name}.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
