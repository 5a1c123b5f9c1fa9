"""The package's shape: dependencies run one way, and no function grows past what a reader takes in at once.

    lower core  ◄──  io/  ◄──  upper core  ◄──  tools/        (each arrow points at what is imported)

    lower core   config, model, tokenizer, pooling, weights, ...: imports nothing outside itself
    io/          files, checkpoints, downloads, ...: builds the lower core's objects, never the upper core's
    upper core   encoder, multitask, data, evaluate, train: calls io/ to find, check and write files
    tools/       the command line, trace, plot, corpus: may import anything; nothing imports it

Every import counts, at the top of a file or inside a function.
"""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "minimt"
LOWER = {"config", "model", "tokenizer", "pooling", "weights", "similarity", "metrics", "objectives", "freeze",
         "errors", "devices", "util"}
UPPER = {"encoder", "multitask", "data", "evaluate", "train"}
MAX_FUNCTION_LINES = 80


def module_name(path):
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path):
    """The minimt modules `path` imports (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("minimt"):
            for alias in node.names:  # `from minimt.io import files` imports the module minimt.io.files
                sub = f"{node.module}.{alias.name}"
                found.add(sub if (PKG.parent / (sub.replace(".", "/") + ".py")).exists() else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("minimt")}
    return found


def graph():
    return {module_name(p): imports(p) for p in PKG.rglob("*.py")}


def room(module):
    parts = module.split(".")
    if len(parts) == 1:
        return "api"  # minimt/__init__.py: the public names, re-exported
    if parts[1] in ("io", "tools"):
        return parts[1]
    return "lower" if parts[1] in LOWER else "upper" if parts[1] in UPPER else "api"


ALLOWED = {"lower": {"lower"}, "io": {"lower", "io"}, "upper": {"lower", "io", "upper"},
           "tools": {"lower", "io", "upper", "tools", "api"}, "api": {"lower", "io", "upper", "api", "tools"}}


def test_every_core_module_is_placed_in_a_room():
    core = {p.stem for p in PKG.glob("*.py")} - {"__init__", "__main__"}
    assert core <= LOWER | UPPER, f"place these in LOWER or UPPER: {sorted(core - LOWER - UPPER)}"


def test_dependencies_run_one_way():
    wrong = [f"{m} imports {d}" for m, deps in graph().items() for d in sorted(deps)
             if room(d) not in ALLOWED[room(m)] and m != "minimt.__main__"]
    assert not wrong, "imports against the direction core -> io -> tools:\n  " + "\n  ".join(wrong)


def test_no_import_circle():
    g = graph()
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for d in sorted(g.get(m, ())):
            if d == "minimt" or d not in g:
                continue
            if state.get(d) == "open":
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import circles:\n  " + "\n  ".join(cycles)


def test_no_function_is_longer_than_a_screen():
    long = []
    for p in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{p.relative_to(PKG.parent)}:{node.lineno} {node.name}: {n} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n  " + "\n  ".join(long)


def test_model_py_is_public_pytorch_and_short():
    text = (PKG / "model.py").read_text(encoding="utf-8")
    private = [w for w in ("torch.ops", "aten.", "_version", "torch._") if w in text]
    assert not private, f"model.py uses private PyTorch names: {private}"
    n = len(text.splitlines())
    assert n <= 260, f"model.py has {n} lines; the budget is 260"
