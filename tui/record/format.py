"""What a session recording is: token-level traces in JSON Lines (see the README's "Recording format").

Every line is one JSON object with a ``type``:

* ``header`` (first line): format and app version, model identity (name, size,
  SHA-256 of the first MiB, arch, quant), engine settings, preset with its full
  parameters, seed, prompt text and token ids, parent (for forks); an A/B run's
  ``ab`` (mode, labels, side B's preset and model);
* ``pieces``: the bytes (base64) of token ids that appear for the first time;
* ``step``: one generated token with its whole trace (:func:`~tui.record.steps.step_record`);
  from version 2, ``branch`` names its branch of the token tree (absent: branch 0);
* ``branch`` (version 2): a branch of the token tree leaves its ``parent`` at step ``fork``
  (``origin``: run, forced, resampled, inserted, A or B; a branch run adds its preset and seed);
* ``event``: something that happened (preset changed, re-sampled, forced, stopped, an A/B
  step's figures…) at a step index (and, from version 2, on a ``branch``);
* ``footer`` (last line when the session ended cleanly): totals.

:mod:`tui.record.writer` writes recordings, :mod:`tui.record.reader` reads them
back (with :mod:`tui.record.checks` checking every field); this module is what
both agree on.
"""

from __future__ import annotations

FORMAT = "llmtui-session"  # the header's "format": a file without it is not a recording
VERSION = 2  # the header's "version" the writer writes: 2 adds the token tree (branch lines) and A/B runs
READABLE = (1, 2)  # the versions the reader takes (a version 1 file reads and replays as it always did)
