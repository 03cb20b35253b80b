"""Push a robust checkpoint and/or a folder of SAEs, with their model cards, to the Hub.

    python recipes/push.py --checkpoint outputs/finetune --repo_id you/vit-robust-blur
    python recipes/push.py --checkpoint outputs/finetune --results outputs/eval/results.json \
        --saes outputs/sae --repo_id you/vit-robust-blur          # SAEs go to you/vit-robust-blur-saes
    python recipes/push.py push.yaml --public true

The token comes from `hf auth login` or HF_TOKEN (never a flag, so it stays out of shell history
and process lists). Repos are private unless `--public true`. Each artifact set is one commit.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from hf_vitrobust.configs import parse_recipe  # noqa: E402
from hf_vitrobust.hub import PushError, push_artifacts  # noqa: E402


@dataclass
class PushArguments:
    checkpoint: str | None = field(
        default=None, metadata={"help": "Checkpoint folder (save_pretrained output) to push."}
    )
    saes: str | None = field(
        default=None, metadata={"help": "Folder with one sub-folder per SAE id (sae-lens layout)."}
    )
    repo_id: str | None = field(default=None, metadata={"help": "Hub repo id for the checkpoint."})
    sae_repo_id: str | None = field(
        default=None,
        metadata={"help": "Hub repo id for the SAEs (default: <repo_id>-saes, or repo_id alone)."},
    )
    results: str | None = field(
        default=None, metadata={"help": "results.json from recipes/evaluate.py, for the card."}
    )
    results_model: str | None = field(
        default=None,
        metadata={
            "help": "Which evaluated model of results.json the card is for (default: the "
            "checkpoint folder's)."
        },
    )
    figures: list[str] | None = field(
        default=None, metadata={"help": "PNG figures to copy into the checkpoint and its card."}
    )
    public: bool = field(
        default=False, metadata={"help": "Make new repos public (default private)."}
    )
    commit_message: str | None = field(default=None)
    card_only: bool = field(
        default=False, metadata={"help": "Only write the cards locally; push nothing."}
    )


def main(argv: list[str] | None = None) -> int:
    (args,) = parse_recipe((PushArguments,), argv)
    try:
        urls = push_artifacts(
            checkpoint=args.checkpoint,
            saes=args.saes,
            repo_id=args.repo_id,
            sae_repo_id=args.sae_repo_id,
            private=not args.public,
            results=args.results,
            figures=args.figures,
            commit_message=args.commit_message,
            card_only=args.card_only,
            results_model=args.results_model,
        )
    except (PushError, ValueError) as error:
        print(f"push failed: {error}", file=sys.stderr)
        return 1
    print(json.dumps(urls or {"cards": "written"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
