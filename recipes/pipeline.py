"""The main job: SFT -> R1-style distillation -> GRPO, with held-out evaluation after each stage.

    python recipes/pipeline.py --config recipes/configs/tiny/pipeline.yaml [--from STAGE]

Finished stages are skipped on a rerun; `--from STAGE` reruns that stage and every later one. The output dir ends
with `results.md` (stage x benchmark table) and `stages.png`.
"""

from __future__ import annotations

import argparse

from posttrain.app.pipeline import load_pipeline_config, run_pipeline
from posttrain.errors import exit_on_user_error, option


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="Pipeline YAML (stages, output_dir, eval).")
    parser.add_argument("--from", dest="from_stage", default=None, help="Rerun this stage and all later ones.")
    parser.add_argument("--output_dir", default=None, help="Override the config's output_dir.")
    args = parser.parse_args()
    with exit_on_user_error("recipes/pipeline.py"):
        with option("--config"):
            config = load_pipeline_config(args.config, output_dir=args.output_dir)
        run_pipeline(config, from_stage=args.from_stage)


if __name__ == "__main__":
    main()
