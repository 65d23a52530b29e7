"""``python -m ccdseg.cli``: the ``ccdseg`` command."""

import sys

from ccdseg.cli import main

sys.exit(main())
