"""What a session recording is: token-level traces in JSON Lines (see the README's "Recording format").

Every line is one JSON object with a ``type``:

* ``header`` (first line): format and app version, model identity (name, size,
  SHA-256 of the first MiB, arch, quant), engine settings, preset with its full
  parameters, seed, prompt text and token ids, parent (for forks);
* ``pieces``: the bytes (base64) of token ids that appear for the first time;
* ``step``: one generated token with its whole trace (:func:`~tui.record.steps.step_record`);
* ``event``: something that happened (preset changed, re-sampled, model
  switched, stopped…) at a step index;
* ``footer`` (last line when the session ended cleanly): totals.

:mod:`tui.record.writer` writes recordings, :mod:`tui.record.reader` reads them
back (with :mod:`tui.record.checks` checking every field); this module is what
both agree on.
"""

from __future__ import annotations

FORMAT = "llmtui-session"  # the header's "format": a file without it is not a recording
VERSION = 1  # the header's "version": the reader refuses any other
