"""``--config.KEY=VALUE`` for every documented key on any config, type-checked; the resolved config.

ml_collections' config_flags can only override keys the config file sets
(``--config.sharing=fsdp`` on a file without ``sharing`` ends in an
AttributeError). Here a key's type comes from the schema
(``mtl_jax/config_keys.py``) or, inside an ``Options`` dict, from the
registered component's constructor (``model.trunk.dropout`` is a field of
the ``mlp`` trunk), whether or not the file sets it. An override creates the
key, and a None parent (``weighting=None``) becomes a dict; an unknown key
fails naming the nearest valid ones. ``resolve`` also fills the top-level
defaults: that is what ``--print_config`` prints and ``workdir/config.json``
stores.

Values: ``--config.num_train_steps=100``, ``--config.model.trunk.features=(64,64)``,
``--config.sharing=fsdp`` (a bare word is a string), ``--config.progress_bar``
/ ``--noconfig.progress_bar`` for booleans; lists and dicts as Python literals.
"""

import ast
import collections.abc
import copy
import dataclasses
import difflib
import importlib.util
import inspect
import json
import os
import re
import typing
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import ml_collections

from mtl_jax import config_keys
from mtl_jax.config_keys import BY_PATH, ConfigError, Options
from mtl_jax.data import DATASETS
from mtl_jax.models import SHARING, TRUNKS
from mtl_jax.models.dense_heads import DECODERS
from mtl_jax.weighting import AGGREGATORS
from mtl_jax.weighting.loss import LOSS_WEIGHTINGS

# The registries an ``Options`` selector names, by their kind ("trunk", "dataset", ...).
REGISTRIES = {r.kind: r for r in (DATASETS, SHARING, TRUNKS, AGGREGATORS, LOSS_WEIGHTINGS,
                                   DECODERS)}
# Constructor parameters the caller fills in, never config options.
_NOT_OPTIONS = ("self", "parent", "name", "groups", "num_tasks",
                "outputs")  # a dense decoder's output channels: from the task
_SELECTORS = tuple(s[0] for e in config_keys.SCHEMA if isinstance(e, Options) for s in e.selectors)
_FLAG = re.compile(r"^--?(no)?config\.([^=]*)(?:=(.*))?$", re.S)
_TRUE, _FALSE = ("true", "t", "yes", "1"), ("false", "f", "no", "0")


class Override(NamedTuple):
  path: str             # the key after "config."
  raw: Optional[str]    # the text after "="; None for a bare --config.KEY / --noconfig.KEY
  negated: bool = False

  @property
  def flag(self) -> str:
    return f"--{'no' if self.negated else ''}config.{self.path}" + (
        "" if self.raw is None else f"={self.raw}")


def split_argv(argv: Sequence[str]) -> Tuple[List[str], List[Override]]:
  """(the arguments for absl, the ``--config.KEY[=VALUE]`` overrides in order)."""
  rest, overrides = [], []
  for i, arg in enumerate(argv):
    if arg == "--":
      rest.extend(argv[i:])
      break
    m = _FLAG.match(arg) if i else None
    if m:
      overrides.append(Override(m.group(2), m.group(3), bool(m.group(1))))
    else:
      rest.append(arg)
  return rest, overrides


