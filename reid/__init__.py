"""reid: person re-identification training on Market-1501.

The library behind ``train.py``: datasets, models and criteria come from
registries, the trainer only wires them together. Nothing here reads sys.argv.
"""

__version__ = "0.1.0"
