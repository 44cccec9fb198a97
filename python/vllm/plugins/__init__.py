"""General plugins: functions that packages register under the entry-point
group `vllm.general_plugins`, called once per process at start-up (e.g. to
register a model class with ModelRegistry).

VLLM_PLUGINS unset loads them all; a comma list loads only those named;
an empty value loads none. A plugin that fails is logged and skipped,
unless VLLM_PLUGINS_FAIL_ON_ERROR=1 makes it fatal."""
from __future__ import annotations

import logging
from importlib.metadata import entry_points

from vllm import envs

logger = logging.getLogger(__name__)

PLUGIN_GROUP = "vllm.general_plugins"
_loaded = False


class PluginError(RuntimeError):
    pass


def load_general_plugins() -> list[str]:
    """Run the selected plugins once in this process; returns their names."""
    global _loaded
    if _loaded:
        return []
    _loaded = True
    allowed = envs.VLLM_PLUGINS
    ran = []
    for entry in entry_points(group=PLUGIN_GROUP):
        if allowed is not None and entry.name not in allowed:
            logger.debug("plugin %s not in VLLM_PLUGINS: skipped", entry.name)
            continue
        try:
            entry.load()()
        except Exception as exc:
            if envs.VLLM_PLUGINS_FAIL_ON_ERROR:
                raise PluginError(f"plugin {entry.name!r} ({entry.value}) failed: {exc}") from exc
            logger.error("plugin %s (%s) failed and was skipped: %s", entry.name, entry.value,
                         exc)
            continue
        logger.info("loaded plugin %s", entry.name)
        ran.append(entry.name)
    return ran
