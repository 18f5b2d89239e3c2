"""``python -m somad``: see :mod:`somad.cli`."""
import sys

from .cli import main

sys.exit(main())
