import sys

from ccdseg.cli import main

sys.exit(main())
