"""String -> constructor registries, so configs name components and forks add one line."""

from typing import Any, Callable, Dict, Iterator


class Registry:
  """A named dict of constructors whose lookup error lists the valid names."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: Dict[str, Callable[..., Any]] = {}

  def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorator(fn):
      if name in self._entries:
        raise ValueError(f"{self.kind} {name!r} is already registered")
      self._entries[name] = fn
      return fn
    return decorator

  def get(self, name: str) -> Callable[..., Any]:
    try:
      return self._entries[name]
    except KeyError:
      raise KeyError(
          f"unknown {self.kind} {name!r}; valid names: {sorted(self._entries)}"
      ) from None

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(sorted(self._entries))
