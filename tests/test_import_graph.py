"""No import cycle among mtl_jax modules, lazy (function-level) imports included.

A cycle hidden behind a lazy import still makes module A need B and B need A, so
the import order decides what works; every edge must point one way (the
interface or registry below, the implementations above). Static (``ast``), so it
costs no import.
"""

import ast
import os

from conftest import ROOT


def _modules():
  out = {}
  for d, _, files in os.walk(os.path.join(ROOT, "mtl_jax")):
    for f in files:
      if f.endswith(".py"):
        name = os.path.relpath(os.path.join(d, f), ROOT)[:-3].replace(os.sep, ".")
        out[name[:-len(".__init__")] if name.endswith(".__init__") else name] = os.path.join(d, f)
  return out


def _edges(modules):
  """module -> the mtl_jax modules it imports (``from pkg import sub`` names the submodule)."""
  edges = {}
  for name, path in modules.items():
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    deps = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
      if isinstance(node, ast.Import):
        deps |= {a.name for a in node.names if a.name in modules}
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          parts = package.split(".")[:len(package.split(".")) - node.level + 1]
          base = ".".join(parts + ([node.module] if node.module else []))
        for a in node.names:
          sub = f"{base}.{a.name}"
          deps.add(sub if sub in modules else base)
    edges[name] = {d for d in deps if d in modules and d != name}
  return edges


def _cycles(edges):
  """Strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(edges[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        found.append(sorted(comp))

  for v in sorted(edges):
    if v not in index:
      visit(v)
  return found


def test_cycle_finder_finds_a_lazy_cycle():
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
  assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_mtl_jax_modules():
  modules = _modules()
  edges = _edges(modules)
  assert "mtl_jax.weighting.factory" in edges["mtl_jax.run"]
  assert "mtl_jax.optim" in edges["mtl_jax.config_validation"]
  assert _cycles(edges) == [], "import cycles (give each a direction)"
