"""The composition root: the one place that knows every part and wires them together.

The core (``bookgen_events``: events, bus, consumer runtime, settings...) and the channels
(``consumers``, ``gateway``) never import this package; it imports them all, by name:
:mod:`.workers` lists every worker, :mod:`.runner` runs them in a process (event loop,
signals, the embedded server), :mod:`.cli` is the ``bookgen-events`` command, and
:mod:`.verify` and :mod:`.demo` are the newcomer's checks.
"""
