"""`python -m convlab` runs the CLI (and makes `torchrun -m convlab` work)."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
