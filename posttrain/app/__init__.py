"""The application layer: the `posttrain` console script (`cli`, `commands/`) and the pipeline runner.

Imports point one way, and this package sits at the top with the recipes and benchmarks: it may import every
package (the foundation in `posttrain`, `rewards`, `data_tools`, `eval`); none of them imports it.
"""
