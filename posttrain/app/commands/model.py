"""`posttrain model ...`: inspect configs and write random-init checkpoints.

>>> from posttrain.app.cli import main
>>> main(["model", "info", "--preset", "deepseek-v3", "--json"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json

from posttrain.errors import option


def _source(args: argparse.Namespace) -> str:
    return args.preset or args.config or args.model


def cmd_info(args: argparse.Namespace) -> int:
    """Print parameter counts and KV-cache sizes (meta device: no weights are read or allocated)."""
    from posttrain.model import load_config
    from posttrain.model.info import model_info

    with option("--preset" if args.preset else "--config" if args.config else "--model"):
        info = model_info(load_config(_source(args)))
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            human = f"{value / 1e9:.3f}B" if key.endswith("params") else f"{value / 1024:.1f} KiB"
            print(f"{key:30s} {value:>16,d}  ({human})")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    """Write a random-init checkpoint of a preset with the embedded tokenizer."""
    import torch

    from posttrain.model import load_model, save_model
    from posttrain.tokenizer import build_tokenizer

    torch.manual_seed(args.seed)
    out = save_model(load_model(args.preset), build_tokenizer(), args.output)
    print(f"wrote {args.preset} checkpoint to {out}")
    return 0


def cmd_mtp_acceptance(args: argparse.Namespace) -> int:
    """Print how often the MTP module's drafts equal the main model's greedy tokens on the given text."""
    import torch

    from data_tools.loading import tokenized_rows
    from posttrain.model import load_model, load_tokenizer
    from posttrain.model.acceptance import acceptance_on_rows

    model = load_model(args.model).to(args.device).eval()
    tokenizer = load_tokenizer(args.model)
    rows = tokenized_rows(args.data, tokenizer, limit=args.limit, model=model, max_new_tokens=args.generate,
                          batch_size=args.batch_size)
    torch.manual_seed(0)
    result = acceptance_on_rows(model, rows, batch_size=args.batch_size, depths=args.depths,
                                pad_token_id=tokenizer.pad_token_id or 0)
    report = {"model": args.model, "data": args.data, "rows": len(rows), "generated": args.generate,
              **result.to_dict()}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"rows {len(rows)}, counted positions {result.counted}")
        print(f"acceptance (depth 1)      {result.acceptance:.4f}")
        for k, rate in enumerate(result.depth_acceptance[1:], start=2):
            print(f"acceptance (depth {k}, chained) {rate:.4f}")
        print(f"expected accepted / step  {result.expected_accepted:.4f}  (tokens per main step {result.tokens_per_step:.4f})")
        print(f"draft == text token       {result.text_match:.4f}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `model` group (`info`, `init`, `mtp-acceptance`; other subcommands may be added to `model_subparsers` later)."""
    from posttrain.model.presets import PRESETS

    group = subparsers.add_parser("model", help="Inspect, create and measure DeepSeek-V3-architecture checkpoints.")
    sub = group.add_subparsers(dest="model_command", metavar="{info,init,...}")
    sub.required = True

    info = sub.add_parser("info", help="Parameter counts and KV-cache bytes per token, computed on the meta device.")
    src = info.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", choices=sorted(PRESETS), help="a named configuration")
    src.add_argument("--config", help="path to a config.json of model_type deepseek_v3")
    src.add_argument("--model", help="checkpoint directory (only its config.json is read)")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(func=cmd_info)

    init = sub.add_parser("init", help="Write a random-init checkpoint (safetensors, config, tokenizer).")
    init.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="configuration (default: tiny)")
    init.add_argument("--output", required=True, help="checkpoint directory to create (written atomically)")
    init.add_argument("--seed", type=int, default=0, help="random seed of the initialization (default: 0)")
    init.set_defaults(func=cmd_init)

    acc = sub.add_parser(
        "mtp-acceptance",
        help="Rate at which the depth-1 MTP draft equals the main model's greedy next token (one teacher-forced "
             "forward, completion tokens only); expected accepted length for more depths. See docs/mtp.md.",
    )
    acc.add_argument("--model", required=True, help="checkpoint directory (or a preset name: random init)")
    acc.add_argument("--data", required=True,
                     help="rows: any dataset the mix builder reads (JSONL/Parquet/CSV with messages or "
                          "prompt/response, a datasets dir, a built mix) or builtin:<task>[:split]")
    acc.add_argument("--limit", type=int, default=None, help="use the first N rows (builtin: default 200)")
    acc.add_argument("--generate", type=int, default=0, metavar="N",
                     help="measure on the model's own greedy completions of the prompts (up to N new tokens) "
                          "instead of the given answers (default 0: the given text)")
    acc.add_argument("--depths", type=int, default=None, help="MTP depths to chain (default: all the model has)")
    acc.add_argument("--batch_size", type=int, default=16, help="rows per forward (default: 16)")
    acc.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    acc.add_argument("--json", action="store_true", help="print JSON instead of text")
    acc.set_defaults(func=cmd_mtp_acceptance)
