"""Characterise an OPU from a checkout: ``python hardware/characterise.py --backend … --out DIR``.

The same as ``optdfa characterise`` (the logic lives in :mod:`optdfa.characterise`); see
docs/lightonml.md for the procedure and for checking a real LightOn OPU.
"""

import sys

from optdfa.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["characterise", *sys.argv[1:]]))
