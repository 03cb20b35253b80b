"""`python -m hf_vitrobust.data`."""

from hf_vitrobust.data.cli import main

raise SystemExit(main())
