"""The prepared GPU check behind ``scripts/gpu_check.sh``: __main__.py runs the parts and keeps the
report, parts.py holds the eight parts."""
