"""`python -m hf_vitrobust.corruptions`."""

from hf_vitrobust.corruptions import main

raise SystemExit(main())
