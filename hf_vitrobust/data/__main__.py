"""`python -m hf_vitrobust.data`."""

from hf_vitrobust.data import main

raise SystemExit(main())
