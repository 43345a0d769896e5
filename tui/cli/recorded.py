"""A recording's model, found here: for ``replay --verify/--fork`` and for forking a replay in the dashboard
(``f``), whether the replay was opened by ``llmtui replay`` or from the sessions browser."""

from __future__ import annotations

import argparse
import time
from typing import Any

from .common import CliError, find_models, load_config_or_fail


def load_recorded_model(args: argparse.Namespace, session: Any, *, by_arg: bool = True) -> Any:
    """Load the recorded model with the recorded settings, for forking a replay (runs in a worker).
    ``by_arg``: ``--model`` names the recorded model's file (``llmtui replay``; the dashboard's --model is
    the model it runs, not the recording's)."""
    from ..engine import EngineSettings
    from ..engine.llama import LlamaEngine
    from ..engine.pool import Loaded

    try:
        entry = recorded_model(args, session, by_arg=by_arg)
    except CliError as exc:
        from ..engine.errors import EngineError

        raise EngineError(str(exc)) from None
    settings = EngineSettings.from_dict(session.header["engine"])
    t0 = time.perf_counter()
    engine = LlamaEngine(entry.path, settings)
    return Loaded(engine, True, (time.perf_counter() - t0) * 1000.0)


def recorded_model(args: argparse.Namespace, session: Any, *, by_arg: bool = True) -> Any:
    """The recorded model: by --model, else by fingerprint among the discovered models, else its path."""
    from ..engine.models import describe_file, resolve_model
    from ..record.writer import fingerprint

    config = load_config_or_fail(args)
    if by_arg and getattr(args, "model", None):
        return resolve_model(args.model, find_models(args, config))
    rec = session.header["model"]
    remote = session.header.get("remote")
    if isinstance(remote, dict):  # the server sampled it: there is no model file here to go on with
        raise CliError(f"this run was recorded from {remote.get('backend', 'a server')} at {remote.get('url', '?')}: "
                       "forking a remote run is not supported (its replay shows every step); pass --model to go on "
                       "with a local model")
    for e in find_models(args, config):
        if e.usable and e.size == rec.get("file_size"):
            try:
                if fingerprint(e.path) == rec.get("fingerprint"):
                    return e
            except OSError:
                continue
    entry = describe_file(rec["path"])
    if not entry.usable:
        raise CliError(f"the recorded model {rec['name']} is not available here ({rec['path']}: {entry.error}); "
                       "pass --model")
    return entry