def load_config(spec: str) -> ml_collections.ConfigDict:
  """``get_config()`` of ``path.py``, or ``get_config(arg)`` for ``path.py:arg``."""
  path, colon, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"--config={spec}: no config file {path!r}")
  module_spec = importlib.util.spec_from_file_location("mtl_jax_config_file", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not callable(getattr(module, "get_config", None)):
    raise ConfigError(f"--config={spec}: {path} defines no get_config(arg)")
  config = module.get_config(arg) if colon else module.get_config()
  if not isinstance(config, (ml_collections.ConfigDict, dict)):
    raise ConfigError(f"--config={spec}: get_config returned {type(config).__name__}, "
                      "not a ConfigDict")
  return config


def resolve(config, overrides: Sequence[Override] = ()) -> ml_collections.ConfigDict:
  """``config`` (not modified) with ``overrides`` applied and the absent top-level defaults
  filled in, as a new unlocked ConfigDict."""
  return ml_collections.ConfigDict(config_keys.with_defaults(_apply(config, overrides)))


def to_json(config) -> str:
  """The form ``--print_config`` prints and ``workdir/config.json`` holds."""
  return json.dumps(json.loads(config.to_json()), indent=2, sort_keys=True)


def _apply(config, overrides: Sequence[Override]) -> Dict[str, Any]:
  base = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  for i, later in enumerate(overrides):  # a parent after its child would discard the child
    for earlier in overrides[:i]:
      if earlier.path.startswith(later.path + "."):
        raise ConfigError(f"{later.flag} comes after {earlier.flag} and would discard it; "
                          "give the parent first")
  # Which component an Options dict holds decides its keys' types, so the final selectors
  # (model.sharing, model.trunk.name, ...) are found first; they and their parents are strings
  # and dicts whatever the components are.
  selectors = copy.deepcopy(base)
  for o in overrides:
    if any(s == o.path or s.startswith(o.path + ".") for s in _SELECTORS):
      _set(selectors, o.path, parse_value(o, key_type(o.path, selectors)))
  tree = copy.deepcopy(base)
  for o in overrides:
    typ = key_type(o.path, selectors)
    value = parse_value(o, typ)
    _set(tree, o.path, value)
    if o.path in _SELECTORS and value:
      _check_name(o.path, value)
  return tree


# ---- which keys exist and their types -----------------------------------------------------

def key_type(path: str, tree: Dict[str, Any]) -> Any:
  """The annotation a value of ``config.<path>`` must fit; ConfigError for an unknown key.

  ``tree`` (the config as plain dicts) tells which component each Options dict holds.
  """
  parts = path.split(".")
  if not all(parts):
    raise ConfigError(f"--config.{path}: empty key component")
  entry = BY_PATH.get(path)
  parent = BY_PATH.get(".".join(parts[:-1]))
  if entry is not None:
    if isinstance(parent, Options):
      _check_option(parent, parts[-1], tree)
    return entry.type
  anchor = next((".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)
                 if ".".join(parts[:i]) in BY_PATH), None)
  owner = BY_PATH.get(anchor)
  if not isinstance(owner, Options) and _is_set(tree, path):
    # Not in the schema but set by the file (a key a fork added): its value's type, as
    # ml_collections does; config_validation still decides whether the key is valid.
    return _type_of(_lookup(tree, path))
  if anchor is None:
    raise _unknown(path, {k: _describe(k) for k in config_keys.TOP_LEVEL})
  rest = parts[len(anchor.split(".")):]
  if isinstance(owner, Options):
    typ = _check_option(owner, rest[0], tree)
  elif config_keys.children(anchor):
    raise _unknown(path, {f"{anchor}.{c}": _describe(f"{anchor}.{c}")
                          for c in config_keys.children(anchor)})
  else:
    typ, rest = owner.type, [anchor.rsplit(".", 1)[-1]] + rest
  for depth, key in enumerate(rest[1:], 1):  # inside a mapping-valued option (data.hide_rates.t)
    typ = _value_type(typ, ".".join(parts[:len(parts) - len(rest) + depth]), key)
  return typ


def _check_option(entry: Options, key: str, tree) -> Any:
  """The annotation of option ``key`` of the component ``entry`` holds (Any if unknown)."""
  found = _component(entry, tree)
  if found is None or key in entry.fixed:
    explicit = BY_PATH.get(f"{entry.path}.{key}")
    return explicit.type if explicit is not None else Any
  kind, name, options = found
  if key not in options:
    valid = {f"{entry.path}.{k}": _describe(f"{entry.path}.{k}", options.get(k), kind)
             for k in sorted(set(options) | set(entry.fixed))}
    raise _unknown(f"{entry.path}.{key}", valid, f" ({kind} {name!r} has no option {key!r})")
  explicit = BY_PATH.get(f"{entry.path}.{key}")
  return explicit.type if explicit is not None else options[key]


def _component(entry: Options, tree) -> Optional[Tuple[str, str, Dict[str, Any]]]:
  """(registry kind, name, {option: annotation}) of what ``entry`` holds; None if unnamed."""
  for sel_path, kind, default in entry.selectors:
    name = _lookup(tree, sel_path) or default
    if name:
      registry = REGISTRIES[kind]
      _registered(registry, sel_path, name)
      return kind, name, options_of(registry.get(name))
  return None


def _check_name(selector_path: str, name: str) -> None:
  kind = next(s[1] for e in config_keys.SCHEMA if isinstance(e, Options)
              for s in e.selectors if s[0] == selector_path)
  _registered(REGISTRIES[kind], selector_path, name)


def _registered(registry, selector_path: str, name: str) -> None:
  if name not in registry:
    close = difflib.get_close_matches(str(name), list(registry), n=3)
    raise ConfigError(f"config.{selector_path} = {name!r}: unknown {registry.kind}"
                      f"{'; did you mean ' + repr(close) if close else ''}; valid names: "
                      f"{list(registry)}")


def options_of(component) -> Dict[str, Any]:
  """{option: annotation} of a registered class, dataclass (flax module) or function."""
  if dataclasses.is_dataclass(component):
    try:
      hints = typing.get_type_hints(component)
    except Exception:  # pylint: disable=broad-except  (unresolvable forward references)
      hints = {}
    empty = inspect.Parameter.empty
    return {f.name: _annotation(hints.get(f.name, Any),
                                empty if f.default is dataclasses.MISSING else f.default)
            for f in dataclasses.fields(component) if f.init and f.name not in _NOT_OPTIONS}
  params = inspect.signature(component).parameters.values()
  return {p.name: _annotation(p.annotation, p.default) for p in params
          if p.name not in _NOT_OPTIONS and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _annotation(ann, default) -> Any:
  empty = inspect.Parameter.empty
  if ann is empty or isinstance(ann, str):
    ann = (type(default) if default is not empty and type(default) in (bool, int, float, str)
           else Any)
  if default is None and not _fit(None, ann)[0]:
    ann = Optional[ann]
  return ann


def _value_type(typ, path: str, key: str) -> Any:
  """The type of ``typ[key]`` for a mapping type; ConfigError for anything else."""
  for t in (typing.get_args(typ) if typing.get_origin(typ) is typing.Union else (typ,)):
    if t is Any:
      return Any
    origin = typing.get_origin(t) or t
    if origin in (dict, collections.abc.Mapping):
      args = typing.get_args(t)
      return args[1] if args else Any
  raise ConfigError(f"--config.{path}.{key}: config.{path} is {_type_name(typ)}, not a dict; "
                    f"set it whole: --config.{path}=VALUE")


def _unknown(path: str, valid: Dict[str, str], why: str = "") -> ConfigError:
  """The error for an unknown key: the nearest valid keys (difflib) with type and meaning."""
  leaf = path.rsplit(".", 1)[-1]
  by_leaf = {v.rsplit(".", 1)[-1]: v for v in valid}
  close = [by_leaf[c] for c in difflib.get_close_matches(leaf, list(by_leaf), n=3, cutoff=0.6)]
  described = dict(valid)
  if not close:  # the right name under another parent: route_heads -> model.route_heads
    close = [p for p in BY_PATH if p.rsplit(".", 1)[-1] == leaf][:3]
    described.update({p: _describe(p) for p in close})
  hint = "; nearest: " + "; ".join(f"{c} ({described[c]})" for c in close) if close else ""
  return ConfigError(f"unknown config key {path!r}{why}{hint}. Valid here: {sorted(valid)}")


def _describe(path: str, annotation=None, kind: str = "") -> str:
  """'an int, default 0: init and data-order seed' (schema keys), or a component option's type."""
  e = BY_PATH.get(path)
  if e is None:
    return f"{kind} option, {_type_name(annotation)}"
  default = ("" if e.default is config_keys.UNSET else ", required"
             if e.default is config_keys.MANDATORY else f", default {e.default!r}")
  return f"{_type_name(e.type)}{default}: {e.doc}"


# ---- values ------------------------------------------------------------------------------

def parse_value(o: Override, typ) -> Any:
  """The value of one override, parsed as a Python literal (or a bare string) and type-checked."""
  if o.raw is None:
    if not _fit(True, typ)[0]:
      raise ConfigError(f"{o.flag} needs a value ({_type_name(typ)}): --config.{o.path}=VALUE")
    return not o.negated
  if o.negated:
    raise ConfigError(f"{o.flag}: --noconfig. takes no value; use --config.{o.path}={o.raw}")
  if _accepts(typ, bool) and o.raw.strip().lower() in _TRUE + _FALSE:
    return o.raw.strip().lower() in _TRUE
  try:
    value = ast.literal_eval(o.raw)
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
    value = o.raw
  ok, fitted = _fit(value, typ)
  if ok:
    return fitted
  if _fit(o.raw, typ)[0]:  # a word that is a string here: --config.model.dtype=bfloat16
    return o.raw
  raise ConfigError(f"config.{o.path} = {o.raw!r}: must be {_type_name(typ)} ({o.flag})")


def _accepts(typ, t) -> bool:
  return typ is t or (typing.get_origin(typ) is typing.Union and t in typing.get_args(typ))


def _fit(v, t) -> Tuple[bool, Any]:
  """(whether ``v`` fits annotation ``t``, ``v`` with ints made floats where floats are asked)."""
  if t is Any or t is object:
    return True, v
  origin, args = typing.get_origin(t), typing.get_args(t)
  if origin is typing.Union:
    for a in args:
      ok, w = _fit(v, a)
      if ok:
        return True, w
    return False, v
  if t is type(None):
    return v is None, v
  if t is bool:
    return isinstance(v, bool), v
  if t is int:
    return isinstance(v, int) and not isinstance(v, bool), v
  if t is float:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    return ok, float(v) if ok else v
  if t is str:
    return isinstance(v, str), v
  base = origin or t
  if base in (dict, collections.abc.Mapping):
    if not isinstance(v, dict):
      return False, v
    if not args:
      return True, v
    fitted = {k: _fit(x, args[1]) for k, x in v.items()}
    ok = all(_fit(k, args[0])[0] for k in v) and all(f[0] for f in fitted.values())
    return ok, {k: f[1] for k, f in fitted.items()}
  if base in (list, tuple, collections.abc.Sequence):
    if not isinstance(v, (list, tuple)):
      return False, v
    if base is tuple and args and args[-1] is not Ellipsis:
      if len(args) != len(v):
        return False, v
      fitted = [_fit(x, a) for x, a in zip(v, args)]
    else:
      fitted = [_fit(x, args[0]) if args else (True, x) for x in v]
    container = base if base in (list, tuple) else type(v)
    return all(f[0] for f in fitted), container(f[1] for f in fitted)
  if isinstance(t, type):
    return isinstance(v, t), v
  return True, v  # an annotation this parser does not model (a TypeVar, a Protocol)


def _type_name(t, article: bool = True) -> str:
  """'an int', 'a float or None', 'a sequence of int' (``article=False``: 'int')."""
  if t is Any or t is object:
    return "any Python literal"
  origin, args = typing.get_origin(t), typing.get_args(t)
  if origin is typing.Union:
    return " or ".join(_type_name(a, article) for a in args)
  if t is type(None):
    return "None"
  names = {bool: ("True or False", "bool"), int: ("an int", "int"), float: ("a float", "float"),
           str: ("a string", "str")}
  if t in names:
    return names[t][0 if article else 1]
  base = origin or t
  if base in (dict, collections.abc.Mapping):
    return "a dict" if article else "dict"
  if base in (list, tuple, collections.abc.Sequence):
    if base is tuple and args and args[-1] is not Ellipsis:
      inner = f"({', '.join(_type_name(a, False) for a in args)})"
    else:
      inner = f" of {_type_name(args[0], False)}" if args else ""
    return ("a sequence" if article else "sequence") + inner
  return getattr(t, "__name__", str(t))


# ---- plain-dict helpers ------------------------------------------------------------------

def _lookup(tree, path: str):
  node = tree
  for k in path.split("."):
    if not isinstance(node, dict) or k not in node:
      return None
    node = node[k]
  return node


def _is_set(tree, path: str) -> bool:
  parent, _, key = path.rpartition(".")
  node = _lookup(tree, parent) if parent else tree
  return isinstance(node, dict) and key in node


def _type_of(value) -> Any:
  if value is None:
    return Any
  if isinstance(value, (list, tuple)):
    return Sequence
  return dict if isinstance(value, dict) else type(value)


def _set(tree: Dict[str, Any], path: str, value) -> None:
  parts = path.split(".")
  node = tree
  for i, k in enumerate(parts[:-1]):
    child = node.get(k)
    if child is None:
      child = node[k] = {}
    elif not isinstance(child, dict):
      raise ConfigError(f"--config.{path}: config.{'.'.join(parts[:i + 1])} is {child!r}, "
                        f"not a dict, so it has no key {parts[i + 1]!r}")
    node = child
  node[parts[-1]] = value


def describe() -> str:
  """The schema as text, one key a line: ``python -m mtl_jax.config_cli``."""
  lines = []
  for e in config_keys.SCHEMA:
    extra = (f" (keys: the options of the {' or '.join(s[1] for s in e.selectors)} it names)"
             if isinstance(e, Options) else "")
    lines.append(f"{e.path:30s} {_describe(e.path)}{extra}")
  return "\n".join(lines)


if __name__ == "__main__":
  print(describe())
