"""The `posttrain` command's groups, one module each with `register(subparsers)` (see `posttrain.app.cli`)."""
