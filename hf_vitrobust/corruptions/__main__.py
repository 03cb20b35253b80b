"""`python -m hf_vitrobust.corruptions {preview,list}`."""

from hf_vitrobust.corruptions.preview import main

raise SystemExit(main(prog="python -m hf_vitrobust.corruptions"))
