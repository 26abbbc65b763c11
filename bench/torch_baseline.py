#!/usr/bin/env python3
"""PyTorch and ONNX Runtime baselines for `dwell bench`: the same cases, embedded with
transformers, and (with --ort) with the same model exported by torch.onnx and run by
ONNX Runtime.

`dwell bench --python PYTHON` prepares the cases and runs this script on them with the
same thread count, passes, loads and batch size, then prints both side by side
(docs/BENCH.md): once with `--part whole-run` after each of its own whole runs (the
two alternate, so that drift in the host's speed touches both alike), and once with
`--part cases` after its own case measurements. It can also be run by hand on cases
that `dwell bench` prepared:

    python3 -m venv .venv && .venv/bin/pip install torch transformers safetensors \\
        onnxruntime onnx onnxscript
    .venv/bin/python bench/torch_baseline.py --cases target/bench-cases --threads 2 \\
        --ort --out target/bench-cases/torch.json

What is timed: only what the model computes. For each case, each
`AutoModelForSequenceClassification.from_pretrained` + `.eval()` (load time), the
tokenising of the probe (batches of --batch-size texts in probe order, each padded to
its longest, as a typical user does), and, under `torch.inference_mode()`, one
untimed warm-up pass and --passes timed passes of

    out = model.bert(**batch); cls = out.last_hidden_state[:, 0]
    logits = model.classifier(out.pooler_output)

over the whole probe (the same computation as `model(**batch).logits`, keeping the
[CLS] row). The whole run (cases/minilm/run) loads and tokenises each checkpoint
untimed and times one pass each; its figure is the sum of those passes alone. Python's
start-up and the imports of torch and transformers are never timed.

ONNX Runtime (--ort), the strongest CPU baseline a user would pick: the same
computation (input_ids, attention_mask -> the [CLS] row of the last hidden state and
the logits) exported with `torch.onnx.export(dynamo=True)`, batch and sequence
dynamic, into <case>/onnx/<checkpoint>.v2.onnx (written once and kept: the case folder
is replaced whenever the case changes); an InferenceSession on the CPU provider with
intra_op_num_threads = --threads, inter_op_num_threads = 1 and every graph
optimisation on; the probe tokenised once, sorted by length (longest first) and cut
into batches of --batch-size padded to their longest, so that ORT pads as little as
dwell's candle backend does. Timed: one warm-up pass, then --passes passes of
session.run over every batch (tokenising, export and session creation not counted;
the session's creation is reported beside them). The whole run exports each
checkpoint once and times one sorted pass each.

Peak RSS: as in dwell, /proc/self/clear_refs resets the peak at the start of a case
and again before the passes, and /proc/self/status's VmHWM is read after each part; it
includes the interpreter and torch itself, which is why the RSS at the case's start is
reported too. The whole process's peak (imports included) is reported beside it: the
largest VmHWM seen across the resets (ru_maxrss only without /proc, since Linux carries
the spawning process's peak over into a child's ru_maxrss).

Output JSON (--out), schema "dwell.torch-baseline/1"; `dwell bench` reads it back.
Times in seconds, memory in bytes:

    {
      "schema": "dwell.torch-baseline/1",
      "torch": str, "transformers": str, "python": str,
      "threads": int, "interop_threads": 1, "batch_size": int,
      "cases": {
        "<case folder name>": {
          "texts": int, "max_len": int,
          "load_seconds": [float],          # each from_pretrained + eval()
          "tokenize_seconds": float,        # tokenizer load + every batch tokenised, once
          "pass_seconds": [float],          # the timed passes (not the warm-up)
          "tokens": int,                    # real tokens: attention_mask summed
          "padded_tokens": int,             # rows x padded length, summed over batches
          "rss_at_start_bytes": int | null, # null: /proc/self/clear_refs not writable
          "loading_peak_rss_bytes": int | null,
          "embedding_peak_rss_bytes": int | null,
          "process_max_rss_bytes": int,     # whole process so far, imports included
          "attn_implementation": str,       # model.config._attn_implementation
          "parity": {"cls_max_abs_diff": float,
                     "logits_max_abs_diff": float | null} | null,
                                            # against <case>/dwell-output.safetensors
          "ort": {"session_seconds": float, # InferenceSession created, once
                  "pass_seconds": [float],  # the timed sorted passes
                  "padded_tokens": int,     # as above, for the sorted batches
                  "parity": as above | null} | null   # null without --ort
        }
      },
      "onnxruntime": str | null,            # its version; null without --ort
      "whole_run": {"checkpoints": int, "steps": [int], "pass_seconds": [float],
                    "total_seconds": float,
                    "ort_pass_seconds": [float] | null} | null
    }
"""

