"""``python -m bookgen_events.app.cli``: the same as the ``bookgen-events`` script."""

from . import main

raise SystemExit(main())
