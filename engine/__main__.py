"""``python -m engine`` is the ``microstream`` command."""

from .cli import main

raise SystemExit(main())
