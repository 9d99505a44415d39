"""``python -m reference``: check that the reference environment imports NNCodec 2.1.3."""
import sys

from .runner import main

sys.exit(main())