import argparse
import gc
import json
import os
import platform
import re
import resource
import statistics
import sys
import time
from pathlib import Path

SCHEMA = "dwell.torch-baseline/2"
ONNX_EXPORT_VERSION = "v2"
CASES = ["minilm", "bert-base"]


def parse_args():
    parser = argparse.ArgumentParser(
        description="Embed dwell bench's cases with PyTorch and time the passes."
    )
    parser.add_argument("--cases", type=Path, required=True, help="dwell bench's --cases folder")
    parser.add_argument("--threads", type=int, required=True, help="torch intra-op threads")
    parser.add_argument("--passes", type=int, default=3, help="timed passes after one warm-up")
    parser.add_argument("--loads", type=int, default=5, help="timed model loads per case")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")
    parser.add_argument(
        "--only", action="append", choices=CASES, help="a case to run (repeatable; default all present)"
    )
    parser.add_argument(
        "--part",
        choices=["all", "cases", "whole-run"],
        default="all",
        help="the cases, the whole run, or both (dwell bench alternates whole runs with its own)",
    )
    parser.add_argument(
        "--ort", action="store_true", help="time ONNX Runtime on the exported model too"
    )
    parser.add_argument("--out", type=Path, required=True, help="where the JSON results go")
    args = parser.parse_args()
    for name in ("threads", "passes", "loads", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


# The process's peak RSS from before the last reset of VmHWM.
process_peak_before_reset = 0


def reset_peak_rss():
    """Lowers VmHWM to the current RSS; False where Linux's clear_refs is not available."""
    global process_peak_before_reset
    try:
        process_peak_before_reset = max(process_peak_before_reset, rss_now_and_peak()[1])
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except (OSError, KeyError):
        return False


def rss_now_and_peak():
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def process_max_rss():
    """The whole process's peak RSS, imports included.

    Not ru_maxrss where VmHWM can be read: Linux carries the spawning process's peak
    over into a child's ru_maxrss, so under `dwell bench` it would report dwell's peak.
    """
    try:
        return max(process_peak_before_reset, rss_now_and_peak()[1])
    except (OSError, KeyError):
        # ru_maxrss is in kilobytes on Linux.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def read_texts(probe):
    texts = []
    with open(probe, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    texts.append(json.loads(line)["text"])
                except (ValueError, KeyError) as error:
                    sys.exit(f"{probe}: line {number}: {error}")
    return texts


def tokenize(tokenizer, texts, batch_size, max_len):
    return [
        tokenizer(
            texts[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=max_len,
            return_tensors="pt",
        )
        for start in range(0, len(texts), batch_size)
    ]


def embed(torch, model, batches):
    """One pass over the probe: [CLS] rows and logits, in probe order."""
    cls_rows, logits_rows = [], []
    for batch in batches:
        out = model.bert(**batch)
        cls_rows.append(out.last_hidden_state[:, 0])
        logits_rows.append(model.classifier(out.pooler_output))
    return torch.cat(cls_rows), torch.cat(logits_rows)


def load_model(torch, checkpoint):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, dtype=torch.float32)
    return model.eval()


def parity(case_dir, cls, logits):
    """Largest differences from dwell's last pass (torch tensors or numpy arrays)."""
    path = case_dir / "dwell-output.safetensors"
    if not path.is_file():
        return None
    from safetensors.numpy import load_file

    dwell = load_file(str(path))
    cls, logits = (value.numpy() if hasattr(value, "numpy") else value for value in (cls, logits))
    if tuple(dwell["cls"].shape) != tuple(cls.shape):
        sys.exit(f"{path}: cls has shape {tuple(dwell['cls'].shape)}, the baseline gives {tuple(cls.shape)}")
    result = {"cls_max_abs_diff": float(abs(dwell["cls"] - cls).max()), "logits_max_abs_diff": None}
    if "logits" in dwell:
        result["logits_max_abs_diff"] = float(abs(dwell["logits"] - logits).max())
    return result


def embedding_module(torch, model):
    """The module exported to ONNX: ids and mask in, the [CLS] row and logits out, as
    `embed` computes them."""

    class Embedding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            out = self.model.bert(input_ids=input_ids, attention_mask=attention_mask)
            return out.last_hidden_state[:, 0], self.model.classifier(out.pooler_output)

    return Embedding().eval()


def onnx_model(torch, checkpoint, case_dir):
    """<case>/onnx/<checkpoint>.onnx, exported on first use (written aside, then renamed)."""
    # The version in the name keeps files of an older export recipe from being reused.
    path = case_dir / "onnx" / f"{checkpoint.name}.{ONNX_EXPORT_VERSION}.onnx"
    if path.is_file():
        return path
    path.parent.mkdir(exist_ok=True)
    model = load_model(torch, checkpoint)
    # The example batch must pad: traced with a mask of ones, transformers' attention
    # drops the mask as unneeded, and the exported graph then ignores padding.
    ids = torch.ones((2, 8), dtype=torch.int64)
    mask = torch.ones((2, 8), dtype=torch.int64)
    mask[1, 5:] = 0
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", max=512)
    dims = {0: batch, 1: length}
    partial = path.with_suffix(".onnx.partial")
    print(f"ONNX: exporting {checkpoint} to {path}", flush=True)
    torch.onnx.export(
        embedding_module(torch, model),
        (ids, mask),
        str(partial),
        input_names=["input_ids", "attention_mask"],
        output_names=["cls", "logits"],
        dynamic_shapes={"input_ids": dims, "attention_mask": dims},
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    partial.rename(path)
    return path


def ort_session(ort, path, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def sorted_batches(tokenizer, texts, batch_size, max_len):
    """(probe order of the sorted texts, numpy batches sorted longest first, each padded
    to its longest)."""
    encoded = tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]
    order = sorted(range(len(texts)), key=lambda index: -len(encoded[index]))
    batches = []
    for start in range(0, len(order), batch_size):
        rows = [{"input_ids": encoded[index]} for index in order[start : start + batch_size]]
        padded = tokenizer.pad(rows, padding=True, return_tensors="np", return_attention_mask=True)
        batches.append(
            {
                "input_ids": padded["input_ids"].astype("int64"),
                "attention_mask": padded["attention_mask"].astype("int64"),
            }
        )
    return order, batches


def ort_pass(session, order, batches):
    """One pass over the sorted batches: [CLS] rows and logits, back in probe order."""
    import numpy

    outputs = [session.run(None, batch) for batch in batches]
    cls = numpy.concatenate([out[0] for out in outputs])
    logits = numpy.concatenate([out[1] for out in outputs])
    inverse = numpy.empty(len(order), dtype=numpy.int64)
    inverse[order] = numpy.arange(len(order))
    return cls[inverse], logits[inverse]


def measure_ort_case(torch, ort, case_dir, texts, max_len, args):
    from transformers import AutoTokenizer

    checkpoint = case_dir / "checkpoint"
    path = onnx_model(torch, checkpoint, case_dir)
    started = time.perf_counter()
    session = ort_session(ort, path, args.threads)
    session_seconds = time.perf_counter() - started
    order, batches = sorted_batches(AutoTokenizer.from_pretrained(checkpoint), texts, args.batch_size, max_len)
    cls, logits = ort_pass(session, order, batches)
    pass_seconds = []
    for _ in range(args.passes):
        started = time.perf_counter()
        cls, logits = ort_pass(session, order, batches)
        pass_seconds.append(time.perf_counter() - started)
    return {
        "session_seconds": session_seconds,
        "pass_seconds": pass_seconds,
        "padded_tokens": sum(batch["input_ids"].size for batch in batches),
        "parity": parity(case_dir, cls, logits),
    }


def measure_case(torch, ort, case_dir, args):
    from transformers import AutoTokenizer

    manifest = json.loads((case_dir / "case.json").read_text())
    max_len = manifest["max_len"]
    checkpoint = case_dir / "checkpoint"
    texts = read_texts(case_dir / "probe.jsonl")

    gc.collect()
    measured = reset_peak_rss()
    rss_at_start = rss_now_and_peak()[0] if measured else None
    load_seconds = []
    model = None
    for _ in range(args.loads):
        # The previous copy goes first, so that the peak holds one model.
        model = None
        gc.collect()
        started = time.perf_counter()
        model = load_model(torch, checkpoint)
        load_seconds.append(time.perf_counter() - started)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    batches = tokenize(tokenizer, texts, args.batch_size, max_len)
    tokenize_seconds = time.perf_counter() - started
    loading_peak = rss_now_and_peak()[1] if measured else None

    measured = measured and reset_peak_rss()
    pass_seconds = []
    with torch.inference_mode():
        cls, logits = embed(torch, model, batches)
        for _ in range(args.passes):
            started = time.perf_counter()
            cls, logits = embed(torch, model, batches)
            pass_seconds.append(time.perf_counter() - started)
    embedding_peak = rss_now_and_peak()[1] if measured else None

    return {
        "texts": len(texts),
        "max_len": max_len,
        "load_seconds": load_seconds,
        "tokenize_seconds": tokenize_seconds,
        "pass_seconds": pass_seconds,
        "tokens": sum(int(batch["attention_mask"].sum()) for batch in batches),
        "padded_tokens": sum(batch["input_ids"].numel() for batch in batches),
        "rss_at_start_bytes": rss_at_start,
        "loading_peak_rss_bytes": loading_peak,
        "embedding_peak_rss_bytes": embedding_peak,
        "process_max_rss_bytes": process_max_rss(),
        "attn_implementation": model.config._attn_implementation,
        "parity": parity(case_dir, cls, logits),
        # After PyTorch's figures, so that exporting touches none of them.
        "ort": measure_ort_case(torch, ort, case_dir, texts, max_len, args) if ort else None,
    }


def measure_whole_run(torch, ort, case_dir, args):
    """One timed pass per checkpoint of the run; loading and tokenising are not timed.
    With ONNX Runtime, after PyTorch's passes: one sorted pass per exported checkpoint."""
    from transformers import AutoTokenizer

    max_len = json.loads((case_dir / "case.json").read_text())["max_len"]
    texts = read_texts(case_dir / "probe.jsonl")
    checkpoints = sorted(
        (
            (int(match.group(1)), path)
            for path in (case_dir / "run").iterdir()
            if (match := re.fullmatch(r"checkpoint-(\d+)", path.name)) and path.is_dir()
        ),
    )
    pass_seconds = []
    for _, checkpoint in checkpoints:
        model = load_model(torch, checkpoint)
        batches = tokenize(AutoTokenizer.from_pretrained(checkpoint), texts, args.batch_size, max_len)
        with torch.inference_mode():
            started = time.perf_counter()
            embed(torch, model, batches)
            pass_seconds.append(time.perf_counter() - started)
        model = None
        gc.collect()
    ort_pass_seconds = None
    if ort:
        # Exported before any is timed: a first run exports twelve models.
        paths = [onnx_model(torch, checkpoint, case_dir) for _, checkpoint in checkpoints]
        ort_pass_seconds = []
        for (_, checkpoint), path in zip(checkpoints, paths):
            session = ort_session(ort, path, args.threads)
            order, batches = sorted_batches(
                AutoTokenizer.from_pretrained(checkpoint), texts, args.batch_size, max_len
            )
            started = time.perf_counter()
            ort_pass(session, order, batches)
            ort_pass_seconds.append(time.perf_counter() - started)
            session = None
    return {
        "checkpoints": len(checkpoints),
        "steps": [step for step, _ in checkpoints],
        "pass_seconds": pass_seconds,
        "total_seconds": sum(pass_seconds),
        "ort_pass_seconds": ort_pass_seconds,
    }


def summary(results):
    lines = [
        f"PyTorch baseline: torch {results['torch']}, transformers {results['transformers']}, "
        f"{results['threads']} threads, batch size {results['batch_size']}"
    ]
    for name, case in results["cases"].items():
        median = statistics.median(case["pass_seconds"])
        lines.append(
            f"  {name}: load {statistics.median(case['load_seconds']):.3f} s, "
            f"pass {median:.3f} s, {case['texts'] / median:.1f} texts/s, "
            f"{case['tokens'] / median:.1f} tokens/s, "
            f"padding {1 - case['tokens'] / case['padded_tokens']:.1%}, "
            f"attention {case['attn_implementation']}"
        )
        if case["parity"]:
            logits = case["parity"]["logits_max_abs_diff"]
            lines.append(
                f"    parity with dwell: max |diff| cls {case['parity']['cls_max_abs_diff']:.2e}, "
                f"logits {'-' if logits is None else f'{logits:.2e}'}"
            )
        if case["ort"]:
            ort_median = statistics.median(case["ort"]["pass_seconds"])
            lines.append(
                f"    ONNX Runtime {results['onnxruntime']}: pass {ort_median:.3f} s, "
                f"{case['texts'] / ort_median:.1f} texts/s, "
                f"padding {1 - case['tokens'] / case['ort']['padded_tokens']:.1%} (sorted batches)"
            )
    whole = results["whole_run"]
    if whole:
        lines.append(
            f"  whole run: {whole['checkpoints']} embedding passes, {whole['total_seconds']:.2f} s in all"
        )
        if whole["ort_pass_seconds"]:
            lines.append(f"  whole run, ONNX Runtime: {sum(whole['ort_pass_seconds']):.2f} s in all")
    return "\n".join(lines)


def main():
    args = parse_args()
    # The tokenizers library sizes its Rust thread pool from this; set before it loads.
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    import torch
    import transformers

    # Imported now, so that no timed load includes transformers' lazy import of BERT.
    from transformers import BertForSequenceClassification  # noqa: F401

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    transformers.utils.logging.disable_progress_bar()
    ort = None
    if args.ort:
        import onnxruntime as ort

        # Its own warnings (none expected) only; the exporter's progress lines stay.
        ort.set_default_logger_severity(3)

    names = args.only or [name for name in CASES if (args.cases / name / "case.json").is_file()]
    results = {
        "schema": SCHEMA,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
        "interop_threads": 1,
        "batch_size": args.batch_size,
        "onnxruntime": ort.__version__ if ort else None,
        "cases": {},
        "whole_run": None,
    }
    for name in names if args.part != "whole-run" else []:
        case_dir = args.cases / name
        if not (case_dir / "case.json").is_file():
            sys.exit(f"{case_dir}: no case.json; run `dwell bench` first to prepare the cases")
        print(f"PyTorch: measuring {name}", flush=True)
        results["cases"][name] = measure_case(torch, ort, case_dir, args)
    if args.part != "cases" and "minilm" in names and (args.cases / "minilm" / "run").is_dir():
        print("PyTorch: whole run", flush=True)
        results["whole_run"] = measure_whole_run(torch, ort, args.cases / "minilm", args)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(summary(results), flush=True)


if __name__ == "__main__":
    main()
