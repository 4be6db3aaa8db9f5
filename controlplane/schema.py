"""``python -m controlplane.schema [--check]``: regenerate the JSON Schema and CONFIG.md."""

from controlplane.config.schema import main

if __name__ == "__main__":
    raise SystemExit(main())
