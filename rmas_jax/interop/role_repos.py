"""Role repositories as agents: a model directory that holds the release's full model and its inner links
(`adapter(task).pt`, `adapter.pt`) gives the agent both, its backbone and that inner link.

Which file: the release's rule (`innerlink_config.json`'s entry for the task, else `adapter(task).pt`, else
`adapter.pt`), with task `code` for code and `math` otherwise, and none for Mixture and Deliberation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax.numpy as jnp
from flax import nnx

from rmas_jax.interop.link_tensors import link_from_release
from rmas_jax.interop.pt_files import read_state_dict
from rmas_jax.interop.release_files import has_inner_links, release_system_of, release_task, resolve_inner_file


def adopt_role_repo_links(system, config, sources: Mapping[str, str]) -> dict[str, str]:
  """Loads, for each role whose model came from a role repository directory, that repository's inner link.

  Args:
    system: the freshly built system (its links are replaced in place).
    config: the run config (`task`, `links.form`).
    sources: role -> the directory or file its backbone was loaded from.

  Returns:
    Role -> the inner-link file loaded, for the roles that had one.

  Raises:
    ValueError: one line naming the file: links of another form in the config, a malformed file, a width that
      does not fit the agent.
  """
  repos = {r: s for r, s in sources.items() if isinstance(s, str) and os.path.isdir(s) and has_inner_links(s)}
  if not repos:
    return {}
  links = config.get("links") or {}
  if links.get("form", "official") != "official" or links.get("design", "res+2-layer") != "res+2-layer":
    role, repo = next(iter(repos.items()))
    raise ValueError(f"{repo}: a role repository with the release's inner links (official form), but config.links "
                     f"asks for form {links.get('form')!r}, design {links.get('design')!r} (role {role})")  # fmt: skip
  try:
    release = release_system_of(system.pattern)
  except ValueError:  # a pattern of one's own: the release's task rule still picks the file
    release = None
  task = release_task(release, config.task)
  loaded = {}
  for role, repo in repos.items():
    path = resolve_inner_file(repo, task)
    link = system.agents[role].inner
    width = int(link.pre_ln.weight[...].shape[0])
    values = link_from_release(read_state_dict(path), "inner", width, width,
                               f"the inner link of {role} (width {width})")  # fmt: skip
    state = nnx.state(link)
    nnx.replace_by_pure_dict(state, {m: {k: jnp.asarray(v) for k, v in p.items()} for m, p in values.items()})
    nnx.update(link, state)
    loaded[role] = path
  return loaded
