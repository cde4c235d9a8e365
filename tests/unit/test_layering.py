"""The layering of DESIGN.md, read from every module's imports (ast: top-level and inside functions alike).
A package imports only itself and the layers below it, and no two modules import each other (directly or
round a longer loop)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = [                      # bottom first
    ["verifiers"],              # records (Sample, Verdict), verifier functions, the sandbox
    ["data", "modeling"],         # tokenizer, corpus, shards, tasks, pairs, knowledge base, retrieval; model loading
    ["tools"],                  # the tool contract, built-in tools, the episode Environment
    ["rollout", "rewards"],     # engines and weight sync; reward composition and reward-model serving
    ["evals"],                  # evaluation suites, metrics and plots
    ["trainers"],               # learners, losses, stage loops, the report
    ["cluster"],                # the driver: config, Ray roles, the pipeline, the CLI
]
LAYER = {package: level for level, packages in enumerate(LAYERS) for package in packages}
SUBLAYERS = {"trainers": ["losses", "learners", "loops"]}   # bottom first; the package's own modules (its
                                                            # config) sit below them all


def modules() -> dict[str, Path]:
    found = {}
    for package in LAYER:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> list[tuple[int, str]]:
    """(line, module) of every import of one of our modules in `path`."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name.partition(".")[0] in LAYER:
                out.add((node.lineno, name))
    return sorted(out)


def sublayer(module: str) -> int:
    """0 for a package's own modules, else 1 + the index of its subpackage in SUBLAYERS."""
    package, _, rest = module.partition(".")
    order = SUBLAYERS.get(package, [])
    sub = rest.partition(".")[0]
    return 1 + order.index(sub) if sub in order else 0


def upward_imports(known: dict[str, Path]) -> list[str]:
    bad = []
    for name, path in known.items():
        package = name.partition(".")[0]
        for line, target in imports(path, known):
            other = target.partition(".")[0]
            if other != package and LAYER[other] >= LAYER[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target} ({package}, layer {LAYER[package]}, "
                           f"may import only {', '.join(p for p in LAYER if LAYER[p] < LAYER[package]) or 'itself'})")
            elif other == package and sublayer(target) > sublayer(name):
                below = ["its own modules"] + SUBLAYERS[package][:sublayer(name) - 1] if sublayer(name) else ["none of " + ", ".join(SUBLAYERS[package])]
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target} (inside {package}: "
                           f"{' < '.join(SUBLAYERS[package])}; {name} may import {', '.join(below)})")
    return bad


def import_cycles(known: dict[str, Path]) -> list[list[str]]:
    graph = {name: sorted({t for _, t in imports(path, known) if t != name and t in known})
             for name, path in known.items()}
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node)
    return cycles


def test_no_package_imports_one_above_it():
    known = modules()
    assert len(known) > 70                     # the walk found the tree
    assert upward_imports(known) == []


def test_no_modules_import_each_other():
    assert import_cycles(modules()) == []


def test_the_check_sees_an_upward_import_inside_a_function(tmp_path, monkeypatch):
    """A planted `from cluster.config import JobConfig` inside a function of rollout/ is caught."""
    known = modules()
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    from cluster.config import JobConfig\n    return JobConfig\n")
    known["rollout.planted"] = planted
    monkeypatch.setattr(Path, "relative_to", lambda self, other: self)
    assert [b.split(" imports ")[1].split(" ")[0] for b in upward_imports(known)] == ["cluster.config"]


def test_the_check_sees_a_loss_that_imports_a_learner(tmp_path, monkeypatch):
    """Inside trainers, losses < learners < loops: a planted import of a learner in losses/ is caught, and one
    of a loss in loops/ is not."""
    known = modules()
    planted, fine = tmp_path / "planted.py", tmp_path / "fine.py"
    planted.write_text("from trainers.learners.learner import Learner\n")
    fine.write_text("from trainers.losses.rl import policy_loss\nfrom trainers.config import LearnerConfig\n")
    known["trainers.losses.planted"], known["trainers.loops.fine"] = planted, fine
    monkeypatch.setattr(Path, "relative_to", lambda self, other: self)
    assert [b.split(" imports ")[1] for b in upward_imports(known)] == [
        "trainers.learners.learner (inside trainers: losses < learners < loops; trainers.losses.planted may import "
        "its own modules)"]
