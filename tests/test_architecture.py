"""The shape of the code: no import circles, common/ imports no model, no paper imports another,
and importing any library module leaves the process as it was.

The import graph is read from the source (every import statement, also those inside functions,
and importlib calls with a literal name), so lazy imports count like top-level ones.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ('common', 'coconet', 'musicvae', 'pianonet', 'cpword', 'studio', 'experiments')
PAPERS = ('coconet', 'musicvae', 'pianonet', 'cpword')
# Which package may import which (DESIGN.md: experiments -> studio -> papers -> common).
ALLOWED = {
    'common': {'common'},
    **{paper: {paper, 'common'} for paper in PAPERS},
    'studio': {'studio', 'common', *PAPERS},
    'experiments': {'experiments', 'studio', 'common', *PAPERS},
}


def library_modules() -> dict[str, str]:
  """Dotted module name -> source path, for every module of the library packages."""
  modules = {}
  for package in PACKAGES:
    for folder, _, files in os.walk(os.path.join(REPO, package)):
      for name in files:
        if name.endswith('.py'):
          path = os.path.join(folder, name)
          dotted = os.path.relpath(path, REPO)[:-3].replace(os.sep, '.')
          modules[dotted.removesuffix('.__init__')] = path
  return modules


def _resolve(name: str, modules: dict[str, str]) -> str | None:
  """The library module that `import name` loads (a package's __init__ for a package)."""
  while name:
    if name in modules:
      return name
    name = name.rpartition('.')[0]
  return None


def imports_of(path: str, modules: dict[str, str]) -> set[str]:
  """The library modules that the file at `path` imports anywhere in its body."""
  tree = ast.parse(open(path).read(), path)
  found = set()
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [f'{node.module}.{alias.name}' for alias in node.names] + [node.module]
    elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and node.func.attr == 'import_module'):
      arg = node.args[0] if node.args else None
      if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
        raise AssertionError(f'{path}:{node.lineno}: importlib with a computed name hides an '
                             'import from the graph; import explicitly')
      names = [arg.value]
    for name in names:
      target = _resolve(name, modules)
      if target is not None:
        found.add(target)
  return found


def import_graph() -> dict[str, set[str]]:
  modules = library_modules()
  graph = {}
  for name, path in modules.items():
    own_package = name.rpartition('.')[0] if path.endswith('__init__.py') else name
    # `from pkg import mod` inside pkg/__init__ is not a cycle with pkg itself.
    graph[name] = {m for m in imports_of(path, modules) if m != name and m != own_package}
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import cycle as a list of modules (first == last), or None."""
  state: dict[str, int] = {}  # 1: on the current path, 2: done
  path: list[str] = []

  def visit(node: str) -> list[str] | None:
    state[node] = 1
    path.append(node)
    for nxt in sorted(graph.get(node, ())):
      # A package's __init__ is loaded before its modules; edges to it are not back-edges here.
      if nxt in node.split('.')[:1] and nxt != node:
        continue
      if state.get(nxt) == 1:
        return path[path.index(nxt):] + [nxt]
      if nxt not in state:
        cycle = visit(nxt)
        if cycle:
          return cycle
    path.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return None


def test_the_walker_sees_lazy_and_importlib_imports(tmp_path):
  path = tmp_path / 'm.py'
  path.write_text('def f():\n  from coconet import model\n  import importlib\n'
                  '  importlib.import_module("cpword.tokens")\n')
  modules = {'coconet.model': '', 'cpword.tokens': '', 'coconet': '', 'cpword': ''}
  assert imports_of(str(path), modules) == {'coconet.model', 'cpword.tokens', 'coconet'}
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert find_cycle({'a': {'b'}, 'b': set()}) is None


def test_no_import_cycles():
  cycle = find_cycle(import_graph())
  assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


def test_arrows_point_one_way():
  wrong = sorted(f'{module} imports {target}'
                 for module, targets in import_graph().items()
                 for target in targets
                 if target.split('.')[0] not in ALLOWED[module.split('.')[0]])
  assert not wrong, '\n'.join(wrong)


_SNAPSHOT = '''
import ctypes, json, os, sys, threading
before_flags = os.environ.get('XLA_FLAGS')
before_threads = {t.name for t in threading.enumerate()}
import jax
before_config = {k: repr(v) for k, v in jax.config.values.items()}
import importlib
for name in sys.argv[1:]:
  importlib.import_module(name)
after_config = {k: repr(v) for k, v in jax.config.values.items()}
from common import malloc
print(json.dumps(dict(
    flags_unchanged=os.environ.get('XLA_FLAGS') == before_flags,
    config_unchanged=after_config == before_config,
    malloc_untouched=not malloc.is_tuned(),
    new_threads=sorted({t.name for t in threading.enumerate()} - before_threads))))
'''


def is_entry_point(path: str) -> bool:
  """Whether a module defines command-line flags at import (an absl entry point's job)."""
  tree = ast.parse(open(path).read(), path)
  for node in tree.body:
    value = getattr(node, 'value', None)
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and (
        value.func.attr.startswith('DEFINE_') or value.func.attr == 'mark_flags_as_required'):
      return True
  return False


def test_importing_the_library_changes_nothing_global():
  """Every library module (all but the entry points, whose job is the process) imported in a
  fresh interpreter: XLA_FLAGS, jax's config and malloc stay as they were, no thread starts, no
  warning is printed."""
  import json  # pylint: disable=g-import-not-at-top
  modules = library_modules()
  names = sorted(name for name, path in modules.items() if not is_entry_point(path))
  assert 'common.training' in names and 'experiments.registry' in names
  assert 'experiments.generate' not in names
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  run = subprocess.run([sys.executable, '-W', 'always', '-c', _SNAPSHOT, *names], env=env,
                       capture_output=True, text=True, cwd=REPO)
  assert run.returncode == 0, run.stderr[-3000:]
  # Third-party imports that warn about what this project never uses (pydub's missing ffmpeg,
  # through note_seq) happen behind common.midi's filter, so no command prints them.
  assert 'ffmpeg' not in run.stderr, run.stderr[-2000:]
  result = json.loads(run.stdout.strip().splitlines()[-1])
  assert result == dict(flags_unchanged=True, config_unchanged=True, malloc_untouched=True,
                        new_threads=[]), result


def entry_points_imported_by_tests() -> list[str]:
  """The experiments entry points that some test imports into pytest's own process."""
  names = set()
  for root, _, files in os.walk(os.path.join(REPO, 'tests')):
    for name in files:
      if name.endswith('.py'):
        text = open(os.path.join(root, name)).read()
        names.update(re.findall(r'^\s*from experiments import (\w+)', text, re.MULTILINE))
  return sorted(f'experiments.{name}' for name in names
                if is_entry_point(os.path.join(REPO, 'experiments', f'{name}.py')))


def test_entry_points_the_tests_import_share_one_process():
  """pytest imports every test module into one process, so the entry points they import must
  not define the same absl flag twice (a DuplicateFlagError stops the whole collection)."""
  names = entry_points_imported_by_tests()
  assert 'experiments.benchmark' in names
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  code = 'import importlib, sys\nfor name in sys.argv[1:]: importlib.import_module(name)'
  run = subprocess.run([sys.executable, '-c', code, *names], env=env, capture_output=True,
                       text=True, cwd=REPO)
  assert run.returncode == 0, run.stderr[-2000:]
